"""The training data path: shuffled float32 batches of one layer's activations from a store.

Order of tokens (``ActivationReader``, shuffled mode)
  1. The selected tokens (token-type filter, minus held-out sequences; see ``train/selection.py``)
     are cut into chunks of ``chunk_tokens`` consecutive tokens within a shard. Each epoch visits
     the chunks in a seeded permutation, reading each one as a single contiguous span of the
     memmap (no random single-row reads across the store) in a background thread, which asks the
     kernel for the next few chunks' spans ahead (madvise WILLNEED: their disk reads overlap).
  2. A mixing buffer of ``buffer_tokens`` rows is filled from that stream. Then, per round: a
     seeded random half of the buffer's slots is emitted (in random order) and each emitted slot
     is refilled from the stream right after it is emitted (so refills only take part from the
     next round on). When the stream ends, the buffer is drained in random order. Each selected
     token is thus emitted exactly once per epoch; epochs are reshuffled with derived seeds and
     the buffer is empty at each epoch boundary.
  3. Batches of exactly ``batch_size`` rows are cut from the emitted token stream; a batch may
     straddle two epochs (the remainder is carried, nothing is dropped), except at the end of
     the last epoch when ``epochs`` is set (dropped unless ``drop_last=False``).

Statistics: the buffer holds tokens from about ``buffer_tokens / chunk_tokens`` chunks (plus a
geometric tail: a token survives k rounds with probability 2^-k), so a batch mixes ~B/C chunks.
Defaults B = 2^19, C = 4096: ~128 chunks (each a few conversations) per batch. Rows inside a batch
are in canonical-id (store) order: a batch is a random set, and a monotone read is the fastest.

Memory, uncompressed stores (``zero_copy``, the default there): the buffer is its slot table alone
(8 bytes a slot). The read-ahead thread pages each chunk's span of the memmap in; the rows stay in
the page cache (file-backed, reclaimable, shared) and are read in place when emitted, straight into
the batch: one copy per token, as a plain sequential read makes. If memory pressure evicts a page
before its rows are emitted, they are read again from disk then (slower, never wrong).
Compressed stores, stores on object storage (or ``zero_copy=False``): the buffer keeps a copy of the rows
in the stored representation, B * d_model * itemsize bytes (bf16: 0.6 GB at B = 2^19, d_model = 576; fp8: B * (d_model + 4)). A
remote store's rows come by range requests through its bounded local block cache (``fastsae.store``'s
blockcache.py), which the read-ahead fills ahead and later epochs reuse; nothing is downloaded up front.

Where rows come from is the row-source interface of ``fastsae.store.rows`` (one per shard: the local memmap
or the remote/compressed reads); this module and ``train/mixing.py`` only decide which rows, in which order.
Either way batches are decoded to float32 as they are emitted (on the GPU when ``device`` is CUDA:
the stored dtype is uploaded from pinned memory; an fp8 store's rows travel packed with their per-token scales,
d_model codes + 4 bytes, in the buffer, the batch and the upload, and are decoded only there); gathers (token-type filters) and compressed
stores cost (prefetch + 2) chunks at most, and up to (prefetch + 2) batches are made ahead.
Batches under 4096 rows are cut from one gather of the round's next 4096 rows (one more block of
4096 stored rows: 4.7 MB at d_model 576 in bf16). Index metadata: 8 bytes per selected token.

Threads: a chunk thread reads ahead (page faults, gathers, decompression) and a batch thread
runs the mixing and the float32 decode (``train/mixing.py``), ``prefetch`` items ahead each; both
release the GIL in numpy, so the training loop only takes ready batches (and uploads them).

Resume: ``state_dict()`` holds the position (epoch, round, slots still to emit this round,
tokens consumed from the epoch's chunk stream) and the canonical id of the token in each buffer
slot (8 bytes per slot instead of 4 * d_model). ``load_state_dict()`` re-reads exactly those rows
(grouped by shard, sorted; nothing to read with zero_copy) and restarts the chunk stream at the saved position; all later random
draws are derived from (seed, epoch, round), so a resumed reader emits bit-identical batches.
The batch thread runs ahead, so each batch comes with a snapshot of the state right after it
(its scalars and the slot-id changes that batch made: ~16 bytes per emitted token, not a copy of
the slot table); the reader replays them into a ``Position`` mirror, ``state_dict()`` returns the
state of the last batch handed out and ``close()`` rewinds to it (lazily, when iteration restarts).
"""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np
import torch

