"""Token batches over chosen store sequences: activations as float32 (the SAE's input, as train reads them),
with each token's sequence index, position, id and type. Sequences are concatenated across batches; a
long one is split between batches. Memory: one batch of rows, whatever the number of sequences.

Rows of a memmapped array are read with read(2) into fresh buffers rather than through the memmap: the
pages a memmap touches stay mapped, in the process's RSS, so RSS would grow with every token read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from fastsae.store import StoreCorruptError
from fastsae.store.dtypes import is_fp8, to_float32


class RowReader:
    """Rows [a, b) of a shard array (np.memmap: read(2) at its offset; anything else: indexing)."""

    def __init__(self):
        self.files: dict[str, object] = {}

    def read(self, arr, a: int, b: int) -> np.ndarray:
        if not (isinstance(arr, np.memmap) and arr.filename):
            return np.asarray(arr[a:b])
        out = np.empty((b - a, *arr.shape[1:]), arr.dtype)
        fh = self.files.get(arr.filename)
        if fh is None:
            fh = self.files[arr.filename] = open(arr.filename, "rb", buffering=0)
        row = out.itemsize * int(np.prod(arr.shape[1:], dtype=np.int64))
        fh.seek(arr.offset + a * row)
        view, got = memoryview(out).cast("B"), 0
        while got < out.nbytes:  # a raw read may return less than asked
            n = fh.readinto(view[got:])
            if not n:
                raise StoreCorruptError(f"{arr.filename}: ends inside rows {a}..{b}")
            got += n
        return out

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()
        self.files.clear()


def row_scales(shard, layer: int, a: int, b: int) -> np.ndarray | None:
    """The per-token scales of rows a:b of an fp8 layer; None for other dtypes."""
    return None if not is_fp8(shard.dtype) else np.asarray(shard.scales(layer)[a:b])


def to_float32_into(raw: np.ndarray, dtype: str, out: np.ndarray, scale: np.ndarray | None = None) -> None:
    """Stored rows -> float32 `out`, exact (bf16 bits as uint16: float32 bits = bits << 16; fp8 with the
    rows' per-token `scale`)."""
    if is_fp8(dtype):
        out[...] = to_float32(raw, dtype, scale)
    elif dtype == "bfloat16":
        np.left_shift(raw, 16, out=out.view(np.uint32), dtype=np.uint32)
    else:
        out[...] = raw


@dataclass
class TokenBatch:
    x: torch.Tensor  # [n, d_model] float32 on the device
    seq: np.ndarray  # [n] int64 store sequence index
    pos: np.ndarray  # [n] int64 position in the sequence
    ids: np.ndarray  # [n] int64 token ids
    types: np.ndarray  # [n] int64 token types

    def __len__(self) -> int:
        return len(self.seq)


def segments(store, seqs: np.ndarray, batch_tokens: int) -> Iterator[list[tuple]]:
    """Lists of (shard, first row, stop row, sequence, first position) holding <= batch_tokens rows each."""
    batch, room = [], batch_tokens
    for s in seqs:
        sq = store.sequence(int(s))
        a, pos = sq.start, 0
        while a < sq.stop:
            take = min(room, sq.stop - a)
            batch.append((sq.shard, a, a + take, int(s), pos))
            a, pos, room = a + take, pos + take, room - take
            if room == 0:
                yield batch
                batch, room = [], batch_tokens
    if batch:
        yield batch


def read_batches(store, layer: int, seqs: np.ndarray, *, batch_tokens: int, device) -> Iterator[TokenBatch]:
    """TokenBatches over `seqs` (store sequence indices, in this order)."""
    pinned, reader = device.type == "cuda", RowReader()
    try:
        yield from _batches(store, layer, seqs, batch_tokens, device, pinned, reader)
    finally:
        reader.close()


def _batches(store, layer, seqs, batch_tokens, device, pinned, reader) -> Iterator[TokenBatch]:
    for segs in segments(store, seqs, batch_tokens):
        n = sum(b - a for _, a, b, _, _ in segs)
        buf = np.empty((n, store.d_model), np.float32)  # a fresh one: the consumer may keep x
        seq, pos = np.empty(n, np.int64), np.empty(n, np.int64)
        ids, types = np.empty(n, np.int64), np.empty(n, np.int64)
        r = 0
        for shard, a, b, s, p in segs:
            to_float32_into(
                reader.read(shard.raw_acts(layer), a, b),
                store.dtype,
                buf[r : r + b - a],
                row_scales(shard, layer, a, b),
            )
            seq[r : r + b - a] = s
            pos[r : r + b - a] = np.arange(p, p + b - a)
            ids[r : r + b - a] = reader.read(shard.token_ids, a, b)
            types[r : r + b - a] = reader.read(shard.token_types, a, b)
            r += b - a
        x = torch.from_numpy(buf)
        x = x.pin_memory().to(device, non_blocking=True) if pinned else x
        yield TokenBatch(x=x, seq=seq, pos=pos, ids=ids, types=types)
