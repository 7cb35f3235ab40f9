"""How a harvest stops early: SIGTERM (what clusters send before they kill a job) and a full disk.

Both end the way Ctrl-C does: the open shard is dropped, committed shards stay, and the same command
run again resumes with a result equal to an uninterrupted run's. SIGTERM raises HarvestTerminated in
the main thread (a KeyboardInterrupt, so every cleanup written for Ctrl-C runs, and no `except
Exception` swallows it); the CLI exits 143 (128 + SIGTERM). A full disk becomes one HarvestDiskFullError
line naming the path, the free space and the space one shard needs.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

from fastsae.errors import ResourceError
from fastsae.harvest.config import HarvestConfig, HarvestError

SIGTERM_EXIT = 128 + signal.SIGTERM
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


class HarvestTerminated(KeyboardInterrupt):
    """SIGTERM arrived: raised in the main thread so the harvest cleans up as it does on Ctrl-C."""

    exit_code = SIGTERM_EXIT
    committed: int | None = None  # sequences in the store's committed shards of this writer, when known


class HarvestDiskFullError(HarvestError, ResourceError):
    """The file system of --out is full (or over quota); committed shards are kept."""


@contextmanager
def sigterm_interrupts():
    """Within: the first SIGTERM raises HarvestTerminated in the main thread; later ones do not cut the cleanup
    short. Outside the main thread (signals cannot be caught there) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def handler(signum, frame):
        nonlocal fired
        if not fired:
            fired = True
            raise HarvestTerminated("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


class DiskGuard:
    """Turns a full disk under the `with` block into one HarvestDiskFullError line. Set `bytes_per_token`
    (activations of every layer plus the token's id and type) once the model is known."""

    def __init__(self, cfg: HarvestConfig):
        self.out = Path(cfg.out)
        self.shard_tokens = cfg.shard_tokens
        self.bytes_per_token: int | None = None

    def __enter__(self) -> DiskGuard:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            raise HarvestDiskFullError(self.message(exc)) from None
        return False

    def message(self, exc: OSError) -> str:
        path = Path(exc.filename) if exc.filename else self.out  # a write(2) that fails names no file
        where = next((p for p in (path, *path.parents) if p.exists()), Path("."))
        try:
            free = f"{_mib(shutil.disk_usage(where).free)} free"
        except OSError:
            free = "free space unknown"
        shards = [p for p in self.out.glob("shard-*.zarr") if p.is_dir()] if self.out.is_dir() else []
        if shards:  # what shards of this store really take, file system overhead included
            each = sum(_disk_bytes(p) for p in shards) // len(shards)
            need = f"; each shard takes about {_mib(each)} (the {len(shards)} committed average)"
        elif self.bytes_per_token:
            each = self.shard_tokens * self.bytes_per_token
            need = (
                f"; each shard takes at least {_mib(each)} (--shard-tokens {self.shard_tokens:,} x "
                f"{self.bytes_per_token:,} bytes per token)"
            )
        else:
            need = ""
        return (
            f"disk full while writing {path} ({free} now{need}); committed shards "
            "are kept: free space, then run the same command again to resume"
        )


def _disk_bytes(root: Path) -> int:
    """Bytes a directory tree takes on disk (allocated blocks, so small files count as what they cost)."""
    total = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            st = os.lstat(os.path.join(dirpath, name))
            total += max(st.st_size, getattr(st, "st_blocks", 0) * 512)
    return total
