"""Reading one local file or hub dataset as raw rows, whatever its format: one reader per kind, and the
content sniffing (gzip by its magic bytes, a JSON array in a .jsonl file, a file that is not Parquet).

Each reader yields ``(row, where, raw)``: ``raw`` is the parsed row, or the RecordError that makes it
unusable (one bad line never stops a file). A file that cannot be read as a whole raises SourceError.
"""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from fastsae.chats.records import RecordError
from fastsae.errors import InputError

LOCAL_KINDS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".txt": "txt"}
GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
log = logging.getLogger(__name__)


class SourceError(InputError):
    """A data spec (--data, --prompts) cannot be read as a whole (missing file, hub unreachable, format)."""


class SourceNotFoundError(SourceError, FileNotFoundError):
    """A data spec names a local file that does not exist."""


@dataclass(frozen=True)
class DataSpec:
    spec: str  # as given
    kind: str  # jsonl | json | parquet | txt | hub
    path: Path | None = None  # local files
    compressed: bool = False  # local file of gzip bytes (by its magic bytes)
    name: str | None = None  # hub dataset id
    config: str | None = None
    split: str = "train"
    flag: str = "--data"  # the option that named it, for error lines ("--data", "--prompts")


def head(path: Path, n: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _first_byte(d: DataSpec) -> bytes:
    """The first byte that is not whitespace (or the UTF-8 BOM), decompressed; b"" for an empty file."""
    with _open_bytes(d) as f:
        chunk = f.read(4096).removeprefix(b"\xef\xbb\xbf")
        while chunk:
            if rest := chunk.lstrip():
                return rest[:1]
            chunk = f.read(4096)
    return b""


@lru_cache(maxsize=256)
def _note_once(path: Path, mtime_ns: int, note: str) -> None:
    log.info("note: %s", note)  # a run reads its input more than once (first record, the pass itself)


def _note(d: DataSpec, note: str) -> None:
    _note_once(d.path, d.path.stat().st_mtime_ns, note)


def _open_bytes(d: DataSpec):
    if not d.compressed:
        return open(d.path, "rb")
    if not d.spec.lower().endswith(".gz"):
        _note(d, f"{d.flag} {d.spec} holds gzip-compressed bytes: read through gzip")
    return gzip.open(d.path, "rb")


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
    if _first_byte(d) == b"[":  # one JSON array of records, or JSON lines that are arrays: _read_json tells
        yield from _read_json(d, note=f"{d.flag} {d.spec} is one JSON array, not JSON lines: read as a list")
        return
    yield from _read_lines(d)


def _read_lines(d: DataSpec) -> Iterator[tuple[int, str, object]]:
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


def _read_json(d: DataSpec, note: str | None = None) -> Iterator[tuple[int, str, object]]:
    with _open_bytes(d) as f:
        data = f.read()
    try:
        obj = json.loads(_decode(data.removeprefix(b"\xef\xbb\xbf")))
    except RecordError as e:
        raise SourceError(f"{d.flag} {d.spec}: {e}") from None
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # JSON lines in a .json file
            yield from _read_lines(d)
            return
        raise SourceError(
            f"{d.flag} {d.spec}: invalid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    if note and isinstance(obj, list):
        _note(d, note)
    if isinstance(obj, dict):
        obj = [obj]  # a single record
    if not isinstance(obj, list):
        raise SourceError(
            f"{d.flag} {d.spec}: top level is a {type(obj).__name__}, expected a list of records"
        )
    for row, rec in enumerate(obj):
        yield row, f"{d.path}[{row}]", rec


def _parquet_file(d: DataSpec):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if head(d.path, 4) != PARQUET_MAGIC:
        raise SourceError(f"{d.flag} {d.spec}: not a Parquet file (it does not start with {PARQUET_MAGIC!r})")
    try:
        return pq.ParquetFile(d.path)
    except (pa.ArrowException, OSError) as e:
        raise SourceError(f"{d.flag} {d.spec}: not a readable Parquet file ({_first_line(e)})") from None


def parquet_columns(d: DataSpec) -> list[str]:
    """The column names of a Parquet spec (to say what a file without a usable column holds)."""
    return list(_parquet_file(d).schema_arrow.names)


def _read_parquet(d: DataSpec) -> Iterator[tuple[int, str, object]]:
    import pyarrow as pa

    row = 0
    try:
        for batch in _parquet_file(d).iter_batches(batch_size=1024):
            for rec in batch.to_pylist():
                yield row, f"{d.path} row {row}", rec
                row += 1
    except (pa.ArrowException, OSError) as e:
        raise SourceError(
            f"{d.flag} {d.spec}: Parquet file damaged after row {row} ({_first_line(e)})"
        ) from None


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


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
            f"{d.flag} {d.spec}: cannot load hub dataset {d.name!r} (config {d.config}, split {d.split}): {first}"
        ) from None


_READERS = {
    "jsonl": _read_jsonl,
    "json": _read_json,
    "parquet": _read_parquet,
    "txt": _read_txt,
    "hub": _read_hub,
}


def read_rows(d: DataSpec) -> Iterator[tuple[int, str, object]]:
    """The spec's raw rows; a file that stops being readable (damaged gzip, I/O error) is one SourceError."""
    try:
        yield from _READERS[d.kind](d)
    except (OSError, EOFError, zlib.error) as e:
        if isinstance(e, SourceError):
            raise
        raise SourceError(f"{d.flag} {d.spec}: cannot be read to the end ({_first_line(e)})") from None
