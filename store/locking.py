"""Writer locks and the cleanup of partial shards: a writer never removes another live writer's work.

A ShardWriter of writer ``w`` holds an exclusive flock(2) on ``<root>/.writer-<w>.lock`` from before it
creates its ``.partial-*`` directory until that directory is committed (renamed) or removed. The kernel
drops the lock when the process dies, so "the lock can be taken" proves that no live process is filling a
partial of writer ``w``: only then does ``clean_partial`` remove them. The holder unlinks the lock file
before it lets go, and a lock counts only if the file it locked is still the one at the path, so a lock
file exists only while its writer is alive (or after a kill, until the next clean_partial).
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import time
from pathlib import Path

from .errors import StoreBusyError
from .format import PARTIAL_RE, list_partials, writer_lock_name

LOCK_WAIT_SECONDS = 30.0  # a cleaner holds a writer's lock only while it removes that writer's leftovers
_POLL_SECONDS = 0.02
# errnos of file systems that have no working flock: locking is then skipped, and no one else's partial is
# ever removed (it cannot be proven dead)
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL, errno.EBADF}


class WriterLock:
    """An exclusive lock on one writer id of one store. ``held`` is False where the file system has no locks."""

    def __init__(self, root: str | os.PathLike, writer: int):
        self.path = Path(root) / writer_lock_name(writer)
        self.writer = writer
        self._fd: int | None = None
        self.supported = True

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Takes the lock if it is free; True if taken, or if this file system cannot lock (``supported``)."""
        for _ in range(100):  # the file was unlinked by its last holder between our open and flock: again
            if self._fd is not None:
                return True
            taken = self._try_once()
            if taken is not None:
                return taken
        return False

    def _try_once(self) -> bool | None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            if e.errno in _UNSUPPORTED or e.errno in (errno.EROFS, errno.EACCES):
                self.supported = False
                return True
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as e:
            os.close(fd)
            if e.errno in _UNSUPPORTED:
                self.supported = False
                return True
            raise
        try:
            current = os.stat(self.path).st_ino
        except FileNotFoundError:
            current = None
        if current != os.fstat(fd).st_ino:  # its holder unlinked it before letting go: lock the new one
            os.close(fd)
            return None
        self._fd = fd
        return True

    def acquire(self, *, wait: float | None = None) -> None:
        """Takes the lock, waiting up to ``wait`` seconds (LOCK_WAIT_SECONDS); StoreBusyError after that."""
        deadline = time.monotonic() + (LOCK_WAIT_SECONDS if wait is None else wait)
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                raise StoreBusyError(
                    f"store {self.path.parent}: writer {self.writer} is in use by another live process "
                    f"(it holds {self.path.name}); two runs must not share one writer id"
                )
            time.sleep(_POLL_SECONDS)

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.unlink(self.path)  # while still held: whoever locks the old file next sees it is gone
            except OSError:
                pass
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __del__(self) -> None:
        self.release()


def clean_partial(root: str | os.PathLike, *, writer: int | None = None) -> list[Path]:
    """Delete the ``.partial-*`` shard directories of writers proven dead (their lock can be taken); returns
    what was removed. A live writer's partial is left alone. ``writer``: the caller's own writer id, whose
    leftovers are removed even on a file system without locks (the caller asserts no other run uses it)."""
    root = Path(root)
    if not root.is_dir():
        return []
    by_writer: dict[int, list[Path]] = {}
    for p in list_partials(root):
        m = PARTIAL_RE.match(p.name)
        if m:  # anything else under the prefix is not ours to remove
            by_writer.setdefault(int(m.group(1)), []).append(p)
    removed = []
    for w, paths in sorted(by_writer.items()):
        lock = WriterLock(root, w)
        if not lock.try_acquire():
            continue  # alive: a ShardWriter of writer w is filling one of these right now
        try:
            if not lock.supported and w != writer:
                continue  # no locks here: only the caller's own leftovers are known to be dead
            for p in paths:
                if not os.path.lexists(p):  # committed or aborted after it was listed
                    continue
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed.append(p)
        finally:
            lock.release()
    return removed
