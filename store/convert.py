"""`fastsae convert`: an existing store written again in another stored dtype (bf16 -> fp8_e4m3 halves it).

The converted store is the source shard for shard: same shard names (writer ids, seq numbers), first_sequence,
sequences, token ids and types, offsets, sources and documents; store.json the same but for dtype (and layers
with --layers) plus ``converted_from`` (the source's fingerprint, dtype and layers), and the same completeness:
each writer the source records is recorded again (begun, and finished where the source's is), so `inspect`
and `train` know the converted store as complete exactly when the source is. Rows are decoded to float32 and
encoded by ShardWriter as harvest encodes them, so a bf16 store converted to fp8 equals, array for array, an
fp8 harvest of the same model run in bf16.

Each shard is committed atomically by ShardWriter; a rerun of the same conversion keeps the shards already
committed and writes the rest. The source is only read.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastsae.errors import UsageError

from .completeness import begin_writer, finish_writer, read_records
from .dtypes import is_fp8
from .errors import StoreCorruptError, StoreError, StoreMismatchError
from .format import DTYPES, FP8_ROUNDINGS, SHARD_RE, SKIPPED_JSONL
from .identity import init_store
from .location import committed_shards, peek_store_json, write_side_file
from .reader import Shard, Store, open_store, to_float32
from .remote import RemoteRoot, is_url, store_location
from .writer import ShardWriter

COMPRESSIONS = ("source", "none", "zstd")
CONVERTED_FROM = "converted_from"  # store.json key: what this store was converted from
log = logging.getLogger(__name__)
_FRESH = ("schema_version", "format", "created")  # store.json keys init_store writes anew


class ConvertError(StoreError, UsageError):
    """A bad `fastsae convert` argument (dtype, layers, compression, SRC/DST), detected before any write."""


def _help(text: str) -> dict:
    return {"help": text}


@dataclass(frozen=True)
class ConvertConfig:
    src: str = field(metadata=_help("Store to convert (a directory or an fsspec URL); only read."))
    out: str = field(
        metadata=_help(
            "Converted store (directory or URL): created, or the same conversion interrupted, which is finished."
        )
    )
    dtype: str = field(
        default="fp8_e4m3",
        metadata=_help(
            f"Stored dtype of the converted store: {', '.join(DTYPES)} (fp8: one float32 scale per token)."
        ),
    )
    layers: tuple[int, ...] = field(
        default=(), metadata=_help("Layers to keep, e.g. 3,9 (default: all of the source's).")
    )
    compression: str = field(
        default="source",
        metadata=_help("Activation compression: source (each shard as the source's), none or zstd."),
    )
    fp8_rounding: str = field(
        default="stochastic",
        metadata=_help("fp8 dtypes: stochastic (unbiased; harvest's default) or nearest (round to nearest even)."),
    )
    progress: bool = field(default=True, metadata=_help("Show a progress bar."))

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConvertError(f"unknown --dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        if self.fp8_rounding not in FP8_ROUNDINGS:
            raise ConvertError(
                f"unknown --fp8-rounding {self.fp8_rounding!r}; choose one of {', '.join(FP8_ROUNDINGS)}"
            )
        if self.compression not in COMPRESSIONS:
            raise ConvertError(
                f"unknown --compression {self.compression!r}; choose one of {', '.join(COMPRESSIONS)}"
            )
        if len(set(self.layers)) != len(self.layers) or any(layer < 0 for layer in self.layers):
            raise ConvertError(f"--layers must be distinct non-negative integers, got {list(self.layers)}")


def parse_layers(text: str) -> tuple[int, ...]:
    """'3,9' -> (3, 9) (sorted); '' -> () (all); a clear error for anything else."""
    try:
        return tuple(sorted(int(part) for part in text.replace(" ", "").split(",") if part))
    except ValueError:
        raise ConvertError(f"--layers {text!r}: expected comma-separated layer numbers, e.g. 3,9") from None


@dataclass
class ConvertResult:
    out: str
    dtype: str
    shards: int  # written by this run
    kept: int  # committed by an earlier run of the same conversion
    sequences: int
    tokens: int  # of the shards this run wrote
    src_bytes: int
    out_bytes: int
    seconds: float
    completeness: str

    def summary(self) -> str:
        rate = self.tokens / self.seconds if self.seconds > 0 else 0.0
        kept = f", {self.kept} kept from an earlier run" if self.kept else ""
        # a schema-1 shard has no manifest to count its bytes from
        sizes = f"activations {self.src_bytes:,} -> {self.out_bytes:,} bytes; " if self.src_bytes else ""
        return (
            f"converted {self.shards} shards{kept} to {self.dtype} in {self.out}: {self.sequences:,} sequences, "
            f"{self.tokens:,} tokens in {self.seconds:.1f}s ({rate:,.0f} tokens/s); {sizes}completeness: "
            f"{self.completeness}"
        )


def _same_place(src: str | Path, dst: str | Path) -> str | None:
    """Why DST cannot be written for SRC (the same store, or inside it), or None."""
    if is_url(src) or is_url(dst):
        a, b = str(src).rstrip("/"), str(dst).rstrip("/")
        if a == b or b.startswith(a + "/"):
            return "is SRC itself or inside it"
        return None
    a, b = Path(src).resolve(), Path(dst).resolve()
    if a == b or a in b.parents:
        return "is SRC itself or inside it"
    return None


def converted_meta(src: Store, cfg: ConvertConfig, layers: list[int], fingerprint: str) -> dict:
    """The source's store.json with the new dtype (and layers) and the record of the conversion."""
    meta = json.loads(json.dumps({k: v for k, v in src.meta.items() if k not in _FRESH}))
    new = {"dtype": cfg.dtype, "layers": layers}
    meta |= {k: v for k, v in new.items() if k in meta or k == "dtype"}
    for part in ("identity", "config"):  # what a harvest resuming into this store would compare
        if isinstance(meta.get(part), dict):
            meta[part] |= {k: v for k, v in new.items() if k in meta[part]}
            meta[part].pop("fp8_rounding", None)
            if is_fp8(cfg.dtype) and (part == "identity" or "dtype" in meta[part]):  # as harvest records it
                meta[part]["fp8_rounding"] = cfg.fp8_rounding
    meta[CONVERTED_FROM] = {
        "store": src.url or str(Path(src.path).resolve()), "fingerprint": fingerprint, "dtype": src.dtype,
        "layers": list(src.layers), "kept_layers": layers, "compression": cfg.compression,
        **({"fp8_rounding": cfg.fp8_rounding} if is_fp8(cfg.dtype) else {}),
    }  # fmt: skip
    return meta


