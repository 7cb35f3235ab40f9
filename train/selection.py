"""Which tokens of a store the reader trains on, and how they are cut into read chunks.

The *selection* is every token of one layer whose type is in a token-type filter and whose
sequence is not held out. Selected tokens get a canonical id: their rank in store order
(shards in harvest order, rows in shard order). Chunks are runs of at most ``chunk_tokens``
consecutive selected tokens inside one shard; they are the unit the reader reads (one
contiguous span of the shard's activation matrix) and shuffles (the chunk order is permuted
per epoch; the mixing buffer does the fine shuffle). Canonical ids are what the reader's
``state_dict`` stores, so a buffer can be re-read exactly on resume.

Memory: 8 bytes per selected token for the row index (activations cost ``2 * d_model``
bytes per token in bf16, so this is < 1% of the store for d_model >= 576).

The reads themselves go through each shard's row source (``fastsae.store.rows``: in place from a local memmap,
or range requests through the block cache of a store on object storage); this module only says which rows.
"""

from __future__ import annotations

import numpy as np
import torch

from fastsae.errors import FastSAEError
from fastsae.store import TokenType, token_types
from fastsae.store.dtypes import is_fp8, packed_width, unpack_fp8
from fastsae.store.split import holdout_indices
from fastsae.store.token_types import format_token_types

CHUNK_ORDER_STREAM = 0xC4
PAGE_BYTES = 4096
# numpy dtype of a stored row as the reader moves it (bf16 as its uint16 bits, fp8 as packed uint8 rows)
STORED_NUMPY = {"bfloat16": np.uint16, "float16": np.float16, "float32": np.float32, "fp8_e4m3": np.uint8,
                "fp8_e5m2": np.uint8}  # fmt: skip


class ReaderError(FastSAEError, ValueError):
    """Base class of the reader's own bad-input errors (also a ValueError)."""


class LayerNotFoundError(ReaderError):
    """The store has no activations for the requested layer."""


class EmptySelectionError(ReaderError):
    """The token-type filter and holdout leave no training tokens."""


class TokenTypeSpecError(ReaderError):
    """A ``--token-types`` spec names an unknown token type or selects nothing."""


def parse_token_types(spec: str) -> frozenset[TokenType]:
    """Parse a token-type filter such as ``"all"``, ``"-special"``, ``"assistant,user"`` (see
    ``fastsae.store.token_types.parse_token_types``); a bad spec is a TokenTypeSpecError."""
    try:
        return token_types.parse_token_types(spec, flag="--token-types")
    except ValueError as e:
        raise TokenTypeSpecError(str(e)) from None


def pick_holdout(
    num_sequences: int, seed: int, *, fraction: float = 0.0, count: int | None = None
) -> np.ndarray:
    """Sorted global indices of the held-out sequences: ``count`` of them, or ``round(fraction * S)``
    (at least 1 when ``fraction > 0`` and S >= 2); never all of them. A seeded random choice that
    depends only on (S, seed, fraction or count)."""
    if not 0.0 <= fraction < 1.0:
        raise ReaderError(f"holdout fraction must be in [0, 1), got {fraction}")
    if count is not None and count < 0:
        raise ReaderError(f"holdout sequence count must be >= 0, got {count}")
    return holdout_indices(num_sequences, seed, fraction=fraction, count=count)


