"""store.json: created once by the first writer (atomically), then the identity every later writer must share."""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import StoreMismatchError
from .format import (
    FORMAT_NAME,
    SCHEMA_VERSION,
    STORE_JSON,
    normalize_json,
    read_store_json,
    write_json_atomic,
)


def init_store(root: str | os.PathLike, *, meta: Mapping[str, Any]) -> dict:
    """Create ``root`` and its store.json (atomically; the first writer wins), or check an existing one.

    Raises StoreMismatchError naming the differing keys when ``meta["identity"]`` differs from the stored
    identity. Returns the stored meta (the parsed store.json).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    new = normalize_json(dict(meta))
    new["schema_version"] = SCHEMA_VERSION
    new["format"] = FORMAT_NAME
    if not (root / STORE_JSON).exists():
        new.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
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