def _check_out(out: str | Path, meta: dict) -> None:
    """DST is new, empty, or an earlier run of this same conversion; refused otherwise, in one line."""
    raw = peek_store_json(out)
    if raw is None:
        if is_url(out):
            if RemoteRoot(str(out)).listing():
                raise ConvertError(f"--out {out} holds objects but no store.json: not a store; pick another")
        elif Path(out).exists() and (not Path(out).is_dir() or any(Path(out).iterdir())):
            raise ConvertError(f"--out {out} exists and is not a store (no store.json); pick another")
        return
    try:
        stored = json.loads(raw)
        rec = stored[CONVERTED_FROM]
        had = {"source fingerprint": rec["fingerprint"], "dtype": stored["dtype"], "layers": rec["kept_layers"],
               "compression": rec["compression"]}  # fmt: skip
    except (ValueError, TypeError, KeyError):
        raise StoreMismatchError(
            f"--out {out} is a store that was not converted by fastsae convert; pick another"
        ) from None
    rec = meta[CONVERTED_FROM]
    want = {"source fingerprint": rec["fingerprint"], "dtype": meta["dtype"], "layers": rec["kept_layers"],
            "compression": rec["compression"]}  # fmt: skip
    diff = [k for k in want if had[k] != want[k]]
    if diff:
        short = {"source fingerprint": 16}  # as inspect shows it
        details = ", ".join(
            f"{k} {had[k]!r:.{short.get(k, 200)}} != {want[k]!r:.{short.get(k, 200)}}" for k in diff
        )
        raise StoreMismatchError(
            f"--out {out} holds another conversion ({details}); remove it or pick another --out", keys=diff
        )


