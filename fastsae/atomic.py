"""The one atomic-write helper: a file is either its old content or its whole new content, never half.

Ground floor (like fastsae.errors): every stage may import it. The temporary name is unique per process
and thread, in the target's folder (same file system, so os.replace is atomic), and removed on failure.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on any error it is removed.

    For writers that want a file name (safetensors, matplotlib, numpy) rather than a file object.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if fsync:
        fsync_dir(path.parent)


def write_atomic(
    path: str | os.PathLike, data: str | bytes | Callable[[Path], None], *, fsync: bool = True
) -> Path:
    """Write text, bytes, or whatever `data(tmp_path)` writes, to `path` atomically."""
    with atomic_path(path, fsync=fsync) as tmp:
        if callable(data):
            data(tmp)
        elif isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj, *, fsync: bool = True, **dump_kw) -> Path:
    """json.dumps(obj, indent=2) plus a newline, written atomically."""
    dump_kw.setdefault("indent", 2)
    return write_atomic(path, json.dumps(obj, **dump_kw) + "\n", fsync=fsync)


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable; best effort where a directory cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms that cannot open a directory: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
