"""Input data: ``--data`` specs → a stream of :class:`Record` s, with every skipped row counted and explained.

A spec is either a local file or a Hugging Face hub dataset:

- Local files (optionally gzipped, ``.gz``):
  ``.jsonl`` (one JSON object per line; row = 0-based line number, blank lines are not records but count as rows),
  ``.json`` (a list of objects, row = list index; a file that is really JSON lines is read as such),
  ``.parquet`` (row = table row), ``.txt`` (plain text, block mode only: documents are separated by one or more
  blank lines, so tinyshakespeare gives one document per speech; a file without any blank line, such as a wiki
  dump with one article per line, gives one document per line; row = document index).
- Hub datasets: ``NAME[:CONFIG][@SPLIT]`` (split defaults to ``train``), e.g. ``allenai/tulu-3-sft-mixture``,
  ``HuggingFaceH4/ultrachat_200k@train_sft``, ``openai/gsm8k:main@test``. Streamed with ``datasets``;
  row = position in the stream.

Files are read as bytes and decoded line by line, so one bad line (invalid JSON, undecodable bytes, wrong
type) is skipped and later lines are still used. ``(dataset, row)`` identifies a record across runs.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from fastsae.errors import InputError
from fastsae.harvest.records import Record, RecordError, normalise_record

__all__ = [
    "Record",
    "RecordError",
    "SkipLog",
    "SourceError",
    "SourceNotFoundError",
    "DataSpec",
    "parse_spec",
    "describe_sources",
    "iter_records",
]

LOCAL_KINDS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".txt": "txt"}


class SourceError(InputError):
    """A --data spec cannot be read as a whole (missing file, hub unreachable, unsupported format)."""


class SourceNotFoundError(SourceError, FileNotFoundError):
    """A --data spec names a local file that does not exist."""


@dataclass(frozen=True)
class DataSpec:
    spec: str  # as given
    kind: str  # jsonl | json | parquet | txt | hub
    path: Path | None = None  # local files
    compressed: bool = False  # local .gz
    name: str | None = None  # hub dataset id
    config: str | None = None
    split: str = "train"


def _local_kind(path: str) -> tuple[str | None, bool]:
    lower = path.lower()
    compressed = lower.endswith(".gz")
    if compressed:
        lower = lower[:-3]
    for ext, kind in LOCAL_KINDS.items():
        if lower.endswith(ext):
            return kind, compressed
    return None, compressed


def parse_spec(spec: str) -> DataSpec:
    """Local file if it has a known extension or exists, else ``NAME[:CONFIG][@SPLIT]`` on the hub."""
    if not isinstance(spec, str) or not spec.strip():
        raise SourceError(f"empty --data spec {spec!r}")
    kind, compressed = _local_kind(spec)
    path = Path(spec).expanduser()
    if kind is not None:
        if not path.is_file():
            raise SourceNotFoundError(f"--data {spec}: no such file")
        return DataSpec(spec, kind, path=path.resolve(), compressed=compressed)
    if path.exists():
        raise SourceError(
            f"--data {spec}: unsupported file type (use .jsonl, .json, .parquet or .txt, optionally .gz)"
        )
    name, _, split = spec.partition("@")
    name, _, config = name.partition(":")
    if not name or name.startswith((".", "/")) or " " in name:
        raise SourceError(f"--data {spec}: not a local file and not a hub dataset name NAME[:CONFIG][@SPLIT]")
    return DataSpec(spec, "hub", name=name, config=config or None, split=split or "train")


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


class SkipLog:
    """Counts kept records and records every skipped one with its reason.

    ``iter_records`` calls ``keep`` for each record it yields. A later stage that drops a yielded record
    (template rejected, duplicate) calls ``record`` for it, which also takes it back out of ``kept``, so
    ``summary()`` stays "kept N of N + skipped".
    """

    RECENT = 65536  # how many recently kept (dataset, row) keys are remembered for that

    def __init__(self) -> None:
        self.kept = 0
        self.entries: list[dict] = []
        self._recent: dict[tuple[int, int], None] = {}

    def keep(self, dataset: int = 0, row: int = 0) -> None:
        self.kept += 1
        self._recent[(dataset, row)] = None
        if len(self._recent) > self.RECENT:
            del self._recent[next(iter(self._recent))]

    def record(self, dataset: int, row: int, reason: str, detail: str = "") -> None:
        if self._recent.pop((dataset, row), False) is None:
            self.kept -= 1
        self.entries.append({"dataset": dataset, "row": row, "reason": reason, "detail": str(detail)[:300]})

    def counts(self) -> dict[str, int]:
        """``{reason: count}``, most frequent first."""
        return dict(Counter(e["reason"] for e in self.entries).most_common())

    @property
    def skipped(self) -> int:
        return len(self.entries)

    def write(self, path: str | os.PathLike) -> Path:
        """Write ``skipped.jsonl`` (one ``{dataset, row, reason, detail}`` per line), atomically."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # writers of one store may write it at once
        with open(tmp, "w", encoding="utf-8") as f:
            for e in self.entries:
                f.write(json.dumps(e, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
        return path

    def summary(self) -> str:
        total = self.kept + self.skipped
        s = f"kept {self.kept:,} of {total:,} records"
        if self.skipped:
            s += f"; skipped {self.skipped:,}: " + ", ".join(f"{n:,} {r}" for r, n in self.counts().items())
        return s


# ---- raw readers: yield (row, where, raw_record_or_RecordError) ------------------------------------------


def _open_bytes(d: DataSpec):
    return gzip.open(d.path, "rb") if d.compressed else open(d.path, "rb")


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecordError("undecodable", f"invalid UTF-8 at byte {e.start}") from None


def _parse_json_line(raw: bytes) -> object:
    text = _decode(raw)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RecordError("invalid_json", f"{e.msg} at column {e.colno}") from None


def _read_jsonl(d: DataSpec) -> Iterator[tuple[int, str, object]]:
    with _open_bytes(d) as f:
        for row, raw in enumerate(f):
            if row == 0 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                yield row, f"{d.path}:{row + 1}", _parse_json_line(raw)
            except RecordError as e:
                yield row, f"{d.path}:{row + 1}", e


def _read_json(d: DataSpec) -> Iterator[tuple[int, str, object]]:
    with _open_bytes(d) as f:
        data = f.read()
    try:
        obj = json.loads(_decode(data.removeprefix(b"\xef\xbb\xbf")))
    except RecordError as e:
        raise SourceError(f"--data {d.spec}: {e}") from None
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # JSON lines in a .json file
            yield from _read_jsonl(d)
            return
        raise SourceError(
            f"--data {d.spec}: invalid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    if isinstance(obj, dict):
        obj = [obj]  # a single record
    if not isinstance(obj, list):
        raise SourceError(f"--data {d.spec}: top level is a {type(obj).__name__}, expected a list of records")
    for row, rec in enumerate(obj):
        yield row, f"{d.path}[{row}]", rec


def _read_parquet(d: DataSpec) -> Iterator[tuple[int, str, object]]:
    import pyarrow.parquet as pq

    row = 0
    for batch in pq.ParquetFile(d.path).iter_batches(batch_size=1024):
        for rec in batch.to_pylist():
            yield row, f"{d.path} row {row}", rec
            row += 1


def _txt_documents(d: DataSpec, by_blank_lines: bool) -> Iterator[tuple[int, list[bytes]]]:
    with _open_bytes(d) as f:
        doc: list[bytes] = []
        first = 0
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                if doc:
                    yield first, doc
                    doc = []
                continue
            if not doc:
                first = lineno
            doc.append(raw)
            if not by_blank_lines:
                yield first, doc
                doc = []
        if doc:
            yield first, doc


def _read_txt(d: DataSpec) -> Iterator[tuple[int, str, object]]:
    with _open_bytes(d) as f:
        by_blank_lines = any(not line.strip() for line in f)
    for row, (first, lines) in enumerate(_txt_documents(d, by_blank_lines)):
        where = f"{d.path}:{first}"
        try:
            yield row, where, {"text": _decode(b"".join(lines)).strip("\r\n")}
        except RecordError as e:
            yield row, where, e


def _read_hub(d: DataSpec) -> Iterator[tuple[int, str, object]]:
    import datasets

    try:
        stream = datasets.load_dataset(d.name, d.config, split=d.split, streaming=True)
        it = iter(stream)
        row = 0
        while True:
            try:
                rec = next(it)
            except StopIteration:
                return
            yield row, f"{d.name}@{d.split} row {row}", rec
            row += 1
    except (ConnectionError, OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SourceError(
            f"--data {d.spec}: cannot load hub dataset {d.name!r} (config {d.config}, split {d.split}): {first}"
        ) from None


_READERS = {
    "jsonl": _read_jsonl,
    "json": _read_json,
    "parquet": _read_parquet,
    "txt": _read_txt,
    "hub": _read_hub,
}


def _records(
    dataset: int, d: DataSpec, *, text_mode: bool, skip_log: SkipLog, on_error: str
) -> Iterator[Record]:
    if d.kind == "txt" and not text_mode:
        raise SourceError(f"--data {d.spec}: a plain-text file needs text (block) mode")
    for row, where, raw in _READERS[d.kind](d):
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
    parsed = [parse_spec(s) for s in specs]
    n = 0
    if limit == 0:
        return
    for dataset, d in enumerate(parsed):
        for rec in _records(dataset, d, text_mode=text_mode, skip_log=skip_log, on_error=on_error):
            yield rec
            n += 1
            if limit is not None and n >= limit:
                return
