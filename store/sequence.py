"""A sequence of a shard (views into its arrays) and a token's location: which shard, sequence and position."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .dtypes import to_float32

if TYPE_CHECKING:
    from .reader import Shard


@dataclass(frozen=True)
class TokenLocation:
    """Where a token row is: its shard, shard-local row, global sequence index (harvest order), position in that
    sequence, the sequence's length, and its source (dataset index into store.json's "data", row)."""

    shard: str
    row: int
    sequence: int
    position: int
    length: int
    source: tuple[int, int]

    def __str__(self) -> str:
        return (
            f"shard {self.shard} row {self.row}: sequence {self.sequence}, token {self.position} of "
            f"{self.length}, from dataset {self.source[0]} row {self.source[1]}"
        )


class Sequence:
    """One sequence (conversation or block). Arrays are views into the shard's memmaps."""

    def __init__(self, shard: Shard, local: int, index: int):
        if not 0 <= local < shard.num_sequences:
            raise IndexError(f"sequence {local} out of range for shard {shard.name}")
        self.shard, self.local, self.index = shard, local, index
        self.start, self.stop = int(shard.offsets[local]), int(shard.offsets[local + 1])

    def __repr__(self) -> str:
        return f"Sequence({self.index}, tokens={len(self)}, shard={self.shard.name})"

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def num_tokens(self) -> int:
        return self.stop - self.start

    @property
    def token_ids(self) -> np.ndarray:  # [T]
        return self.shard.token_ids[self.start : self.stop]

    @property
    def token_types(self) -> np.ndarray:  # [T]
        return self.shard.token_types[self.start : self.stop]

    @property
    def source(self) -> tuple[int, int]:
        ds, row = self.shard.sources[self.local]
        return int(ds), int(row)

    def _doc_slice(self) -> slice:
        starts = self.shard.doc_starts
        return slice(int(np.searchsorted(starts, self.start)), int(np.searchsorted(starts, self.stop)))

    @property
    def doc_starts(self) -> np.ndarray:  # [D_seq] sequence-local token positions where documents begin
        return np.asarray(self.shard.doc_starts[self._doc_slice()]) - self.start

    @property
    def doc_sources(self) -> np.ndarray:  # [D_seq, 2]
        return np.asarray(self.shard.doc_sources[self._doc_slice()])

    def raw_acts(self, layer: int) -> np.ndarray:  # [T, d_model] stored repr.; zero-copy if uncompressed
        return self.shard.raw_acts(layer)[self.start : self.stop]

    def acts(self, layer: int) -> np.ndarray:  # [T, d_model]; float32 copy for bfloat16 and fp8
        raw = self.raw_acts(layer)
        if self.shard.dtype in ("fp8_e4m3", "fp8_e5m2"):
            return to_float32(raw, self.shard.dtype, self.shard.scales(layer)[self.start : self.stop])
        return to_float32(raw, "bfloat16") if self.shard.dtype == "bfloat16" else raw
