"""The commit-time checks of a partial shard: its metadata files' manifest entries, and that every file of the
manifest is still there, with the size written, in the directory this writer created."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import StoreCommitError
from .format import ZARR_JSON, crc32c, lstat_inside


def metadata_entries(partial: Path) -> dict[str, dict]:
    """{path: {"bytes", "crc32c"}} of every zarr.json but the group's own (which holds the manifest)."""
    files = {}
    for dirpath, _dirs, names in os.walk(partial):
        rel_dir = Path(dirpath).relative_to(partial)
        if ZARR_JSON in names and rel_dir != Path():
            raw = (Path(dirpath) / ZARR_JSON).read_bytes()
            files[(rel_dir / ZARR_JSON).as_posix()] = {"bytes": len(raw), "crc32c": crc32c(raw)}
    return files


def check_partial(
    partial: Path, dir_ino: int, inodes: dict[str, int], files: dict[str, dict], *, name: str
) -> None:
    """Every file of the manifest is in ``partial`` with its size, the directory is the one created (inode
    ``dir_ino``) and the files of ``inodes`` are the ones written: another process may have removed the
    directory while it was filled. Raises StoreCommitError."""
    lost = f"{name}: not committed: the partial directory {partial.name}"
    try:
        ino = os.stat(partial).st_ino
    except FileNotFoundError:
        ino = None
    if ino != dir_ino:
        raise StoreCommitError(f"{lost} was removed or replaced by another process while it was written")
    for rel, entry in [(ZARR_JSON, None), *files.items()]:
        st = lstat_inside(partial, rel, what=lost)
        if st is None or (entry is not None and st.st_size != entry["bytes"]):
            size = "missing" if st is None else f"{st.st_size} bytes, expected {entry['bytes']}"
            raise StoreCommitError(f"{lost} lost a file: {rel} is {size}")
        if rel in inodes and st.st_ino != inodes[rel]:
            raise StoreCommitError(f"{lost}: {rel} was replaced by another process while it was written")
