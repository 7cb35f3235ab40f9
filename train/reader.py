"""The training data path: shuffled float32 batches of one layer's activations from a store.

Order of tokens (``ActivationReader``, shuffled mode)
  1. The selected tokens (token-type filter, minus held-out sequences; see ``train/selection.py``)
     are cut into chunks of ``chunk_tokens`` consecutive tokens within a shard. Each epoch visits
     the chunks in a seeded permutation, reading each one as a single contiguous span of the
     memmap (no random single-row reads across the store) in a background thread.
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
are in buffer-slot order (a batch is a random set; a monotone gather is faster).

Memory: the buffer keeps the stored representation, B * d_model * itemsize bytes (bf16: 0.6 GB
at B = 2^19, d_model = 576; fp32 stores: twice that); batches are decoded to float32 as they are
emitted (on the GPU when ``device`` is CUDA: the stored dtype is uploaded from pinned memory).
Chunks of uncompressed stores are zero-copy views of the memmap, paged in by the read-ahead
thread; gathers (token-type filters) and compressed stores cost (prefetch + 2) chunks at most.
Index metadata: 8 bytes per selected token.

Resume: ``state_dict()`` holds the position (epoch, round, slots still to emit this round,
tokens consumed from the epoch's chunk stream) and the canonical id of the token in each buffer
slot (8 bytes per slot instead of 4 * d_model). ``load_state_dict()`` re-reads exactly those rows
(grouped by shard, sorted) and restarts the chunk stream at the saved position; all later random
draws are derived from (seed, epoch, round), so a resumed reader emits bit-identical batches.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from store import TokenType, open_store
from train.prefetch import Prefetcher
from train.selection import (
    STORED_NUMPY,
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
ROUND_STREAM = 0x5EED


class ResumeMismatchError(ReaderError):
    """A reader state was saved for another store or another reader configuration."""


class ActivationReader:
    """Iterator of float32 ``[batch_size, d_model]`` batches of ``layer`` from a store (see module doc).

    ``iter(reader)`` is the reader itself: iteration continues where it stopped, and
    ``state_dict()`` taken between two ``next()`` calls resumes exactly there. Call ``close()``
    (or use ``with``) to stop the read-ahead thread when stopping early.
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
        self.epochs, self.drop_last, self.prefetch = epochs, drop_last, prefetch
        self.d_model = self.selection.d_model
        self.tokens_per_epoch = self.selection.num_tokens
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._pin = self.device.type == "cuda"
        # Mixing buffer, never larger than an epoch. Slot ids: canonical token id per slot, -1 = empty.
        self.buffer_tokens = min(buffer_tokens, self.tokens_per_epoch) if shuffle else 0
        # the buffer keeps the stored representation (bf16 bits: half the RAM of fp32); batches are decoded
        self._np_dtype = STORED_NUMPY[self.selection.dtype]
        self._buffer = np.empty((self.buffer_tokens, self.d_model), self._np_dtype)  # [B, d_in]
        self._slot_ids = np.full(self.buffer_tokens, -1, np.int64)  # [B]
        self._epoch = 0
        self._round = 0  # rounds started in this epoch; 0 = the buffer still has to be filled
        self._pending = np.zeros(0, np.int64)  # slots (or, sequential: nothing) still to emit this round
        self._pos = 0  # next index into _pending
        self._cursor = 0  # tokens of this epoch's chunk stream consumed
        self._exhausted = False  # this epoch's chunk stream has ended
        self._finished = False
        self.tokens_emitted = 0
        self._piece: tuple[np.ndarray, np.ndarray] | None = None  # (ids [n], stored rows [n, d_in]) in use
        self._piece_pos = 0
        self._prefetcher: Prefetcher | None = None
        self._finalizer = weakref.finalize(self, _close_prefetcher, [None])

    # -- public properties -------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        """The epoch the next emitted token belongs to."""
        return self._epoch

    @property
    def holdout_sequences(self) -> np.ndarray:
        """Sorted global indices of the held-out sequences (never emitted by the iterator)."""
        return self.selection.holdout

    @property
    def buffer_bytes(self) -> int:
        """RAM of the mixing buffer (stored dtype); the reader's peak adds (prefetch + 2) chunks at most."""
        return self._buffer.nbytes

    def iter_holdout(self, *, max_sequences: int | None = None, max_tokens: int | None = None, device=None):
        """Held-out sequences one by one (see ``train.holdout.iter_holdout``)."""
        from train.holdout import iter_holdout

        return iter_holdout(self, max_sequences=max_sequences, max_tokens=max_tokens, device=device)

    # -- the chunk stream --------------------------------------------------------------------------
    def _produce(self, epoch: int, cursor: int):
        """Factory for the prefetch thread: pieces (ids, acts) from (epoch, cursor) on, and a
        ``("end", epoch)`` marker after each epoch. Holds no reference to the reader."""
        sel, shuffle, last = self.selection, self.shuffle, self.epochs

        def produce():
            e, skip_tokens = epoch, cursor
            while last is None or e < last:
                order = sel.chunk_order(e, shuffle=shuffle)
                sizes = (sel.chunk_stop - sel.chunk_start)[order]
                ends = np.cumsum(sizes)
                k = int(np.searchsorted(ends, skip_tokens, side="right"))
                skip = skip_tokens - (int(ends[k - 1]) if k else 0)
                for i in range(k, len(order)):
                    yield sel.read_chunk(int(order[i]), skip)
                    skip = 0
                yield ("end", e)
                e, skip_tokens = e + 1, 0

        return produce

    def _next_piece(self) -> bool:
        """Load the next piece of this epoch's stream; False at the end of the epoch."""
        if self._prefetcher is None:
            self._prefetcher = Prefetcher(self._produce(self._epoch, self._cursor), depth=self.prefetch)
            self._finalizer.detach()
            self._finalizer = weakref.finalize(self, _close_prefetcher, [self._prefetcher])
        item = self._prefetcher.get()
        if item is None:
            raise RuntimeError("reader stream ended early")
        if isinstance(item[0], str):
            assert item[1] == self._epoch, (item, self._epoch)
            self._exhausted = True
            self._piece = None
            return False
        self._piece, self._piece_pos = item, 0
        return True

    def _take(self, n: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Up to n next tokens of this epoch's stream, as (ids, acts) pieces."""
        while n > 0 and not self._exhausted:
            if self._piece is None or self._piece_pos == len(self._piece[0]):
                if not self._next_piece():
                    return
            ids, acts = self._piece
            m = min(n, len(ids) - self._piece_pos)
            a = self._piece_pos
            self._piece_pos += m
            self._cursor += m
            n -= m
            yield ids[a : a + m], acts[a : a + m]

    # -- the mixing buffer -------------------------------------------------------------------------
    def _fill(self, slots: np.ndarray) -> None:
        """Refill ``slots`` (in order) from the stream; slots left over at its end become empty."""
        done = 0
        for ids, rows in self._take(len(slots)):
            part = slots[done : done + len(ids)]
            self._buffer[part] = rows
            self._slot_ids[part] = ids
            done += len(ids)
        self._slot_ids[slots[done:]] = -1

    def _start_round(self) -> bool:
        """Choose the slots to emit next; False when the epoch limit is reached."""
        while True:
            if self._finished:
                return False
            rng = np.random.default_rng([self.seed, ROUND_STREAM, self._epoch, self._round])
            if not self.shuffle:
                if not self._exhausted:
                    self._pending, self._pos = np.zeros(0, np.int64), 0  # sequential: stream straight out
                    self._round += 1
                    return True
            elif self._round == 0:
                self._fill(np.arange(self.buffer_tokens))
                self._round = 1
                continue
            elif not self._exhausted:
                self._pending = rng.permutation(self.buffer_tokens)[: max(1, self.buffer_tokens // 2)]
            else:
                self._pending = rng.permutation(np.flatnonzero(self._slot_ids >= 0))
            if len(self._pending):
                self._pos = 0
                self._round += 1
                return True
            # the epoch is over: everything emitted, the buffer is empty
            self._epoch += 1
            self._round, self._cursor, self._exhausted = 0, 0, False
            if self.epochs is not None and self._epoch >= self.epochs:
                self._finished = True

    def _put(self, dst: np.ndarray | torch.Tensor, start: int, rows: np.ndarray) -> None:
        """Stored ``rows`` into dst[start:]: decoded into the float32 batch (CPU) or copied as stored
        into the pinned staging block (CUDA: uploaded and decoded on the device)."""
        if isinstance(dst, torch.Tensor):
            self.selection.decode(rows, dst[start : start + len(rows)])
        else:
            dst[start : start + len(rows)] = rows

    def _emit(self, dst: np.ndarray | torch.Tensor, start: int) -> int:
        """Write up to len(dst) - start rows of the current round into dst; returns how many."""
        if not self.shuffle:
            done = start
            for _, rows in self._take(len(dst) - start):
                self._put(dst, done, rows)
                done += len(rows)
            return done - start
        n = min(len(dst) - start, len(self._pending) - self._pos)
        # sorted within the batch: a monotone gather/scatter is faster, and a batch is a set anyway
        slots = np.sort(self._pending[self._pos : self._pos + n])
        self._put(dst, start, self._buffer[slots])
        self._pos += n
        if self._exhausted:
            self._slot_ids[slots] = -1
        else:
            self._fill(slots)
        return n

    def __iter__(self) -> ActivationReader:
        return self

    def __next__(self) -> torch.Tensor:
        shape = (self.batch_size, self.d_model)
        if self._pin:  # stored dtype into a fresh pinned block (torch's caching host allocator recycles it)
            tdtype = {np.uint16: torch.int16, np.float16: torch.float16, np.float32: torch.float32}[
                self._np_dtype
            ]
            pinned = torch.empty(shape, dtype=tdtype, pin_memory=True)
            dst = pinned.numpy().view(self._np_dtype)
        else:
            dst = torch.empty(shape, dtype=torch.float32)  # [batch_size, d_in]
        filled = 0
        while filled < self.batch_size and not self._finished:
            if (self.shuffle and self._pos >= len(self._pending)) or (not self.shuffle and self._exhausted):
                if not self._start_round():
                    break
            filled += self._emit(dst, filled)
        if filled < self.batch_size:
            self.close()
            if filled == 0 or self.drop_last:
                raise StopIteration
        self.tokens_emitted += filled
        if not self._pin:
            return dst[:filled]
        x = pinned[:filled].to(self.device, non_blocking=True)  # half the bytes of fp32 for bf16
        return (x.view(torch.bfloat16) if self.selection.dtype == "bfloat16" else x).float()

    def close(self) -> None:
        """Stop the read-ahead thread. The reader's position is kept: iterating again restarts it."""
        if self._prefetcher is not None:
            self._prefetcher.close()
            self._prefetcher = None
            self._piece = None  # its unconsumed rest is read again from _cursor on restart

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
        """Position of the reader between two batches (torch.save-able; ~8 bytes per buffer slot)."""
        return {
            "version": STATE_VERSION,
            "config": self._config(),
            "epoch": self._epoch,
            "round": self._round,
            "pending": torch.from_numpy(self._pending[self._pos :].copy()),
            "cursor": self._cursor,
            "exhausted": self._exhausted,
            "finished": self._finished,
            "tokens_emitted": self.tokens_emitted,
            "slot_ids": torch.from_numpy(self._slot_ids.copy()),
        }

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
        self._epoch, self._round = int(state["epoch"]), int(state["round"])
        self._pending, self._pos = state["pending"].numpy().astype(np.int64), 0
        self._cursor, self._exhausted = int(state["cursor"]), bool(state["exhausted"])
        self._finished, self.tokens_emitted = bool(state["finished"]), int(state["tokens_emitted"])
        self._slot_ids = state["slot_ids"].numpy().astype(np.int64)
        full = np.flatnonzero(self._slot_ids >= 0)
        self.selection.read_ids(self._slot_ids[full], self._buffer, full)


def _close_prefetcher(holder: list) -> None:
    if holder and holder[0] is not None:
        holder[0].close(timeout=0.5)