class TokenSelection:
    """Selected rows per shard, canonical ids, chunks, and row reads for one layer of a store."""

    def __init__(
        self,
        store,
        *,
        layer: int,
        token_types: frozenset[TokenType],
        seed: int,
        chunk_tokens: int,
        holdout: float = 0.0,
        holdout_sequences: int | None = None,
    ):
        if layer not in store.layers:
            raise LayerNotFoundError(
                f"layer {layer} is not in the store at {store.location}; it has layers {list(store.layers)}"
            )
        if chunk_tokens < 1:
            raise ReaderError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
        self.store = store
        self.layer = layer
        self.dtype = store.dtype
        self.d_model = int(store.d_model)
        # columns of a stored row: d_model, or d_model codes + the 4 bytes of the row's scale (packed fp8)
        self.width = packed_width(self.dtype, self.d_model)
        self.token_types = frozenset(token_types)
        # [H] global sequence indices, sorted
        self.holdout = pick_holdout(int(store.num_sequences), seed, fraction=holdout, count=holdout_sequences)
        self.seed = seed
        self.chunk_tokens = chunk_tokens
        lut = np.zeros(256, bool)
        lut[[int(t) for t in self.token_types]] = True
        self.shard_first_sequence = []  # global index of each shard's first sequence (store order)
        self.rows: list[np.ndarray] = []  # per shard: selected local rows, sorted int64 [n_s]
        first = 0
        for shard in store.shards:
            mask = lut[np.asarray(shard.token_types)]
            offsets = np.asarray(shard.offsets, np.int64)
            lo, hi = np.searchsorted(self.holdout, [first, first + shard.num_sequences])
            for j in self.holdout[lo:hi] - first:
                mask[offsets[j] : offsets[j + 1]] = False
            self.rows.append(np.flatnonzero(mask).astype(np.int64))
            self.shard_first_sequence.append(first)
            first += shard.num_sequences
        counts = np.array([len(r) for r in self.rows], np.int64)
        self.shard_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # [n_shards + 1]
        self.num_tokens = int(self.shard_start[-1])
        if self.num_tokens == 0:
            raise EmptySelectionError(
                f"no training tokens in {store.location} layer {layer} with token types "
                f"{format_token_types(self.token_types)} and {len(self.holdout)} held-out sequences"
            )
        bounds = zip(self.shard_start[:-1], self.shard_start[1:], strict=True)
        starts = [np.arange(a, b, chunk_tokens) for a, b in bounds]
        per_shard = [len(s) for s in starts]
        # chunk k: canonical ids [chunk_start[k], chunk_stop[k]) of shard chunk_shard[k]
        self.chunk_start = np.concatenate(starts).astype(np.int64)  # [K]
        self.chunk_stop = np.minimum(
            self.chunk_start + chunk_tokens, np.repeat(self.shard_start[1:], per_shard)
        )
        self.chunk_shard = np.repeat(np.arange(len(self.rows)), per_shard)  # [K]
        # open (and check) every shard's array now: errors before training
        self.sources = [shard.row_source(layer) for shard in store.shards]

    @property
    def num_chunks(self) -> int:
        return len(self.chunk_start)

    def chunk_order(self, epoch: int, *, shuffle: bool) -> np.ndarray:
        """The order in which an epoch visits the chunks: a seeded permutation, or store order."""
        if not shuffle:
            return np.arange(self.num_chunks)
        return np.random.default_rng([self.seed, CHUNK_ORDER_STREAM, epoch]).permutation(self.num_chunks)

    def raw(self, shard: int):
        """The shard's stored activation matrix (np.memmap when uncompressed and local)."""
        return self.sources[shard].array

    def read_raw(self, shard: int, rows: np.ndarray) -> np.ndarray:
        """Stored representation [len(rows), width] (uint16 bits for bf16, packed rows for fp8) of sorted local ``rows``
        (consecutive rows of a memmap: a view with its pages faulted in; see ``fastsae.store.rows``)."""
        return self.sources[shard].read(rows)

    def decode(self, raw: np.ndarray, out: torch.Tensor) -> torch.Tensor:
        """Stored representation -> float32 ``out`` [n, d_model] (CPU), exact; numpy releases the GIL."""
        if is_fp8(self.dtype):
            unpack_fp8(raw, self.dtype, out=out.numpy())
        elif self.dtype == "bfloat16":  # bf16 bits as uint16: float32 bits = bits << 16
            np.left_shift(raw.view(np.uint16), 16, out=out.numpy().view(np.uint32), dtype=np.uint32)
        else:
            out.numpy()[...] = raw
        return out

    def read_rows(self, shard: int, rows: np.ndarray) -> torch.Tensor:
        """float32 [len(rows), d_model] of sorted local ``rows`` (a fresh tensor)."""
        out = torch.empty((len(rows), self.d_model), dtype=torch.float32)
        return self.decode(self.read_raw(shard, rows), out)

    def read_chunk(self, chunk: int, skip: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(canonical ids [n], stored rows [n, width]) of a chunk, from its ``skip``-th token on."""
        s = int(self.chunk_shard[chunk])
        lo, hi = int(self.chunk_start[chunk]) + skip, int(self.chunk_stop[chunk])
        base = int(self.shard_start[s])
        return np.arange(lo, hi, dtype=np.int64), self.read_raw(s, self.rows[s][lo - base : hi - base])

    # -- rows read in place (uncompressed stores): the mixing buffer then holds canonical ids only ----------
    @property
    def mapped(self) -> bool:
        """Whether every shard's rows are readable in place (uncompressed local memmaps)."""
        return all(src.in_place for src in self.sources)

    def _chunk_rows(self, chunk: int, skip: int = 0) -> tuple[int, int, int, np.ndarray]:
        """(shard, first canonical id, stop, sorted local rows) of a chunk from its ``skip``-th token on."""
        s = int(self.chunk_shard[chunk])
        lo, hi = int(self.chunk_start[chunk]) + skip, int(self.chunk_stop[chunk])
        base = int(self.shard_start[s])
        return s, lo, hi, self.rows[s][lo - base : hi - base]

    def advise_chunk(self, chunk: int) -> None:
        """Start reading a chunk's span now (read-ahead: madvise WILLNEED on a memmap, block fetches on a remote
        store), so that reading it later waits for no I/O; the reader hints a few chunks ahead."""
        s, _lo, _hi, rows = self._chunk_rows(chunk)
        if len(rows):
            self.sources[s].advise(int(rows[0]), int(rows[-1]) + 1)

    def touch_chunk(self, chunk: int, skip: int = 0) -> tuple[np.ndarray, None]:
        """(canonical ids [n], None) of a chunk, from its ``skip``-th token on, after faulting the pages of its
        span of the memmap in (what read_chunk does, without handing rows out: they are read by gather_ids)."""
        s, lo, hi, rows = self._chunk_rows(chunk, skip)
        if len(rows):
            self.sources[s].touch(int(rows[0]), int(rows[-1]) + 1)
        return np.arange(lo, hi, dtype=np.int64), None

    def gather_ids(self, ids: np.ndarray, out: torch.Tensor) -> None:
        """Stored rows of sorted canonical ``ids`` into ``out`` [len(ids), width] (stored dtype; bf16 as int16),
        read in place from the memmaps: one monotone gather per shard the ids fall in."""
        bounds = np.searchsorted(ids, self.shard_start)  # [n_shards + 1]: where each shard's ids begin
        for s in np.flatnonzero(bounds[1:] > bounds[:-1]):
            a, b = int(bounds[s]), int(bounds[s + 1])
            self.sources[int(s)].gather(self.rows[s][ids[a:b] - self.shard_start[s]], out[a:b])

    def read_ids(self, ids: np.ndarray, out: np.ndarray, dest: np.ndarray) -> None:
        """Stored rows of canonical ``ids`` into rows ``dest`` of ``out`` (rebuilds a buffer on resume)."""
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        shard_of = np.searchsorted(self.shard_start, sorted_ids, side="right") - 1
        bounds = np.searchsorted(shard_of, np.arange(len(self.rows) + 1))
        for s in range(len(self.rows)):
            a, b = bounds[s], bounds[s + 1]
            if a < b:
                out[dest[order[a:b]]] = self.read_raw(s, self.rows[s][sorted_ids[a:b] - self.shard_start[s]])
