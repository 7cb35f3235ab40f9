"""Held-out sequences for evaluation: whole sequences the reader never trains on.

Which sequences are held out depends only on (number of sequences in the store, holdout
fraction, seed): see ``train.selection.pick_holdout``. They are yielded in store order, one
sequence at a time with all its tokens (every token type; ``keep`` marks the tokens the
training filter selects), for per-sequence metrics.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class HeldOutSequence:
    index: int  # global sequence index (store order)
    acts: torch.Tensor  # [T, d_in] float32, on the requested device
    token_ids: np.ndarray  # [T] int32
    token_types: np.ndarray  # [T] uint8 (store.TokenType values)
    keep: np.ndarray  # [T] bool: token type is in the reader's token-type filter


def iter_holdout(
    reader, *, max_sequences: int | None = None, max_tokens: int | None = None, device=None
) -> Iterator[HeldOutSequence]:
    """Held-out sequences of ``reader`` in store order, at most ``max_sequences`` of them and
    ``max_tokens`` tokens in all (the sequence that would cross ``max_tokens`` is truncated and
    is the last one). Reads each sequence as one contiguous span of its shard."""
    sel = reader.selection
    device = torch.device(device) if device is not None else reader.device
    lut = np.zeros(256, bool)
    lut[[int(t) for t in sel.token_types]] = True
    firsts = np.asarray(sel.shard_first_sequence, np.int64)
    budget = max_tokens if max_tokens is not None else float("inf")
    for count, index in enumerate(sel.holdout):
        if (max_sequences is not None and count >= max_sequences) or budget <= 0:
            return
        s = int(np.searchsorted(firsts, index, side="right") - 1)
        shard = sel.store.shards[s]
        j = int(index - firsts[s])
        lo, hi = int(shard.offsets[j]), int(shard.offsets[j + 1])
        hi = int(min(hi, lo + budget))
        budget -= hi - lo
        if hi == lo:
            continue
        types = np.asarray(shard.token_types[lo:hi])
        acts = sel.read_rows(s, np.arange(lo, hi, dtype=np.int64))
        yield HeldOutSequence(
            index=int(index),
            acts=acts.to(device, non_blocking=device.type == "cuda"),
            token_ids=np.asarray(shard.token_ids[lo:hi]),
            token_types=types,
            keep=lut[types],
        )
