"""Token batches over chosen store sequences: activations as float32 (the SAE's input, as train reads them),
with each token's sequence index, position, id and type. Sequences are concatenated across batches; a
long one is split between batches. Memory: one batch of rows, whatever the number of sequences."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch


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
    pinned = device.type == "cuda"
    for segs in segments(store, seqs, batch_tokens):
        n = sum(b - a for _, a, b, _, _ in segs)
        buf = np.empty((n, store.d_model), np.float32)  # a fresh one: the consumer may keep x
        seq, pos = np.empty(n, np.int64), np.empty(n, np.int64)
        ids, types = np.empty(n, np.int64), np.empty(n, np.int64)
        r = 0
        for shard, a, b, s, p in segs:
            raw = shard.raw_acts(layer)[a:b]
            if store.dtype == "bfloat16":  # bf16 bits as uint16: float32 bits = bits << 16 (exact)
                np.left_shift(raw, 16, out=buf[r : r + b - a].view(np.uint32), dtype=np.uint32)
            else:
                buf[r : r + b - a] = raw
            seq[r : r + b - a] = s
            pos[r : r + b - a] = np.arange(p, p + b - a)
            ids[r : r + b - a] = shard.token_ids[a:b]
            types[r : r + b - a] = shard.token_types[a:b]
            r += b - a
        x = torch.from_numpy(buf)
        x = x.pin_memory().to(device, non_blocking=True) if pinned else x
        yield TokenBatch(x=x, seq=seq, pos=pos, ids=ids, types=types)
