"""Host allocator setting for CPU training: keep freed memory for reuse instead of handing it back to the OS.

Every CPU train step allocates a few [batch, d_sae] float32 temporaries (pre-activations, grad_acts; 75 MB
each at 4096 x 4608) and frees them again. glibc serves blocks above its mmap threshold (at most 32 MiB) with
a fresh mmap each time, so every step page-faults and zero-fills them anew, several times a step; reused heap
memory skips that (benchmarks/cpu_ops.py host_block).
PyTorch's CPU tuning guide swaps in jemalloc/tcmalloc for this; with plain glibc the same effect is two
mallopt calls: serve all blocks from the heap (M_MMAP_MAX = 0) and never trim it (M_TRIM_THRESHOLD). Freed
memory then stays in the process (its RSS stays at its peak) and the next step reuses it.

The setting is process-wide and stays for the life of the process, which is why it is a config field
(``reuse_host_memory``) applied by the training run, not something importing fastsae does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_MAX = -4
_applied = False


def reuse_freed_host_memory(*, force: bool = False) -> bool:
    """Make glibc keep freed blocks for reuse (see the module doc). True when in effect (glibc only).
    ``force``: set it again even if done before (after something else changed glibc's settings)."""
    global _applied
    if _applied and not force:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; 2**31 - 1: effectively "never trim the heap top"
    _applied = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
    return _applied
