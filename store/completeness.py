"""Writer records: how a store knows it is complete.

A harvest writer calls ``begin_writer`` when it starts (it removes dead writers' leftovers and records
``writer-<w>.json`` as running) and ``finish_writer`` at its end (the record then lists the shards it
committed with their sequence and token counts). The records of all ``num_writers`` writers together are
the store's totals; the last writer to finish completes the set. ``store_completeness`` compares them with
the shards present: a writer that has not finished means the store is still being written (or its run
stopped), a recorded shard that is gone or differs means the store lost data. A store without records
(schema 1, or written by ShardWriter alone) has completeness "unknown".
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import StoreWriteError
from .format import SHARD_RE, WRITER_RECORD_RE, list_shards, write_json_atomic, writer_record_name
from .locking import clean_partial
from .remote import is_url

if TYPE_CHECKING:
    from .reader import Shard


@dataclass(frozen=True)
class Completeness:
    """state: "complete", "incomplete" (a writer has not finished, or data the records name is gone: then
    ``damaged``) or "unknown" (no records). ``message``: one line. Totals: the records' sums, once every
    writer has finished."""

    state: str
    message: str
    damaged: bool = False
    missing: tuple[str, ...] = ()  # recorded shards that are not in the store
    unfinished: tuple[int, ...] = ()  # writers without a finished record
    num_writers: int | None = None
    shards: int | None = None
    sequences: int | None = None
    tokens: int | None = None

    @property
    def ok(self) -> bool:
        return self.state == "complete"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _check_ids(writer: int, num_writers: int) -> None:
    if (
        type(num_writers) is not int
        or num_writers < 1
        or type(writer) is not int
        or not 0 <= writer < num_writers
    ):
        raise StoreWriteError(f"writer {writer!r} of {num_writers!r}: need 0 <= writer < num_writers")


def begin_writer(root: str | os.PathLike, *, writer: int, num_writers: int = 1) -> list[Path]:
    """A writer starts: removes the partial shards of dead writers (this one's included; clean_partial), then
    records this writer as running. Returns the partial directories removed."""
    _check_ids(writer, num_writers)
    record = {
        "writer": writer, "num_writers": num_writers, "state": "running", "started": _now(),
        "host": socket.gethostname(), "pid": os.getpid(),
    }  # fmt: skip
    if is_url(root):  # its uncommitted shards (objects without a manifest) and its local staging leftovers
        from .remote import RemoteRoot, clean_uncommitted, mirror_dir

        url = str(root).rstrip("/")
        gone = clean_uncommitted(url, writer=writer)
        removed = [Path(url) / n for n in gone] + clean_partial(mirror_dir(url) / "staging", writer=writer)
        RemoteRoot(url).put_bytes(writer_record_name(writer), _record_bytes(record))
        return removed
    root = Path(root)
    removed = clean_partial(root, writer=writer)
    write_json_atomic(root / writer_record_name(writer), record)
    return removed


def _record_bytes(record: dict) -> bytes:
    return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()


def finish_writer(root: str | os.PathLike, *, writer: int, num_writers: int = 1) -> Completeness:
    """A writer ends: records the shards it committed (names, sequences, tokens) and its totals. Returns the
    store's completeness (complete once every writer has finished and every recorded shard is present)."""
    from .reader import Shard

    _check_ids(writer, num_writers)
    if is_url(root):
        from .reader import open_store

        every = open_store(root, check_ranges=False).shards  # earlier writers may not have committed yet
    else:
        root = Path(root)
        every = [Shard.open(p) for p in list_shards(root)]
    mine = [sh for sh in every if int(SHARD_RE.match(sh.name).group(1)) == writer]
    record = {
        "writer": writer, "num_writers": num_writers, "state": "finished", "finished": _now(),
        "sequences": sum(sh.num_sequences for sh in mine), "tokens": sum(sh.num_tokens for sh in mine),
        "shards": {sh.name: {"first_sequence": sh.first_sequence, "sequences": sh.num_sequences,
                             "tokens": sh.num_tokens} for sh in mine},
    }  # fmt: skip
    if is_url(root):
        from .remote import RemoteRoot

        RemoteRoot(str(root)).put_bytes(writer_record_name(writer), _record_bytes(record))
    else:
        write_json_atomic(root / writer_record_name(writer), record)
    return store_completeness(root)


def read_records(root: Path) -> tuple[dict[int, dict], list[str]]:
    """{writer: record} and one line per unreadable record."""
    records, bad = {}, []
    for p in sorted(root.iterdir()):
        m = WRITER_RECORD_RE.match(p.name)
        if not m:
            continue
        try:
            rec = json.loads(p.read_text())
            if not isinstance(rec, dict) or rec.get("writer") != int(m.group(1)):
                raise ValueError("not a record of this writer")
            if type(rec.get("num_writers")) is not int or rec.get("state") not in ("running", "finished"):
                raise ValueError("num_writers or state missing")
            if rec["state"] == "finished" and not isinstance(rec.get("shards"), dict):
                raise ValueError("a finished record without its shards")
        except (OSError, ValueError, UnicodeDecodeError) as e:
            bad.append(f"writer record {p.name} is damaged ({e})")
            continue
        records[int(m.group(1))] = rec
    return records, bad


def store_completeness(
    root: str | os.PathLike, shards: list[Shard] | None = None, *, where: str | None = None
) -> Completeness:
    """Compares the writers' records with the committed shards (``shards``: already opened, else opened).
    ``root`` may be a URL (the records and shards of a remote store, through its mirror); ``where``: the
    store's name in messages (a mirror's URL)."""
    from .reader import Shard
    from .remote import is_url

    if is_url(root):
        from .reader import open_store

        store = open_store(root, check_ranges=False)  # a gap in the sequences is what completeness reports
        return store.completeness
    root = Path(root)
    if shards is None:
        shards = [Shard.open(p) for p in list_shards(root)]
    records, bad = read_records(root)
    where = f"store {where or root}"
    if bad:
        return Completeness("incomplete", f"{where}: {bad[0]}", damaged=True)
    if not records:
        return Completeness(
            "unknown",
            f"{where}: completeness unknown: no writer records (written before schema 2, or not by fastsae "
            "harvest); missing shards cannot be detected",
        )
    counts = sorted({rec["num_writers"] for rec in records.values()})
    if len(counts) > 1 or max(records) >= counts[-1]:
        return Completeness(
            "incomplete",
            f"{where}: writer records disagree on the number of writers ({counts})",
            damaged=True,
        )
    n = counts[0]
    present: dict[str, Shard] = {sh.name: sh for sh in shards}
    unfinished = tuple(w for w in range(n) if records.get(w, {}).get("state") != "finished")
    missing, changed = [], []
    for w, rec in sorted(records.items()):
        if rec["state"] != "finished":
            continue
        for name, want in sorted(rec["shards"].items()):
            sh = present.get(name)
            if sh is None:
                missing.append(name)
            elif not isinstance(want, dict) or (want.get("sequences"), want.get("tokens")) != (
                sh.num_sequences,
                sh.num_tokens,
            ):
                changed.append(f"shard {name} holds {sh.num_sequences} sequences, {sh.num_tokens} tokens; "
                               f"writer {w}'s record says {want}")  # fmt: skip
    done = {w for w in range(n) if w not in unfinished}
    extra = [
        name for name in sorted(present)
        if (w := int(SHARD_RE.match(name).group(1))) >= n or (w in done and name not in records[w]["shards"])
    ]  # fmt: skip
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        owners = sorted({w for w in done if set(missing) & set(records[w]["shards"])})
        totals = "; ".join(
            f"writer {w} recorded {len(records[w]['shards'])} shards, {records[w]['sequences']} sequences"
            for w in owners
        )
        return Completeness(
            "incomplete", f"{where} is incomplete: shard {missing[0]}{more} is missing ({totals})",
            damaged=True, missing=tuple(missing), unfinished=unfinished, num_writers=n,
        )  # fmt: skip
    if changed or extra:
        line = changed[0] if changed else f"shard {extra[0]} is in no finished writer's record"
        return Completeness(
            "incomplete", f"{where}: {line}", damaged=True, unfinished=unfinished, num_writers=n
        )
    if unfinished:
        w = unfinished[0]
        rec = records.get(w)
        how = (
            "has not started" if rec is None
            else f"has not finished (started {rec.get('started')} on {rec.get('host')}, pid {rec.get('pid')})"
        )  # fmt: skip
        others = f" ({len(unfinished) - 1} more writers unfinished)" if len(unfinished) > 1 else ""
        return Completeness(
            "incomplete",
            f"{where} is incomplete: writer {w} of {n} {how}{others}: its harvest is still running, or stopped "
            "before the end (rerun it to finish)",
            unfinished=unfinished, num_writers=n,
        )  # fmt: skip
    total = {k: sum(records[w][k] for w in range(n)) for k in ("sequences", "tokens")}
    n_shards = sum(len(records[w]["shards"]) for w in range(n))
    return Completeness(
        "complete",
        f"complete: {n} writer{'s' if n > 1 else ''} recorded {n_shards} shards, {total['sequences']:,} "
        f"sequences, {total['tokens']:,} tokens",
        num_writers=n, shards=n_shards, **total,
    )  # fmt: skip