def _kept_shards(out: str | Path, src: Store, dtype: str, layers: list[int]) -> set[str]:
    """DST's committed shards, each checked against the source's (an earlier run's work)."""
    if peek_store_json(out) is None:
        return set()
    mine = {sh.name: sh for sh in src.shards}
    kept = set()
    for sh in committed_shards(out):
        ref = mine.get(sh.name)
        if ref is None or (sh.first_sequence, sh.num_sequences, sh.num_tokens, sh.layers, sh.dtype) != (
            ref.first_sequence, ref.num_sequences, ref.num_tokens, layers, dtype,
        ):  # fmt: skip
            raise StoreCorruptError(
                f"--out {out}: shard {sh.name} is not the conversion of SRC's shard of that name; remove it"
            )
        kept.add(sh.name)
    return kept


def _source(cfg: ConvertConfig) -> tuple[Store, list[int], dict[int, dict]]:
    src = open_store(cfg.src)
    where = src.url or str(src.path)
    if src.completeness.damaged:
        raise StoreCorruptError(f"SRC {where}: {src.completeness.message}; see fastsae verify {where}")
    if not src.shards:
        raise ConvertError(f"SRC {where} has no committed shards: nothing to convert")
    unknown = [layer for layer in cfg.layers if layer not in src.layers]
    if unknown:
        raise ConvertError(
            f"--layers: layer {unknown[0]} is not in SRC {where} (layers {', '.join(map(str, src.layers))})"
        )
    packed = {sh.attrs["fastsae"].get("compression") or "none" for sh in src.shards}
    if (
        cfg.dtype == src.dtype
        and set(cfg.layers or src.layers) == set(src.layers)
        and cfg.compression in ("source", *packed)
        and len(packed) == 1
    ):
        raise ConvertError(
            f"SRC {where} is {src.dtype} already, with these layers and compression: nothing would change; "
            "pick another --dtype, --layers or --compression"
        )
    records, _ = read_records(src.path)  # damaged records make the completeness damaged (refused above)
    return src, [layer for layer in src.layers if not cfg.layers or layer in cfg.layers], records


def convert_store(cfg: ConvertConfig, *, console=None) -> ConvertResult:
    """Converts cfg.src into cfg.out (see the module doc); the progress bar (cfg.progress) on ``console``."""
    t0 = time.perf_counter()
    src_loc, out = store_location(cfg.src), store_location(cfg.out)
    if why := _same_place(src_loc, out):
        raise ConvertError(f"--out {cfg.out} {why}; the source is never written")
    src, layers, records = _source(cfg)
    meta = converted_meta(src, cfg, layers, src.fingerprint)
    _check_out(out, meta)
    kept = _kept_shards(out, src, cfg.dtype, layers)
    if not src.completeness.ok:  # unfinished writers (a harvest running or stopped), or no records
        log.warning("SRC %s; the converted store records the same", src.completeness.message)
    meta = init_store(out, meta=meta)
    for w, rec in sorted(records.items()):  # the source's writers, recorded again: its completeness is ours
        begin_writer(out, writer=w, num_writers=rec["num_writers"])
    todo = [sh for sh in src.shards if sh.name not in kept]
    with _progress(cfg.progress, sum(sh.num_tokens for sh in todo), console) as advance:
        for sh in todo:
            _convert_shard(sh, out, cfg, meta, layers, advance)
    sequences, tokens = sum(sh.num_sequences for sh in todo), sum(sh.num_tokens for sh in todo)
    for w, rec in sorted(records.items()):
        if rec["state"] == "finished":
            finish_writer(out, writer=w, num_writers=rec["num_writers"])
    skipped = src.path / SKIPPED_JSONL  # a remote source's is in its mirror
    if skipped.is_file():
        write_side_file(out, SKIPPED_JSONL, lambda p: shutil.copyfile(skipped, p))
    done = open_store(out)
    return ConvertResult(
        out=str(out), dtype=cfg.dtype, shards=len(todo), kept=len(kept), sequences=sequences, tokens=tokens,
        src_bytes=_act_bytes(src.shards, layers), out_bytes=_act_bytes(done.shards, layers),
        seconds=time.perf_counter() - t0, completeness=done.completeness.state,
    )  # fmt: skip


