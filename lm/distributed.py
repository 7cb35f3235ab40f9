"""Ranks under torchrun: who this process is, and the few collectives harvest and train need.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (and MASTER_ADDR/PORT for the rendezvous). A plain process
is rank 0 of 1, and nothing here starts torch.distributed for it: every helper is then the identity. With
WORLD_SIZE > 1, ``init_ranks(device)`` starts the process group once: gloo for the CPU, nccl for CUDA
(whose object collectives then run through this rank's own GPU). Ranks other than 0 then log warnings
and errors only; fastsae/cli.py prefixes each line with its rank.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass

from fastsae.errors import UsageError
from fastsae.lm.devices import _env_int

# Rank 0 may tokenise a whole dataset, or save a sweep's checkpoint, while the others wait in a collective:
# torch's default timeout (10 to 30 min) would end a healthy run.
TIMEOUT = datetime.timedelta(hours=6)
_started = False  # whether init_ranks started the process group (close_ranks ends only that one)


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def ranks_from_env() -> Ranks:
    """RANK, WORLD_SIZE, LOCAL_RANK from the environment (torchrun's), else rank 0 of 1."""
    world = _env_int("WORLD_SIZE") or 1
    rank = _env_int("RANK") or 0
    local = _env_int("LOCAL_RANK")
    if world < 1 or not 0 <= rank < world:
        raise UsageError(f"environment RANK={rank}, WORLD_SIZE={world}: need 0 <= RANK < WORLD_SIZE")
    return Ranks(rank=rank, world_size=world, local_rank=rank if local is None else local)


def init_ranks(device) -> Ranks:
    """This process's Ranks; starts the process group (once) when WORLD_SIZE > 1."""
    ranks = ranks_from_env()
    if not ranks.distributed:
        return ranks
    if not ranks.main:  # rank 0 speaks for the run: the others show warnings and errors only
        log = logging.getLogger("fastsae")
        log.setLevel(max(log.getEffectiveLevel(), logging.WARNING))
    import torch
    import torch.distributed as dist

    global _started
    if not dist.is_initialized():
        _started = True
        cuda = getattr(device, "type", str(device)).startswith("cuda")
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    if dist.get_world_size() != ranks.world_size or dist.get_rank() != ranks.rank:
        raise UsageError(
            f"torch.distributed is rank {dist.get_rank()} of {dist.get_world_size()}, the environment says "
            f"{ranks.rank} of {ranks.world_size}"
        )
    return ranks


def close_ranks() -> None:
    """Ends the process group init_ranks started (a no-op for one process, or a group started by the caller)."""
    global _started
    if not _started:
        return
    import torch.distributed as dist

    _started = False
    if dist.is_initialized():
        dist.destroy_process_group()


def scatter_objects(objects: list | None, ranks: Ranks):
    """Rank 0's objects[r] -> rank r (pickled); ``objects`` is read on rank 0 only."""
    if not ranks.distributed:
        return objects[0]
    import torch.distributed as dist

    out = [None]
    dist.scatter_object_list(out, objects if ranks.main else None, src=0)
    return out[0]


def gather_objects(obj, ranks: Ranks) -> list | None:
    """Every rank's ``obj`` -> the list in rank order on rank 0 (None on the others)."""
    if not ranks.distributed:
        return [obj]
    import torch.distributed as dist

    out = [None] * ranks.world_size if ranks.main else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_object(obj, ranks: Ranks):
    """Rank 0's ``obj`` on every rank."""
    if not ranks.distributed:
        return obj
    import torch.distributed as dist

    box = [obj if ranks.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flag: bool, ranks: Ranks) -> bool:
    """True on every rank when ``flag`` is True on any (one small all-reduce)."""
    if not ranks.distributed:
        return flag
    import torch
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        import torch.distributed as dist

        dist.barrier()


def _comm_device():
    """The device the process group's tensors live on: this rank's GPU for nccl, else the CPU."""
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
