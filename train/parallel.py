"""Training under torchrun: the SAEs of a sweep spread over the ranks, or every rank a part of each batch.

sweep (default when the sweep has at least one SAE per rank): rank r trains a contiguous run of the sweep's
SAEs on the whole stream (every rank reads each batch once, in the same mixing order). Nothing is exchanged
in a step; rank 0 gathers the other ranks' metrics lines when it writes them, their states when it writes the
checkpoint (one file, the same layout as a one-process run's, so a run resumes with any number of ranks), and
their weights at the end. An SAE equals the one a one-process sweep trains (bitwise on the CPU).

data: every rank holds every SAE and takes rank r's rows of each global batch (the same mixing order; the reader
gathers, decodes and uploads only those rows: ActivationReader's ``part``); after
the backward passes one all-reduce per step averages the gradients and sums the feature counts (DDP's
gradient averaging, flattened into one buffer), so the replicas stay equal and the dead-feature bookkeeping
sees the whole batch. The SAEs equal a one-process run's within float tolerance (BatchTopK picks its k·N
largest per rank's rows). Rank 0 evaluates and writes.

One process (WORLD_SIZE unset or 1) is the identity everywhere. Only rank 0 writes into --out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fastsae.lm.distributed import Ranks, any_rank, broadcast_object, gather_objects, init_ranks
from fastsae.train.config import TrainConfigError

MODES = ("auto", "sweep", "data")


@dataclass
class Parallel:
    ranks: Ranks = field(default_factory=Ranks)
    mode: str = "sweep"
    local: list[int] = field(default_factory=list)  # the sweep indices of the SAEs this rank trains
    counts: list[int] = field(default_factory=list)  # SAEs per rank (sweep mode)

    @classmethod
    def start(cls, cfg, n_saes: int, device) -> Parallel:
        """Starts the process group under torchrun and decides who trains what."""
        return cls.plan(cfg, n_saes, init_ranks(device))

    @classmethod
    def plan(cls, cfg, n_saes: int, ranks: Ranks) -> Parallel:
        """Who trains what (`cfg.parallel` resolved); a mode the sweep cannot use is a TrainConfigError."""
        w = ranks.world_size
        mode = cfg.parallel if cfg.parallel != "auto" else ("sweep" if n_saes >= w else "data")
        if w == 1:
            return cls(ranks, mode, list(range(n_saes)), [n_saes])
        if mode == "sweep":
            if n_saes < w:
                raise TrainConfigError(
                    f"--parallel sweep: {n_saes} SAEs for {w} ranks leaves a rank without one; use --parallel data"
                )
            bounds = [r * n_saes // w for r in range(w + 1)]
            counts = [bounds[r + 1] - bounds[r] for r in range(w)]
            return cls(ranks, mode, list(range(bounds[ranks.rank], bounds[ranks.rank + 1])), counts)
        if cfg.batch_size % w:
            raise TrainConfigError(
                f"--parallel data: --batch-size {cfg.batch_size} does not split evenly over {w} ranks"
            )
        return cls(ranks, mode, list(range(n_saes)), [n_saes] * w)

    @property
    def main(self) -> bool:
        return self.ranks.main

    @property
    def data(self) -> bool:
        return self.ranks.distributed and self.mode == "data"

    @property
    def sweep(self) -> bool:
        return self.ranks.distributed and self.mode == "sweep"

    def describe(self) -> str:
        r = self.ranks
        if not r.distributed:
            return ""
        if self.data:
            return f"data-parallel over {r.world_size} ranks (each {100 // r.world_size}% of every batch)"
        return f"sweep-parallel over {r.world_size} ranks ({'+'.join(map(str, self.counts))} SAEs)"

    # ------------------------------------------------------------------ the step (data mode only)
    @property
    def part(self) -> tuple[int, int]:
        """(r, w): the reader gives this rank rows [r * B / w, (r + 1) * B / w) of each global batch of B (data
        mode; (0, 1), the whole batch, otherwise)."""
        return (self.ranks.rank, self.ranks.world_size) if self.data else (0, 1)

    def before_step(self, sae) -> torch.Tensor | None:
        """AuxK's counter before this step (data mode: it is recomputed from the whole batch after)."""
        if self.data and hasattr(sae, "tokens_since_fired"):
            return sae.tokens_since_fired.clone()
        return None

    def all_reduce(self, saes, counts: list[torch.Tensor], before: list, rows: int) -> list[torch.Tensor]:
        """Data mode: average every SAE's gradients and sum its feature counts over the ranks, in one
        all-reduce; AuxK's counters and BatchTopK's threshold follow the whole batch. Returns the counts."""
        if not self.data:
            return counts
        import torch.distributed as dist

        w = self.ranks.world_size
        grads = [p.grad for sae in saes for p in sae.parameters() if p.grad is not None]
        extras = [sae.topk_threshold.reshape(1) for sae in saes if hasattr(sae, "topk_threshold")]
        parts = [g.reshape(-1) for g in grads] + list(counts) + extras  # counts exact in float32 below 2^24
        flat = torch.cat([p.to(torch.float32) for p in parts])
        dist.all_reduce(flat)
        sizes = [p.numel() for p in parts]
        chunks = list(torch.split(flat, sizes))
        for g in grads:
            g.copy_(chunks.pop(0).view_as(g) / w)
        summed = [chunks.pop(0).round().to(c.dtype) for c in counts]
        with torch.no_grad():
            for sae in saes:
                if hasattr(sae, "topk_threshold"):
                    sae.topk_threshold.copy_(chunks.pop(0).reshape(()) / w)
            for sae, old, total in zip(saes, before, summed, strict=True):
                if (
                    old is not None
                ):  # the one-process rule over the whole batch: + its rows, 0 where any fired
                    sae.tokens_since_fired.copy_((old + rows).masked_fill_(total > 0, 0))
        return summed

    def reduce_stats(self, hist: torch.Tensor, ok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data mode: the per-step statistics averaged over the ranks (each saw as many rows), batch checks
        anded; every rank then checks (and logs) the same values."""
        if not self.data:
            return hist, ok
        import torch.distributed as dist

        hist = hist.clone()
        dist.all_reduce(hist)
        bad = (~ok).to(torch.int32)
        dist.all_reduce(bad)
        return hist / self.ranks.world_size, bad == 0

    def reduce_mean(self, value: torch.Tensor) -> torch.Tensor:
        if not self.data:
            return value
        import torch.distributed as dist

        value = value.clone()
        dist.all_reduce(value)
        return value / self.ranks.world_size

    # ------------------------------------------------------------------ between steps
    def stop_now(self, received: bool, step: int, log_every: int) -> bool:
        """A stop signal, agreed by every rank: under torchrun checked once per --log-every steps, so all ranks
        stop (and checkpoint) at the same step."""
        if not self.ranks.distributed:
            return received
        if step % max(1, log_every):
            return False
        return any_rank(received, self.ranks)

    def decide(self, value):
        """Rank 0's decision (fresh run or resume) on every rank."""
        return broadcast_object(value, self.ranks)

    def collect(self, records: list | None) -> list | None:
        """Per-SAE records in sweep order on rank 0 (None on the others)."""
        if self.sweep:
            parts = gather_objects(records, self.ranks)
            return None if parts is None else [r for part in parts for r in part]
        return records if self.main else None

    def evaluates(self) -> bool:
        """Whether this rank computes held-out metrics (data mode: rank 0 alone; its replicas are the same)."""
        return not self.data or self.main

    # ------------------------------------------------------------------ checkpoints and the end
    def merge_state(self, state: dict) -> dict | None:
        """Sweep mode: the ranks' states as one one-process state on rank 0 (None on the others)."""
        if not self.sweep:
            return state if self.main else None
        parts = gather_objects(_to_cpu(state), self.ranks)
        if parts is None:
            return None
        merged = dict(parts[0])
        for key in ("saes", "since_fired", "fire_count"):
            merged[key] = [v for p in parts for v in p[key]]
        refs = [p["mse_references"] for p in parts]
        merged["mse_references"] = None if any(r is None for r in refs) else [v for r in refs for v in r]
        merged["pending_stats"] = torch.cat([p["pending_stats"] for p in parts], dim=1)
        merged["optimizer"] = _merge_optimizer([p["optimizer"] for p in parts])
        return merged

    def select_state(self, state: dict) -> dict:
        """Sweep mode: this rank's SAEs out of a whole-sweep state (a checkpoint written by any world size)."""
        if not self.sweep:
            return state
        mine = dict(state)
        for key in ("saes", "since_fired", "fire_count"):
            mine[key] = [state[key][i] for i in self.local]
        if state.get("mse_references") is not None:
            mine["mse_references"] = [state["mse_references"][i] for i in self.local]
        pending = state.get("pending_stats")
        if pending is not None and len(pending):
            mine["pending_stats"] = pending[:, self.local]
        mine["optimizer"] = _select_optimizer(state["optimizer"], self.local)
        return mine

    def gather_weights(self, saes) -> list[dict] | None:
        """Sweep mode: every SAE's state dict in sweep order on rank 0."""
        mine = [{k: v.detach().cpu() for k, v in sae.state_dict().items()} for sae in saes]
        if not self.sweep:
            return mine if self.main else None
        parts = gather_objects(mine, self.ranks)
        return None if parts is None else [sd for part in parts for sd in part]


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


def _merge_optimizer(parts: list[dict]) -> dict:
    """Adam state dicts of consecutive SAE groups -> one, parameters renumbered in sweep order."""
    return _renumbered((group, part["state"]) for part in parts for group in part["param_groups"])


def _select_optimizer(full: dict, local: list[int]) -> dict:
    """The groups of SAEs `local` out of a whole-sweep Adam state dict, renumbered from 0."""
    return _renumbered((full["param_groups"][i], full["state"]) for i in local)


def _renumbered(groups_and_states) -> dict:
    """One Adam state dict of these (param group, state by param id) pairs, param ids renumbered from 0."""
    groups, state, offset = [], {}, 0
    for group, old in groups_and_states:
        ids = []
        for pid in group["params"]:
            if pid in old:
                state[offset] = old[pid]
            ids.append(offset)
            offset += 1
        groups.append({**group, "params": ids})
    return {"state": state, "param_groups": groups}
