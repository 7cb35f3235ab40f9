"""The skip log (every input row left out, with its reason) and the error for input with nothing usable.

``iter_records`` keeps the log; a later stage that drops a record it yielded (a template that rejects it,
a duplicate) records it there too, so one log explains every row. ``describe_unusable`` turns a log into
one line per spec: what was found instead of records, and what was expected.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from fastsae.atomic import write_atomic
from fastsae.chats.formats import SourceError, parquet_columns
from fastsae.chats.sources import parse_spec


class SkipLog:
    """Counts kept records and records every skipped one with its reason.

    ``iter_records`` calls ``keep`` for each record it yields. A later stage that drops a yielded record
    (template rejected, duplicate) calls ``record`` for it, which also takes it back out of ``kept``, so
    ``summary()`` stays "kept N of N + skipped".
    """

    RECENT = 65536  # how many recently kept (dataset, row) keys are remembered for that

    def __init__(self) -> None:
        self.kept = 0
        self.kept_by: Counter = Counter()  # dataset -> kept
        self.entries: list[dict] = []
        self._recent: dict[tuple[int, int], None] = {}

    def keep(self, dataset: int = 0, row: int = 0) -> None:
        self.kept += 1
        self.kept_by[dataset] += 1
        self._recent[(dataset, row)] = None
        if len(self._recent) > self.RECENT:
            del self._recent[next(iter(self._recent))]

    def record(self, dataset: int, row: int, reason: str, detail: str = "") -> None:
        if self._recent.pop((dataset, row), False) is None:
            self.kept -= 1
            self.kept_by[dataset] -= 1
        self.entries.append({"dataset": dataset, "row": row, "reason": reason, "detail": str(detail)[:300]})

    def counts(self) -> dict[str, int]:
        """``{reason: count}``, most frequent first."""
        return dict(Counter(e["reason"] for e in self.entries).most_common())

    @property
    def skipped(self) -> int:
        return len(self.entries)

    def write(self, path: str | os.PathLike) -> Path:
        """Write ``skipped.jsonl`` (one ``{dataset, row, reason, detail}`` per line), atomically."""
        lines = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in self.entries)
        return write_atomic(path, lines.encode("utf-8"))  # writers of one store may write it at once

    def summary(self) -> str:
        total = self.kept + self.skipped
        s = f"kept {self.kept:,} of {total:,} records"
        if self.skipped:
            s += f"; skipped {self.skipped:,}: " + ", ".join(f"{n:,} {r}" for r, n in self.counts().items())
        return s


class NothingUsableError(SourceError):
    """The input yielded no usable record at all: nothing to work on (and nothing is written)."""


_KEYS = '"messages" (or "conversation", ShareGPT "conversations", "history", "chosen", a prompt/answer pair)'
_EXPECTED = {
    "jsonl": f"one JSON object per line with {_KEYS}",
    "json": f"a list of JSON objects with {_KEYS}",
    "parquet": f"a column {_KEYS}",
    "hub": f"rows with {_KEYS}",
    "txt": "text separated by blank lines",
}


def describe_unusable(
    specs: list[str], skip_log: SkipLog, *, text_mode: bool, only: int | None = None
) -> str:
    """Per spec (or spec `only`), what was found instead of usable records, and what was expected."""
    parts = []
    for dataset, spec in enumerate(specs):
        if only is not None and dataset != only:
            continue
        d = parse_spec(spec)
        entries = [e for e in skip_log.entries if e["dataset"] == dataset]
        expected = _EXPECTED[d.kind]
        if text_mode and d.kind != "txt":
            expected += ', or "text"'
        if d.kind == "parquet":
            expected += f"; its columns are {', '.join(parquet_columns(d)) or 'none'}"
        if not entries:
            empty = (
                "the dataset split is empty"
                if d.kind == "hub"
                else "the file holds no records (it is empty or blank)"
            )
            parts.append(f"{spec}: {empty}; expected {expected}")
            continue
        reasons = ", ".join(f"{n} {r}" for r, n in Counter(e["reason"] for e in entries).most_common())
        first = entries[0]["detail"]
        parts.append(
            f"{spec}: 0 usable records of {len(entries)} ({reasons}; first: {first}); expected {expected}"
        )
    return "; ".join(parts)


def nothing_usable(
    specs: list[str], skip_log: SkipLog, *, text_mode: bool, outcome: str = "nothing was harvested"
) -> NothingUsableError:
    """The error for input that yielded no usable record at all; ``outcome`` ends its line."""
    return NothingUsableError(describe_unusable(specs, skip_log, text_mode=text_mode) + f"; {outcome}")
