"""Sequences, length-bucketed batches, and block packing.

Conversation mode: every conversation is its own sequence. Batches group sequences of similar
length (sorted within a window) and RIGHT-pad them. With right padding, causal attention of a
real token only ever sees earlier real tokens and positions are 0..len-1, so the stored rows
equal a batch-1 forward without any attention mask (the pads' own outputs are dropped). This
keeps sdpa on its fused causal path, which packing with per-conversation block-diagonal masks
would lose (a materialised [B, 1, T, T] mask per batch). The price is padding: batches are
length-sorted and close once a row would be more than 12.5% padding; benchmarks/harvest.py
prints the measured waste.

Block mode (block-training baselines BT(F)/BT(P)): documents' token streams are concatenated
and cut into fixed `context_size` blocks (the last one may be shorter); each block records
where documents begin inside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np


@dataclass
class SeqItem:
    """One stored sequence (a conversation, or a block in block mode)."""

    index: int  # global index in harvest order
    token_ids: np.ndarray  # int32 [T]
    token_types: np.ndarray  # uint8 [T]
    source: tuple[int, int]  # (dataset, row) of the conversation / of the block's first document
    doc_starts: list[int] = field(
        default_factory=lambda: [0]
    )  # sequence-local positions where documents begin
    doc_sources: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.doc_sources:
            self.doc_sources = [self.source] * len(self.doc_starts)

    def __len__(self) -> int:
        return int(self.token_ids.shape[0])


def plan_batches(lengths: list[int], batch_tokens: int, *, max_padding: float = 0.125) -> list[list[int]]:
    """Group positions of `lengths` into batches whose rows x max length stay within `batch_tokens`.

    Longest first; a batch also closes when the next sequence is shorter than (1 - max_padding) x
    the batch's width, so padding stays below `max_padding` of each row. A sequence longer than the
    budget is a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for i in order:
        n = lengths[i]
        if current and (width * (len(current) + 1) > batch_tokens or n < (1 - max_padding) * width):
            batches.append(current)
            current = []
        if not current:
            width = n
        current.append(i)
    if current:
        batches.append(current)
    return batches


def pad_right(seqs: list[np.ndarray], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """-> input_ids int64 [B, T_max] right-padded with `pad_id`, lengths int64 [B]."""
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    ids = np.full((len(seqs), int(lengths.max())), pad_id, dtype=np.int64)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = s
    return ids, lengths


@dataclass
class _Doc:
    ids: np.ndarray
    types: np.ndarray
    source: tuple[int, int]


def pack_blocks(
    docs: Iterable[tuple[np.ndarray, np.ndarray, tuple[int, int]]], *, context_size: int, first_index: int = 0
) -> Iterator[SeqItem]:
    """Concatenate (token_ids, token_types, source) documents and cut blocks of `context_size` tokens.

    A block's `source` is the document its first token belongs to; `doc_starts` lists the
    positions where a document begins inside the block (a block that starts inside a document
    continued from the previous block has no start at 0).
    """
    ids_parts: list[np.ndarray] = []
    type_parts: list[np.ndarray] = []
    starts: list[int] = []
    start_sources: list[tuple[int, int]] = []
    fill = 0
    head_source: tuple[int, int] | None = None  # document of the block's first token
    index = first_index

    def emit() -> SeqItem:
        nonlocal ids_parts, type_parts, starts, start_sources, fill, index
        item = SeqItem(
            index=index,
            token_ids=np.concatenate(ids_parts).astype(np.int32, copy=False),
            token_types=np.concatenate(type_parts).astype(np.uint8, copy=False),
            source=head_source,
            doc_starts=list(starts),
            doc_sources=list(start_sources) if starts else [],
        )
        if not starts:  # SeqItem fills doc_sources from doc_starts; a block without starts has neither
            item.doc_sources = []
        ids_parts, type_parts, starts, start_sources, fill = [], [], [], [], 0
        index += 1
        return item

    for ids, types, source in docs:
        pos = 0
        n = len(ids)
        if n == 0:
            continue
        starts.append(fill)
        start_sources.append(source)
        while pos < n:
            if fill == 0:
                head_source = source
            take = min(context_size - fill, n - pos)
            ids_parts.append(ids[pos : pos + take])
            type_parts.append(types[pos : pos + take])
            fill += take
            pos += take
            if fill == context_size:
                yield emit()
    if fill:
        yield emit()
