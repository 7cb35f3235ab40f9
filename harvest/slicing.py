"""Several writers, one store: which sequences each writer harvests, decided once.

The sequence index (tokenisation, filtering and dedup of the whole input: which conversation becomes which
sequence) is built once per harvest: under torchrun by rank 0, which sends every rank only its own slice
(scatter); with --num-writers (separate processes that share nothing but the store) by each writer, in one
pass. Slices are contiguous runs of the length-sorted windows a one-process harvest forms (harvest/runner.py),
balanced by tokens: each writer forwards exactly the batches the one-process harvest forwards, so the store
holds the same bytes in the same sequence order, however many writers wrote it and in whatever order they
finished. A writer whose share is less than one window harvests nothing (its record lists no shards).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastsae.harvest.batching import SeqItem
from fastsae.harvest.config import HarvestConfig, HarvestError


@dataclass
class Slice:
    """Writer `writer`'s sequences [start, end) of the whole stream, and the stream's skip log."""

    items: list[SeqItem]
    start: int
    end: int
    total: int  # sequences in the whole stream
    skip_log: object  # fastsae.chats.skips.SkipLog of the whole stream


class RankFailed(HarvestError):
    """Rank 0 could not build the sequence index: every other rank stops with its reason."""


def window_tokens(cfg: HarvestConfig, device) -> int:
    """A window closes once it holds this many tokens (or --sort-window sequences)."""
    return max(8 * cfg.batch_budget(device), cfg.max_tokens, 16384)


def closes_window(count: int, tokens: int, cfg: HarvestConfig, limit: int) -> bool:
    """The one rule for where a window ends (the runner's loop and the slicing both use it)."""
    return count >= cfg.sort_window or tokens >= limit


def slice_bounds(
    lengths: list[int], num_writers: int, cfg: HarvestConfig, limit: int
) -> list[tuple[int, int]]:
    """[start, end) per writer: contiguous runs of whole windows, each window to the writer whose share of
    the tokens holds the window's middle token."""
    bounds, count, tokens = [0], 0, 0
    for i, n in enumerate(lengths):
        count, tokens = count + 1, tokens + n
        if closes_window(count, tokens, cfg, limit):
            bounds.append(i + 1)
            count = tokens = 0
    if bounds[-1] != len(lengths):
        bounds.append(len(lengths))
    cum = [0]
    for n in lengths:
        cum.append(cum[-1] + n)
    total = max(1, cum[-1])
    owners = [
        min(num_writers - 1, (cum[a] + cum[b]) * num_writers // (2 * total))
        for a, b in zip(bounds, bounds[1:], strict=False)
    ]
    ends = [bounds[sum(1 for o in owners if o <= w)] for w in range(num_writers)]
    return [(ends[w - 1] if w else 0, ends[w]) for w in range(num_writers)]


def _build(cfg: HarvestConfig, tokenizer, specs: list[str], stream) -> tuple[list[SeqItem], object]:
    """The whole stream, materialised, and its skip log; input that yields nothing is its one error."""
    from fastsae.chats.skips import SkipLog, nothing_usable

    skip_log = SkipLog()
    items = list(stream(cfg, tokenizer, specs, skip_log))
    if not items:
        raise nothing_usable(specs, skip_log, text_mode=cfg.packing == "block")
    return items, skip_log


def own_slice(cfg: HarvestConfig, tokenizer, specs: list[str], limit: int, stream) -> Slice:
    """--num-writers without torchrun: this writer builds the index alone and keeps its slice."""
    items, skip_log = _build(cfg, tokenizer, specs, stream)
    start, end = slice_bounds([len(it) for it in items], cfg.num_writers, cfg, limit)[cfg.writer]
    return Slice(items[start:end], start, end, len(items), skip_log)


def shared_slice(cfg: HarvestConfig, tokenizer, specs: list[str], limit: int, stream, ranks) -> Slice:
    """Under torchrun: rank 0 builds the index and sends each rank its slice; an error there stops all."""
    from fastsae.errors import FastSAEError, one_line
    from fastsae.lm.distributed import scatter_objects

    payload = None
    if ranks.main:
        try:
            items, skip_log = _build(cfg, tokenizer, specs, stream)
        except FastSAEError as e:
            scatter_objects([f"rank 0: {one_line(e)}"] * ranks.world_size, ranks)
            raise
        bounds = slice_bounds([len(it) for it in items], ranks.world_size, cfg, limit)
        payload = [Slice(items[a:b], a, b, len(items), skip_log) for a, b in bounds]
        del items
    part = scatter_objects(payload, ranks)
    if isinstance(part, str):
        raise RankFailed(part)
    return part
