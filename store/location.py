"""A store argument is a directory or an fsspec URL: the few things harvest does to either, beside ShardWriter."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .format import STORE_JSON, list_shards
from .remote import RemoteRoot, is_url, mirror_dir, store_location

if TYPE_CHECKING:
    from .reader import Shard


def committed_shards(root: str | os.PathLike) -> list[Shard]:
    """The committed shards, each checked as open_store checks it, without the store-wide range check (other
    writers' slices may still have gaps)."""
    from .reader import Shard, open_store

    if is_url(root):
        return open_store(root, allow_incomplete=True, check_ranges=False).shards
    return [Shard.open(p) for p in list_shards(Path(root))]


def peek_store_json(root: str | os.PathLike) -> bytes | None:
    """The bytes of store.json, or None where there is none yet."""
    try:
        if is_url(root):
            return RemoteRoot(str(root)).cat(STORE_JSON)
        return (Path(root) / STORE_JSON).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None


def write_side_file(root: str | os.PathLike, name: str, write: Callable[[Path], object]) -> str:
    """``write(path)`` a file beside the shards (skipped.jsonl): in the store directory, or written in the
    remote store's staging folder and uploaded as one object. Returns where it went."""
    if not is_url(root):
        write(Path(root) / name)
        return str(Path(root) / name)
    url = str(store_location(root))
    staging = mirror_dir(url) / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    local = staging / f"{name}.{os.getpid()}"
    try:
        write(local)
        RemoteRoot(url).put_file(local, name)
    finally:
        local.unlink(missing_ok=True)
    return f"{url}/{name}"


__all__ = ["committed_shards", "peek_store_json", "store_location", "write_side_file"]
