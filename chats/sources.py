"""Data specs (--data, --prompts) → a stream of :class:`Record` s, each skipped row counted and explained.

A spec is either a local file or a Hugging Face hub dataset:

- Local files (optionally gzipped: gzip is recognised by its magic bytes, whatever the name says):
  ``.jsonl`` (one JSON object per line; row = 0-based line number, blank lines are not records but count as rows;
  a file that is really one JSON array is read as a ``.json`` list),
  ``.json`` (a list of objects, row = list index; a file that is really JSON lines is read as such),
  ``.parquet`` (row = table row), ``.txt`` (plain text, block mode only: documents are separated by one or more
  blank lines, so tinyshakespeare gives one document per speech; a file without any blank line, such as a wiki
  dump with one article per line, gives one document per line; row = document index).
- Hub datasets: ``NAME[:CONFIG][@SPLIT]`` (split defaults to ``train``), e.g. ``allenai/tulu-3-sft-mixture``,
  ``HuggingFaceH4/ultrachat_200k@train_sft``, ``openai/gsm8k:main@test``. Streamed with ``datasets``;
  row = position in the stream.

Files are read as bytes and decoded line by line, so one bad line (invalid JSON, undecodable bytes, wrong
type) is skipped and later lines are still used. ``(dataset, row)`` identifies a record across runs. A file that
cannot be read as a whole (not Parquet, a damaged gzip stream) is a SourceError; input that yields no usable
record at all is one too, and ``chats.skips.nothing_usable`` says what was found instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from fastsae.chats.formats import (
    GZIP_MAGIC,
    LOCAL_KINDS,
    DataSpec,
    SourceError,
    SourceNotFoundError,
    head,
    read_rows,
)
from fastsae.chats.records import Record, RecordError, normalise_record

if TYPE_CHECKING:
    from fastsae.chats.skips import SkipLog

__all__ = ["DataSpec", "Record", "RecordError", "SourceError", "SourceNotFoundError"]
__all__ += ["describe_sources", "iter_records", "parse_spec"]


def _local_kind(path: str) -> tuple[str | None, bool]:
    lower = path.lower()
    compressed = lower.endswith(".gz")
    if compressed:
        lower = lower[:-3]
    for ext, kind in LOCAL_KINDS.items():
        if lower.endswith(ext):
            return kind, compressed
    return None, compressed


def parse_spec(spec: str, *, flag: str = "--data") -> DataSpec:
    """Local file if it has a known extension or exists, else ``NAME[:CONFIG][@SPLIT]`` on the hub.

    ``flag`` is the option that named the spec: error lines start with it.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SourceError(f"empty {flag} spec {spec!r}")
    kind, compressed = _local_kind(spec)
    path = Path(spec).expanduser()
    if kind is not None:
        if not path.is_file():
            raise SourceNotFoundError(f"{flag} {spec}: no such file")
        compressed = kind != "parquet" and head(path, 2) == GZIP_MAGIC  # the bytes decide, not the name
        return DataSpec(spec, kind, path=path.resolve(), compressed=compressed, flag=flag)
    if path.exists():
        raise SourceError(
            f"{flag} {spec}: unsupported file type (use .jsonl, .json, .parquet or .txt, optionally .gz)"
        )
    name, _, split = spec.partition("@")
    name, _, config = name.partition(":")
    if not name or name.startswith((".", "/")) or " " in name:
        raise SourceError(f"{flag} {spec}: not a local file and not a hub dataset name NAME[:CONFIG][@SPLIT]")
    return DataSpec(spec, "hub", name=name, config=config or None, split=split or "train", flag=flag)


@lru_cache(maxsize=256)
def _sha256_cached(path: Path, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _sha256(path: Path) -> str:
    """Streaming sha256 of a file, computed once per (path, size, mtime) in a process."""
    st = path.stat()
    return _sha256_cached(path, st.st_size, st.st_mtime_ns)


def describe_sources(specs: list[str]) -> list[dict]:
    """Provenance of each spec for the store's ``meta["data"]`` (raises SourceError for a bad spec)."""
    out = []
    for spec in specs:
        d = parse_spec(spec)
        if d.kind == "hub":
            out.append({"spec": spec, "kind": "hub", "name": d.name, "config": d.config, "split": d.split})
        else:
            out.append(
                {
                    "spec": spec,
                    "kind": d.kind,
                    "path": str(d.path),
                    "compressed": d.compressed,
                    "bytes": d.path.stat().st_size,
                    "sha256": _sha256(d.path),
                }
            )
    return out


def _records(
    dataset: int, d: DataSpec, *, text_mode: bool, skip_log: SkipLog, on_error: str
) -> Iterator[Record]:
    if d.kind == "txt" and not text_mode:
        raise SourceError(f"{d.flag} {d.spec}: a plain-text file needs text (block) mode")
    for row, where, raw in read_rows(d):
        try:
            if isinstance(raw, RecordError):
                raise raw
            messages, text = normalise_record(raw, text_mode=text_mode)
        except RecordError as e:
            if on_error == "fail":
                raise e.at(where) from None
            skip_log.record(dataset, row, e.reason, e.detail)
            continue
        skip_log.keep(dataset, row)
        yield Record(dataset=dataset, row=row, messages=messages, text=text)


def iter_records(
    specs: Iterable[str],
    *,
    text_mode: bool,
    limit: int | None = None,
    skip_log: SkipLog,
    on_error: str = "skip",
    flag: str = "--data",
) -> Iterator[Record]:
    """All usable records of all specs, in spec order then row order.

    ``limit`` counts KEPT records over all specs together (skipped rows do not count), so ``limit=1000`` gives
    1000 usable records when the data has them. ``on_error="skip"`` counts bad rows in ``skip_log``;
    ``"fail"`` raises the first one as a :class:`RecordError` naming file:line (or row) and the reason.
    Whole-spec problems (missing file, unreachable hub) raise :class:`SourceError` either way.
    """
    if on_error not in ("skip", "fail"):
        raise ValueError(f"on_error must be 'skip' or 'fail', not {on_error!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, not {limit}")
    parsed = [parse_spec(s, flag=flag) for s in specs]
    n = 0
    if limit == 0:
        return
    for dataset, d in enumerate(parsed):
        for rec in _records(dataset, d, text_mode=text_mode, skip_log=skip_log, on_error=on_error):
            yield rec
            n += 1
            if limit is not None and n >= limit:
                return