from fastsae.store import TokenType, open_store
from fastsae.store.dtypes import widen
from fastsae.train.mixing import Mixer
from fastsae.train.position import Position
from fastsae.train.prefetch import Prefetcher
from fastsae.train.selection import (
    EmptySelectionError,
    LayerNotFoundError,
    ReaderError,
    TokenSelection,
    TokenTypeSpecError,
    format_token_types,
    parse_token_types,
)

__all__ = [
    "ActivationReader",
    "EmptySelectionError",
    "LayerNotFoundError",
    "ReaderError",
    "ResumeMismatchError",
    "TokenTypeSpecError",
    "parse_token_types",
    "DEFAULT_BUFFER_TOKENS",
    "DEFAULT_CHUNK_TOKENS",
]

DEFAULT_BUFFER_TOKENS = 2**19
DEFAULT_CHUNK_TOKENS = 4096
STATE_VERSION = 1


class ResumeMismatchError(ReaderError):
    """A reader state was saved for another store or another reader configuration."""


class ActivationReader:
    """Iterator of float32 ``[batch_size, d_model]`` batches of ``layer`` from a store (see module doc);
    ``decode=False``: batches in the store's dtype (bfloat16, float16 or float32), as stored, not widened; an fp8
    store's as packed rows, uint8 [batch_size, d_model + 4] (``store.dtypes.unpack_fp8`` decodes them).
    ``zero_copy``: None (auto) reads the rows in place from an uncompressed store's memmaps, True insists on it
    (a compressed store is then an error), False copies them into the mixing buffer (see the module doc).
    ``part=(r, w)``: each batch is rows [r * batch_size / w, (r + 1) * batch_size / w) of the batch of batch_size
    (data-parallel rank r of w): only those rows are gathered, decoded and uploaded; the mixing, positions and
    ``state_dict()`` are the whole batch's, the same on every part (a checkpoint resumes with any world size).

    ``iter(reader)`` is the reader itself: iteration continues where it stopped, and
    ``state_dict()`` taken between two ``next()`` calls resumes exactly there. Call ``close()``
    (or use ``with``) to stop the background threads when stopping early.
    """

    def __init__(
        self,
        store,
        *,
        layer: int,
        batch_size: int,
        token_types: frozenset[TokenType] | str | None = None,
        buffer_tokens: int = DEFAULT_BUFFER_TOKENS,
        chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
        holdout: float = 0.0,
        holdout_sequences: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
        epochs: int | None = None,
        drop_last: bool = True,
        device: torch.device | str | None = None,
        prefetch: int = 2,
        decode: bool = True,
        zero_copy: bool | None = None,
        part: tuple[int, int] = (0, 1),
    ):
        if isinstance(store, (str, Path)):
            store = open_store(store)
        if isinstance(token_types, str):
            token_types = parse_token_types(token_types)
        if batch_size < 1:
            raise ReaderError(f"batch_size must be >= 1, got {batch_size}")
        if buffer_tokens < 2 and shuffle:
            raise ReaderError(f"buffer_tokens must be >= 2, got {buffer_tokens}")
        if epochs is not None and epochs < 1:
            raise ReaderError(f"epochs must be >= 1 or None, got {epochs}")
        if prefetch < 1:
            raise ReaderError(f"prefetch must be >= 1, got {prefetch}")
        index, parts = part
        if not 0 <= index < parts or batch_size % parts:
            raise ReaderError(f"part {index} of {parts}: needs 0 <= part < parts and batch_size {batch_size} % parts == 0")
        self.store = store
        self.selection = TokenSelection(
            store,
            layer=layer,
            token_types=frozenset(TokenType) if token_types is None else frozenset(token_types),
            holdout=holdout,
            holdout_sequences=holdout_sequences,
            seed=seed,
            chunk_tokens=chunk_tokens,
        )
        self.layer, self.batch_size, self.seed, self.shuffle = layer, batch_size, seed, shuffle
        self.decode = decode
        self.prefetch = prefetch
        self.d_model = self.selection.d_model
        self.tokens_per_epoch = self.selection.num_tokens
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        # the mixing buffer is never larger than an epoch
        self.buffer_tokens = min(buffer_tokens, self.tokens_per_epoch) if shuffle else 0
        if zero_copy and not self.selection.mapped:
            raise ReaderError(
                f"zero_copy needs an uncompressed store; {store.location} layer {layer} is compressed"
            )
        self.zero_copy = bool(shuffle and self.selection.mapped and zero_copy is not False)
        self._mixer = Mixer(
            self.selection,
            batch_size=batch_size,
            buffer_tokens=self.buffer_tokens,
            shuffle=shuffle,
            seed=seed,
            epochs=epochs,
            drop_last=drop_last,
            stored=not decode,
            pin=self.device.type == "cuda",
            prefetch=prefetch,
            mapped=self.zero_copy,
            part=part,
        )
        self._position = Position(self._mixer.state_dict())  # right after the last batch handed out
        self._restore = False  # the mixer ran ahead of _position (batch thread stopped): rewind first
        self._batches: Prefetcher | None = None
        self._finalizer = weakref.finalize(self, _close, [None])

    # -- public properties -------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        """The epoch the next emitted token belongs to."""
        return int(self._position.scalars["epoch"])

    @property
    def tokens_emitted(self) -> int:
        return int(self._position.scalars["tokens_emitted"])

    @property
    def holdout_sequences(self) -> np.ndarray:
        """Sorted global indices of the held-out sequences (never emitted by the iterator)."""
        return self.selection.holdout

    @property
    def buffer_bytes(self) -> int:
        """RAM of the mixing buffer's copy of the rows (stored dtype; 0 with zero_copy, whose buffer is its slot
        table, 8 bytes a slot); add (prefetch + 2) batches and chunks at most."""
        buffer = self._mixer._buffer
        return 0 if buffer is None else buffer.nbytes

    def iter_holdout(self, *, max_sequences: int | None = None, max_tokens: int | None = None, device=None):
        """Held-out sequences one by one (see ``train.holdout.iter_holdout``)."""
        from fastsae.train.holdout import iter_holdout

        return iter_holdout(self, max_sequences=max_sequences, max_tokens=max_tokens, device=device)

    # -- iteration ---------------------------------------------------------------------------------
    def __iter__(self) -> ActivationReader:
        return self

    def __next__(self) -> torch.Tensor:
        if self._batches is None:
            if self._position.scalars["finished"] and not self._position.remaining:
                raise StopIteration
            if self._restore:
                self._mixer.load_state_dict(self._position.state_dict())
                self._restore = False
            self._batches = Prefetcher(self._mixer.batches, depth=self.prefetch, name="fastsae-mixer")
            self._finalizer.detach()
            self._finalizer = weakref.finalize(self, _close, [self._batches])
        item = self._batches.get()
        if item is None:  # the last epoch is over (the thread has ended)
            self._batches = None
            self._position.finish()
            raise StopIteration
        batch, snap = item
        self._position.advance(snap)
        if self.device.type != "cpu":
            # stored dtype: half the bytes of fp32 for bf16, a quarter (+ 4 a row) for packed fp8
            batch = batch.to(self.device, non_blocking=True)
        elif self.decode:
            return batch  # float32 already (decoded in the batch thread)
        if self.decode:  # on the device: bf16 widened, packed fp8 decoded with their scales
            return widen(batch, self.store.dtype)
        return batch.view(torch.bfloat16) if batch.dtype == torch.int16 else batch

    def close(self) -> None:
        """Stop the background threads. The position is kept: iterating again continues from it."""
        if self._batches is not None:
            self._batches.close()
            self._batches = None
            self._restore = True

    def __enter__(self) -> ActivationReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- resume ------------------------------------------------------------------------------------
    def _config(self) -> dict:
        return {
            "store_fingerprint": str(self.store.fingerprint),
            "layer": self.layer,
            "token_types": format_token_types(self.selection.token_types),
            "holdout": len(self.selection.holdout),
            "seed": self.seed,
            "shuffle": self.shuffle,
            "buffer_tokens": self.buffer_tokens,
            "chunk_tokens": self.selection.chunk_tokens,
            "tokens_per_epoch": self.tokens_per_epoch,
        }

    def state_dict(self) -> dict:
        """Position right after the last batch returned (torch.save-able; ~8 bytes per buffer slot)."""
        return {"version": STATE_VERSION, "config": self._config(), **self._position.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where ``state`` was taken (same store and configuration; any batch size)."""
        if state.get("version") != STATE_VERSION:
            raise ResumeMismatchError(f"reader state version {state.get('version')} != {STATE_VERSION}")
        mine, theirs = self._config(), state["config"]
        diff = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        if diff:
            raise ResumeMismatchError(
                "reader state does not match this reader: "
                + ", ".join(f"{k}: saved {theirs.get(k)!r} vs {mine.get(k)!r}" for k in diff)
            )
        self.close()
        self._position = Position({k: v for k, v in state.items() if k not in ("version", "config")})
        self._restore = True


def _close(holder: list) -> None:
    if holder and holder[0] is not None:
        holder[0].close(timeout=0.5)
