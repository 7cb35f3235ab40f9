"""Devices and threads, one policy for every stage, ready for torchrun.

pick_device: "auto" is CUDA when torch sees it, else the CPU; under torchrun (LOCAL_RANK set) CUDA
means cuda:LOCAL_RANK, the rank's own GPU. A device that is not there is a ResourceError, a name
torch does not know a UsageError: one line each, never a traceback.

set_threads: on the CPU torch gets the cores this process may use, shared evenly among the local
ranks when several run on one machine (LOCAL_WORLD_SIZE); on a GPU the thread count is left alone.
"""

from __future__ import annotations

import os

from fastsae.errors import ResourceError, UsageError

DEVICE_HELP = "use auto, cpu, cuda or cuda:N"


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"environment {name}={value!r} is not an integer") from None


def local_rank() -> int | None:
    """This process's rank on its machine under torchrun (LOCAL_RANK), else None."""
    return _env_int("LOCAL_RANK")


def local_world_size() -> int:
    """Processes on this machine under torchrun (LOCAL_WORLD_SIZE), else 1."""
    return max(1, _env_int("LOCAL_WORLD_SIZE") or 1)


def pick_device(name: str = "auto"):
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps' -> torch.device (see the module doc)."""
    import torch

    name = str(name).strip()
    rank = local_rank()
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        name = "cuda"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"device {name!r} is not a torch device; {DEVICE_HELP}") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a build without CUDA")
            raise ResourceError(f"device {name!r}: torch sees no CUDA device ({build}); use --device cpu")
        if device.index is None and rank is not None:
            device = torch.device("cuda", rank)
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ResourceError(f"device {str(device)!r}: this machine has {count} CUDA device(s)")
        return device
    if device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ResourceError(f"device {name!r}: torch sees no MPS device")
        return device
    raise UsageError(f"device {name!r} is not supported; {DEVICE_HELP}")


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def set_threads(threads: int = 0, device="cpu") -> int:
    """Set torch's CPU threads for a run on `device`: `threads`, or 0 for this process's share of the
    cores. Returns the thread count torch uses."""
    import torch

    if not str(device).startswith("cpu"):
        return torch.get_num_threads()
    n = threads or max(1, available_cores() // local_world_size())
    torch.set_num_threads(max(1, n))
    return n