@contextmanager
def _progress(enabled: bool, total: int, console) -> Iterator[Callable[[int], None]]:
    """A rich progress bar over the tokens to convert; yields ``advance(tokens)``."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("convert"), BarColumn(), MofNCompleteColumn(), TextColumn("tokens"), TimeElapsedColumn(),
               TimeRemainingColumn())  # fmt: skip
    if console is None:
        from rich.console import Console

        console = Console(stderr=True)  # stdout is the summary line's
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("convert", total=total)
        yield lambda n: bar.update(task, advance=n)


def _shard_ids(sh: Shard) -> tuple[int, int]:
    m = SHARD_RE.match(sh.name)
    return int(m.group(1)), int(m.group(2))


def _convert_shard(sh: Shard, out, cfg: ConvertConfig, meta: dict, layers: list[int], advance) -> None:
    writer, seq = _shard_ids(sh)
    compression = sh.attrs["fastsae"].get("compression") if cfg.compression == "source" else cfg.compression
    raw = {layer: sh.raw_acts(layer) for layer in layers}
    scales = {layer: sh.scales(layer) for layer in layers}
    offsets, doc_starts = np.asarray(sh.offsets), np.asarray(sh.doc_starts)
    ids, types = np.asarray(sh.token_ids), np.asarray(sh.token_types)
    sources, doc_sources = np.asarray(sh.sources), np.asarray(sh.doc_sources)
    with ShardWriter(
        out, writer=writer, seq=seq, first_sequence=sh.first_sequence, layers=layers, d_model=sh.d_model,
        dtype=cfg.dtype, meta=meta, compression=compression, fp8_rounding=cfg.fp8_rounding,
    ) as w:  # fmt: skip
        for i in range(sh.num_sequences):
            a, b = int(offsets[i]), int(offsets[i + 1])
            d0, d1 = np.searchsorted(doc_starts, [a, b])
            acts = {
                layer: to_float32(
                    np.asarray(raw[layer][a:b]),
                    sh.dtype,
                    None if scales[layer] is None else scales[layer][a:b],
                )
                for layer in layers
            }
            w.append(
                token_ids=ids[a:b], token_types=types[a:b], acts=acts, source=tuple(sources[i]),
                doc_starts=doc_starts[d0:d1] - a, doc_sources=doc_sources[d0:d1],
            )  # fmt: skip
            advance(b - a)


def _act_bytes(shards: list[Shard], layers: list[int]) -> int:
    """Bytes of the layers' activations (and fp8 scales) in these shards, from their manifests."""
    prefixes = tuple(f"acts/layer_{layer}{tail}/" for layer in layers for tail in ("", "_scale"))
    return sum(
        int(e.get("bytes", 0)) for sh in shards for rel, e in sh.files.items() if rel.startswith(prefixes)
    )


__all__ = [
    "ConvertConfig",
    "ConvertError",
    "ConvertResult",
    "convert_store",
    "converted_meta",
    "parse_layers",
]
