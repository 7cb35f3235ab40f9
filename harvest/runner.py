"""The harvest loop: records -> tokens -> (dedup) -> batches -> capture -> shards.

Determinism is what makes resume safe: the sequence stream (tokenisation + dedup + block packing)
depends only on data and config, and so do the windows cut from it (from the start of this writer's
slice, on every run). Committed shards hold sequences [start, start + K) of this writer; after a crash
we delete partial shards, regenerate the stream cheaply, re-form the same windows and forward only the
batches that hold a sequence past K: the same batches as the uninterrupted run, so the same bytes.
Batching order never changes what is stored: each window of sequences is sorted by length for the
forward passes, and written back in input order. What decides a shard's size: harvest/shards.py.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastsae.chats.formats import GZIP_MAGIC, head
from fastsae.harvest.batching import SeqItem, pack_blocks
from fastsae.harvest.config import HarvestConfig, HarvestConfigError
from fastsae.harvest.forward import forward_window
from fastsae.harvest.meta import build_meta, check_early_identity, resolve_data_specs
from fastsae.harvest.progress import HarvestProgress
from fastsae.harvest.shards import ShardSink
from fastsae.harvest.slicing import closes_window, own_slice, shared_slice, window_tokens
from fastsae.harvest.stops import DiskGuard, HarvestTerminated, sigterm_interrupts
from fastsae.lm.devices import available_cores, pick_device, set_threads
from fastsae.lm.distributed import close_ranks, init_ranks
from fastsae.store import store_location, write_side_file
from fastsae.store.dtypes import is_fp8

_SHARD_RE = re.compile(r"^shard-(\d+)-(\d+)\.zarr$")
log = logging.getLogger(__name__)


@dataclass
class HarvestResult:
    out: Path
    sequences: int  # sequences written by this run
    tokens: int
    resumed_from: int  # sequences of this writer already committed before this run
    shards: int  # shards committed by this run
    skipped: dict  # reason -> count (whole stream)
    seconds: float  # whole run, model loading included
    forward_seconds: float
    load_seconds: float = 0.0
    main: bool = True  # rank 0 (its result counts every rank under torchrun): the one that prints

    @property
    def tokens_per_second(self) -> float:
        """Harvest rate, model loading excluded."""
        busy = self.seconds - self.load_seconds
        return self.tokens / busy if busy > 0 else 0.0

    def summary(self) -> str:
        rate = self.tokens_per_second
        skipped = sum(self.skipped.values())
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items()))
        resumed = f" (resumed after {self.resumed_from})" if self.resumed_from else ""
        return (
            f"harvested {self.sequences} sequences, {self.tokens} tokens into {self.shards} shards{resumed} "
            f"in {self.seconds:.1f}s ({rate:.0f} tok/s after {self.load_seconds:.0f}s loading); skipped {skipped}"
            + (f" ({reasons})" if reasons else "")
        )


def sequence_stream(cfg: HarvestConfig, tokenizer, specs: list[str], skip_log) -> Iterator[SeqItem]:
    """The deterministic sequence stream (global indices from 0), without any forward pass."""
    from fastsae.chats.sources import RecordError, iter_records
    from fastsae.lm.chat import tokenize_conversation, tokenize_text
    from fastsae.lm.errors import TemplateRejectedError

    block = cfg.packing == "block"
    dedup = None
    if cfg.dedup_ngram:
        from fastsae.harvest.dedup import NgramDedup

        dedup = NgramDedup(cfg.dedup_ngram)
    records = iter_records(specs, text_mode=block, limit=cfg.limit, skip_log=skip_log, on_error=cfg.on_error)

    def docs() -> Iterator[tuple[np.ndarray, np.ndarray, tuple[int, int]]]:
        for rec in records:
            try:
                try:
                    if rec.messages is not None:
                        ids, types = tokenize_conversation(
                            tokenizer, list(rec.messages), max_tokens=cfg.max_tokens
                        )
                    else:
                        ids, types = tokenize_text(tokenizer, rec.text)  # documents are not truncated
                except TemplateRejectedError as e:  # lm's own error, as one of harvest's bad records
                    raise RecordError(e.reason, e.detail) from None
            except RecordError as e:
                if cfg.on_error == "fail":
                    raise
                skip_log.record(rec.dataset, rec.row, e.reason, getattr(e, "detail", str(e)))
                continue
            if len(ids) == 0:
                skip_log.record(rec.dataset, rec.row, "empty_tokens", "no tokens after templating")
                continue
            if dedup is not None and dedup.is_duplicate(ids, types):  # content n-grams only
                skip_log.record(rec.dataset, rec.row, "duplicate", f"{cfg.dedup_ngram}-gram duplicate")
                continue
            yield np.asarray(ids, dtype=np.int32), np.asarray(types, dtype=np.uint8), (rec.dataset, rec.row)

    if block:
        yield from pack_blocks(docs(), context_size=cfg.context_size)
    else:
        for index, (ids, types, source) in enumerate(docs()):
            yield SeqItem(index=index, token_ids=ids, token_types=types, source=source)


def _estimate_total(cfg: HarvestConfig, specs: list[str], done: int) -> int | None:
    """Conversations left, for the ETA: --limit, or the line count of plain .jsonl files (an upper bound)."""
    if cfg.packing != "conversation":
        return None
    rows = 0
    for spec in specs:
        path = Path(spec)
        if not (spec.endswith(".jsonl") and path.is_file()) or head(path, 2) == GZIP_MAGIC:
            rows = None
            break
        with open(path, "rb") as f:
            rows += sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    if cfg.limit is not None:
        rows = cfg.limit if rows is None else min(rows, cfg.limit)
    return None if rows is None else max(0, rows - done)


def _committed(out: Path, writer: int, num_writers: int) -> tuple[int, int, int | None]:
    """-> (sequences committed by `writer`, next shard seq number, first committed sequence or None)."""
    from fastsae.store import open_store

    if num_writers == 1:
        shards = open_store(out).shards  # also checks the committed ranges have no gap
    else:  # other writers' slices may still have gaps: list shards without the global range check
        from fastsae.store import committed_shards

        shards = committed_shards(out)
    done, next_seq, first = 0, 0, None
    for shard in shards:
        m = _SHARD_RE.match(shard.name)
        if not m or int(m.group(1)) != writer:
            continue
        done += shard.num_sequences
        next_seq = max(next_seq, int(m.group(2)) + 1)
        first = shard.first_sequence if first is None else min(first, shard.first_sequence)
    return done, next_seq, first


def run_harvest(
    cfg: HarvestConfig,
    *,
    loaded=None,
    console=None,
    on_sequence_stored: Callable[[int], None] | None = None,
) -> HarvestResult:
    """Harvest `cfg`. `loaded` (fastsae.lm.LoadedModel) reuses an already loaded model.
    `on_sequence_stored(index)` is called in the writer thread after each sequence is appended to its
    (not yet committed) shard: the crash-resume tests kill the process there.

    SIGTERM (in the main thread) and a full disk stop it as Ctrl-C does (harvest/stops.py): the open shard
    is dropped, committed ones stay. Input that yields no usable record is a NothingUsableError, raised
    before anything is written."""
    try:
        with sigterm_interrupts(), DiskGuard(cfg) as disk:
            return _harvest(cfg, disk, loaded=loaded, console=console, on_sequence_stored=on_sequence_stored)
    finally:
        close_ranks()  # the process group this harvest started under torchrun


def _first_sequence_or_raise(cfg: HarvestConfig, tokenizer, specs: list[str]) -> None:
    """Reads the stream up to its first sequence; input that yields none is one error naming what it held."""
    from contextlib import closing

    from fastsae.chats.skips import SkipLog, nothing_usable

    probe = SkipLog()
    with closing(sequence_stream(cfg, tokenizer, specs, probe)) as stream:
        if next(stream, None) is None:
            raise nothing_usable(specs, probe, text_mode=cfg.packing == "block")


def _threads(cfg: HarvestConfig, device) -> int:
    """--threads, clamped to the cores this process may use (more only oversubscribe them)."""
    cores = available_cores()
    if cfg.threads > cores and device.type == "cpu":
        log.warning(
            "--threads %d: this process may use %d cores; using %d threads", cfg.threads, cores, cores
        )
        return cores
    return cfg.threads


def _harvest(cfg: HarvestConfig, disk: DiskGuard, *, loaded, console, on_sequence_stored) -> HarvestResult:
    import torch

    from fastsae.chats.skips import SkipLog
    from fastsae.lm.load import load_model, resolve_dtype
    from fastsae.store import begin_writer, finish_writer, init_store

    t0 = time.perf_counter()
    out = store_location(cfg.out)  # a Path, or an object store's URL (s3://...)
    specs = resolve_data_specs(cfg)
    device = pick_device(cfg.device)  # under torchrun: this rank's own GPU (LOCAL_RANK)
    ranks = init_ranks(device)
    cfg = _rank_config(cfg, ranks)
    check_early_identity(cfg, out)  # one-line StoreMismatchError before loading anything
    set_threads(_threads(cfg, device), device)
    model_dtype = resolve_dtype(cfg.model_dtype, device)
    if loaded is None:
        loaded = load_model(
            cfg.model, revision=cfg.revision, dtype=model_dtype, device=device,
            attn_implementation=cfg.attn_implementation, progress=cfg.progress,
        )  # fmt: skip
    else:
        loaded.model.to(device=device, dtype=model_dtype)
    load_seconds = time.perf_counter() - t0
    if cfg.layers[-1] >= loaded.num_layers:
        raise HarvestConfigError(
            f"--layers {','.join(map(str, cfg.layers))}: layer {cfg.layers[-1]} is out of range; "
            f"{cfg.model} has {loaded.num_layers} decoder blocks (layers 0..{loaded.num_layers - 1})"
        )
    tokenizer = loaded.tokenizer
    if cfg.packing == "conversation":
        from fastsae.lm.chat import check_chat_template
        from fastsae.lm.errors import ChatTemplateError

        try:
            check_chat_template(tokenizer)
        except ChatTemplateError as e:
            raise HarvestConfigError(f"--model {cfg.model}: {e} (or --packing block)") from None
    limit = window_tokens(cfg, device)
    part = None  # several writers: this one's slice of the sequence index, built once (harvest/slicing.py)
    if ranks.distributed:
        part = shared_slice(cfg, tokenizer, specs, limit, sequence_stream, ranks)
    elif cfg.num_writers > 1:
        part = own_slice(cfg, tokenizer, specs, limit, sequence_stream)
    else:
        _first_sequence_or_raise(cfg, tokenizer, specs)  # before anything is written
    meta = build_meta(cfg, loaded, specs, model_dtype=str(model_dtype).removeprefix("torch."))
    fp8 = is_fp8(cfg.dtype)  # quantised on the model's device (forward.fp8_parts), + a float32 scale per token
    item_bytes = 1 if fp8 else torch.empty((), dtype=getattr(torch, cfg.dtype)).element_size()
    disk.bytes_per_token = (
        len(cfg.layers) * (loaded.d_model * item_bytes + 4 * fp8) + 5
    )  # + int32 id, uint8 type
    meta = init_store(out, meta=meta)
    begin_writer(out, writer=cfg.writer, num_writers=cfg.num_writers)  # dead writers' partials go

    done, next_seq, _ = _committed(out, cfg.writer, cfg.num_writers)
    skip_log = SkipLog()
    start, end = 0, None
    whole_log = skip_log  # skipped.jsonl and the counts cover the whole input stream
    # every --num-writers writer writes the same, complete skipped.jsonl; under torchrun rank 0 does
    write_log = ranks.main
    if part is not None:
        start, end, whole_log = part.start, part.end, part.skip_log
    resume_at = start + done

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    store_dtype = None if fp8 else getattr(torch, cfg.dtype)  # fp8: _fp8_parts instead
    sink = ShardSink(cfg, out, meta, d_model=loaded.d_model, next_seq=next_seq, on_stored=on_sequence_stored)
    n_seq = n_tok = 0
    fwd_seconds = 0.0
    total = end - resume_at if end is not None else _estimate_total(cfg, specs, resume_at)
    progress = HarvestProgress(cfg, total=total, console=console)

    from fastsae.lm.hooks import ResidualHooks

    try:
        with (
            torch.inference_mode(),
            ResidualHooks(loaded.model, capture=cfg.layers, stop=True) as hooks,
            progress,
        ):
            window: list[SeqItem] = []
            window_len = 0

            def flush() -> None:
                nonlocal window, window_len, n_seq, n_tok, fwd_seconds
                todo = [item for item in window if item.index >= resume_at]
                if todo:  # a window before resume_at is committed already; the one a crash cut, partly
                    t = time.perf_counter()
                    acts = forward_window(
                        hooks, window, cfg, device, pad_id, store_dtype, resume_at=resume_at
                    )
                    fwd_seconds += time.perf_counter() - t
                    sink.put(
                        [(item, a) for item, a in zip(window, acts, strict=True) if item.index >= resume_at]
                    )
                    n_seq += len(todo)
                    n_tok += sum(len(item) for item in todo)
                    progress.advance(len(todo), sum(len(item) for item in todo))
                window, window_len = [], 0

            items = part.items if part is not None else sequence_stream(cfg, tokenizer, specs, skip_log)
            for item in items:
                window.append(item)
                window_len += len(item)
                if closes_window(len(window), window_len, cfg, limit):
                    flush()
            flush()
        sink.close()
        finish_writer(out, writer=cfg.writer, num_writers=cfg.num_writers)  # this writer's totals
    except BaseException as e:
        sink.close(commit=False)  # writes what was forwarded already, drops the open shard
        if isinstance(e, HarvestTerminated):
            e.committed = done + sink.sequences  # for the CLI's line
        try:
            if write_log:
                write_side_file(out, "skipped.jsonl", whole_log.write)
        except OSError as write_error:  # a full disk: the error in flight is the one to report
            log.warning("%s/skipped.jsonl not updated (%s) after: %s", out, write_error, e)
        raise
    if write_log:
        write_side_file(out, "skipped.jsonl", whole_log.write)
        _warn_unusable_specs(specs, whole_log, cfg)
    result = HarvestResult(
        out=out, sequences=n_seq, tokens=n_tok, resumed_from=done, shards=sink.shards,
        skipped=dict(whole_log.counts()), seconds=time.perf_counter() - t0, forward_seconds=fwd_seconds, load_seconds=load_seconds,
    )  # fmt: skip
    return _all_ranks(result, ranks)


def _rank_config(cfg: HarvestConfig, ranks) -> HarvestConfig:
    """Under torchrun each rank is one writer (writer = RANK of WORLD_SIZE); only rank 0 shows progress."""
    if not ranks.distributed:
        return cfg
    if cfg.num_writers != 1 or cfg.writer != 0:
        raise HarvestConfigError(
            f"--writer/--num-writers: under torchrun each rank is a writer (WORLD_SIZE={ranks.world_size}); "
            "omit them"
        )
    return dataclasses.replace(
        cfg, writer=ranks.rank, num_writers=ranks.world_size, progress=cfg.progress and ranks.main
    )


def _all_ranks(result: HarvestResult, ranks) -> HarvestResult:
    """Rank 0's result counts every rank's sequences, tokens and shards (one gather); others keep their own."""
    from fastsae.lm.distributed import gather_objects

    results = gather_objects(result, ranks)
    if not ranks.distributed or not ranks.main:
        result.main = ranks.main
        return result
    for key in ("sequences", "tokens", "resumed_from", "shards"):
        setattr(result, key, sum(getattr(r, key) for r in results))
    for key in ("seconds", "forward_seconds", "load_seconds"):  # the slowest rank's
        setattr(result, key, max(getattr(r, key) for r in results))
    return result


def _warn_unusable_specs(specs: list[str], skip_log, cfg: HarvestConfig) -> None:
    """One warning per --data spec that gave nothing while others did (the run itself succeeded)."""
    from fastsae.chats.skips import describe_unusable

    for dataset in range(len(specs)):
        if skip_log.kept_by[dataset] <= 0 and any(e["dataset"] == dataset for e in skip_log.entries):
            log.warning(
                "%s", describe_unusable(specs, skip_log, text_mode=cfg.packing == "block", only=dataset)
            )
