"""store.json: created once by the first writer (atomically), then the identity every later writer must share."""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import StoreCorruptError, StoreMismatchError
from .format import (
    FORMAT_NAME,
    SCHEMA_VERSION,
    STORE_JSON,
    SUPPORTED_SCHEMA_VERSIONS,
    normalize_json,
    read_store_json,
    write_json_atomic,
)
from .remote import is_url


def init_store(root: str | os.PathLike, *, meta: Mapping[str, Any]) -> dict:
    """Create ``root`` and its store.json (atomically; the first writer wins), or check an existing one.

    Raises StoreMismatchError naming the differing keys when ``meta["identity"]`` differs from the stored
    identity. Returns the stored meta (the parsed store.json).

    ``root`` may be an fsspec URL: an object store has no create-if-absent here, so the store.json of two
    first writers racing is the last one's; both hold the same identity (they passed this check)."""
    new = normalize_json(dict(meta))
    new["schema_version"] = SCHEMA_VERSION
    new["format"] = FORMAT_NAME
    if is_url(root):
        stored = _init_remote(str(root), new)
        if stored is new:
            return new
    else:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        if not (root / STORE_JSON).exists():
            new.setdefault("created", _now())
            if write_json_atomic(root / STORE_JSON, new, exclusive=True):
                return new
        stored = read_store_json(root)
    old_id, new_id = stored.get("identity") or {}, new.get("identity") or {}
    diff = sorted(k for k in set(old_id) | set(new_id) if old_id.get(k, _MISSING) != new_id.get(k, _MISSING))
    if diff:
        details = ", ".join(
            f"{k}: stored {old_id.get(k, '<missing>')!r} != new {new_id.get(k, '<missing>')!r}" for k in diff
        )
        raise StoreMismatchError(
            f"store {root} was written with a different identity ({details}); use a new store directory",
            keys=diff,
        )
    return stored


_MISSING = object()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _init_remote(url: str, new: dict) -> dict:
    """The stored store.json of a remote store, or ``new`` after writing it there (none was)."""
    from .remote import RemoteRoot

    remote = RemoteRoot(url)
    try:
        raw = remote.cat(STORE_JSON)
    except FileNotFoundError:
        new.setdefault("created", _now())
        remote.put_bytes(STORE_JSON, (json.dumps(new, indent=2, sort_keys=True) + "\n").encode())
        return new
    try:
        stored = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreCorruptError(f"store {url}: {STORE_JSON} is not valid JSON ({e})") from None
    if not isinstance(stored, dict) or stored.get("schema_version") not in SUPPORTED_SCHEMA_VERSIONS:
        raise StoreCorruptError(
            f"store {url}: store.json schema_version {stored.get('schema_version')!r} is not supported "
            f"(this fastsae reads {sorted(SUPPORTED_SCHEMA_VERSIONS)})"
        )
    return stored
