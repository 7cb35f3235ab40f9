"""The reader a consumer outside harvest calls: data specs -> normalised conversations with a source label.

Harvest reads the same rows through ``iter_records`` (it needs the (dataset, row) keys for its store and
keeps its own skip log); eval's --data and steer's --prompts read them through ``read_conversations``, so
every command reads the same formats, normalises the same schemas and skips the same rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from fastsae.chats.skips import SkipLog, nothing_usable
from fastsae.chats.sources import SourceError, iter_records, parse_spec


@dataclass(frozen=True)
class Conversation:
    """One usable record: ``messages`` (conversation mode, always set) or ``text`` (text mode, plain text)."""

    messages: tuple[dict, ...] | None  # ({"role": "system|user|assistant|tool", "content": str}, ...)
    text: str | None
    source: str  # "<file name>:<row>" or "<hub name>@<split>:<row>"
    dataset: int  # index of its spec in `specs`
    row: int  # as in harvest's skipped.jsonl: 0-based line / list index / table row / document


def _label(spec) -> str:
    return spec.path.name if spec.path is not None else f"{spec.name}@{spec.split}"


def read_conversations(
    specs: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    text_mode: bool = False,
    limit: int | None = None,
    flag: str = "--data",
    skip_log: SkipLog | None = None,
) -> Iterator[Conversation]:
    """The usable records of `specs` (files or hub datasets, in order), normalised, bad rows skipped.

    Every spec is checked before this returns: a missing file, an unsupported format, a plain-text file
    without `text_mode` raise SourceError (an InputError) naming `flag` and the spec. While reading, a
    file that stops being readable raises SourceError; when the specs end without one usable record, a
    NothingUsableError (a SourceError) says per spec what was found instead. `limit` counts yielded
    records. Skipped rows are counted in `skip_log` (pass one to report them; a consumer that drops a
    yielded record records it there too, as harvest does for a template that rejects it).
    """
    if isinstance(specs, (str, os.PathLike)):
        specs = [specs]
    specs = [os.fspath(s) for s in specs]
    parsed = [parse_spec(s, flag=flag) for s in specs]
    for d in parsed:
        if d.kind == "txt" and not text_mode:
            raise SourceError(f"{flag} {d.spec}: a plain-text file holds no conversations")
    log = SkipLog() if skip_log is None else skip_log
    labels = [_label(d) for d in parsed]
    return _read(specs, labels, text_mode=text_mode, limit=limit, flag=flag, skip_log=log)


def _read(specs, labels, *, text_mode, limit, flag, skip_log) -> Iterator[Conversation]:
    n = 0
    for rec in iter_records(specs, text_mode=text_mode, limit=limit, skip_log=skip_log, flag=flag):
        n += 1
        source = f"{labels[rec.dataset]}:{rec.row}"
        yield Conversation(rec.messages, rec.text, source, rec.dataset, rec.row)
    if n == 0 and limit != 0:
        what = "record" if text_mode else "conversation"
        raise nothing_usable(specs, skip_log, text_mode=text_mode, outcome=f"no usable {what} in {flag}")
