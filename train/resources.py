"""What a run needs of the machine, checked before it takes it: memory for the SAEs and their optimizer, disk
for its checkpoints and outputs. A refusal is a ResourceError naming the estimate and what is available.

Memory, per SAE of the sweep (float32, P = its parameter count: W_enc, W_dec, b_enc, b_dec, θ): parameters,
gradients and Adam's two moments, 16·P bytes on the device; then the largest transient of a step:
  - a training step: about TEMPS_PER_ROW[arch] [batch, d_sae] float32 tensors per SAE stepping at once
    (pre-activations, activations, their gradients, masks: counted from the peak RSS of CPU steps);
  - a held-out evaluation: about EVAL_TEMPS [EVAL_CHUNK, d_sae] tensors;
  - a checkpoint (host memory): a CPU copy of parameters and moments, and safetensors' bytes of it, 24·P bytes;
plus the held-out tokens (eval_tokens × d_in floats). Available: psutil's available memory on CPU,
torch.cuda.mem_get_info's free memory on CUDA.

Disk: a checkpoint holds parameters and moments (12·P bytes) and two int64 counters per latent of each SAE,
plus the reader's slot table (8 bytes a buffer slot); replacing it needs room for two copies (os.replace of a
complete new file: the old one stays the resume point until then). At the end the SAE weights (4·P bytes a
SAE), curves and metrics are written while the last checkpoint is still there.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from fastsae.errors import ResourceError
from fastsae.train.config import TrainError, total_steps

TEMPS_PER_ROW = {"jumprelu": 5, "standard": 6, "topk": 6, "batchtopk": 7}
EVAL_TEMPS = 5
EVAL_CHUNK = 8192  # rows per chunk of saes.heldout_metrics
SMALL_FILES = 256 * 1024  # per SAE: curves.png, cfg.json, fastsae.json; per run: run.json, the RNG state
METRICS_LINE = 512  # bytes of a metrics.jsonl line, rounded up


class NotEnoughMemoryError(TrainError, ResourceError):
    """The SAEs and their optimizer would not fit in the device's memory."""


class DiskFullError(TrainError, ResourceError):
    """Not enough disk for the run's outputs (up front), or the disk filled up during the run."""


def num_params(spec) -> int:
    d, s = spec.d_in, spec.d_sae
    return 2 * d * s + s + d + (s if spec.arch == "jumprelu" else 0)


def memory_needed(plan, *, workers: int, host: bool) -> int:
    """Bytes of device memory the sweep of ``plan`` needs at its peak (see the module doc); ``host``: the device
    is the CPU, which also holds the checkpoint's copy."""
    c = plan.cfg
    params = sum(num_params(s) for s in plan.specs)
    temps = sorted(TEMPS_PER_ROW[s.arch] * c.batch_size * s.d_sae * 4 for s in plan.specs)
    step = sum(temps[-max(1, workers) :])  # the largest SAEs stepping at once
    held = heldout_tokens(plan)
    evaluation = max(EVAL_TEMPS * min(EVAL_CHUNK, held) * s.d_sae * 4 for s in plan.specs)
    checkpoint = 24 * params if host else 0
    return 16 * params + max(step, evaluation, checkpoint) + held * plan.specs[0].d_in * 4


def heldout_tokens(plan) -> int:
    """Tokens of the held-out evaluation: its sequences (the reader's seeded choice), up to --eval-tokens."""
    from fastsae.train.selection import pick_holdout

    s = plan.store
    held = pick_holdout(s.num_sequences, plan.cfg.seed, fraction=plan.cfg.holdout)
    lengths = s.seq_offsets[held + 1] - s.seq_offsets[held]
    return int(min(plan.cfg.eval_tokens, lengths.sum()))


def memory_available(device) -> int:
    if device.type == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    import psutil

    return int(psutil.virtual_memory().available)


def check_memory(plan, device, *, workers: int) -> None:
    """Refuses a sweep whose estimate exceeds the device's available memory, before anything is allocated."""
    need, have = memory_needed(plan, workers=workers, host=device.type == "cpu"), memory_available(device)
    if need <= have:
        return
    c = plan.cfg
    biggest = max(plan.specs, key=num_params)
    raise NotEnoughMemoryError(
        f"the sweep needs about {gb(need)} of memory on {device} and {gb(have)} is available: "
        f"{len(plan.specs)} SAE{'s' if len(plan.specs) > 1 else ''} of up to d_sae {biggest.d_sae:,} "
        f"(d_in {biggest.d_in} × --expansion {biggest.d_sae // biggest.d_in}; {gb(16 * num_params(biggest))} for "
        f"its weights, gradients and Adam states) and [--batch-size {c.batch_size}, d_sae] step temporaries; "
        "use a smaller --expansion, --batch-size or sweep"
    )


def checkpoint_bytes(plan) -> int:
    """An upper estimate of the size of the run's checkpoint file."""
    c = plan.cfg
    sae = sum(12 * num_params(s) + 3 * 8 * s.d_sae for s in plan.specs)
    return sae + 8 * c.buffer_tokens + SMALL_FILES


def output_bytes(plan) -> int:
    """The SAE folders at the end: weights, curves, configs and metrics lines."""
    c = plan.cfg
    steps = total_steps(c)
    lines = (
        steps // c.log_every
        + (steps // c.eval_every if c.eval_every else 1)
        + steps // c.feature_sampling_window
    )
    return sum(4 * num_params(s) + SMALL_FILES + METRICS_LINE * (lines + 2) for s in plan.specs)


def disk_needed(plan) -> tuple[int, int]:
    """(bytes the run still needs free in --out, the checkpoint's size)."""
    ckpt = checkpoint_bytes(plan)
    existing = plan.checkpoint_path.stat().st_size if plan.checkpoint_path.exists() else 0
    return max(0, 2 * ckpt + output_bytes(plan) - existing), ckpt


def free_bytes(path: Path) -> int:
    """Free bytes on the file system of ``path`` (its nearest existing folder)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def check_disk(plan) -> None:
    """Refuses a run whose outputs and checkpoint replaces would not fit on the disk of --out."""
    need, ckpt = disk_needed(plan)
    have = free_bytes(plan.out)
    if need <= have:
        return
    raise DiskFullError(
        f"--out {plan.out}: {mb(have)} free on its disk, the run needs about {mb(need)}: room for two copies of "
        f"its {mb(ckpt)} checkpoint (a replace writes the new one beside the last good one) and the SAE folders "
        f"({mb(output_bytes(plan))}); free space or choose another --out"
    )


def is_disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full_error(e: OSError, plan, *, saved_step: int | None) -> DiskFullError:
    """One line for a disk that filled up during the run: the path, the space needed, what is kept."""
    need, _ = disk_needed(plan)
    where = e.filename or plan.out
    kept = (
        f"the last good checkpoint (step {saved_step}) is kept: free space and rerun the same command to resume"
        if saved_step
        else "no checkpoint was written yet: free space and rerun the same command"
    )
    return DiskFullError(
        f"no space left on device writing {where}: {mb(free_bytes(plan.out))} free, the run needs about "
        f"{mb(need)} more in --out {plan.out}; {kept}"
    )


def gb(n: int) -> str:
    return f"{n / 1e9:,.1f} GB"


def mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"
