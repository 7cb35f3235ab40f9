"""Backend choice, made at call time (the env may change after import, e.g. in tests).

FASTSAE_KERNELS = auto (default) | torch | triton
    auto: Triton for CUDA tensors, the torch path otherwise.
    triton: Triton everywhere; on CPU tensors this needs TRITON_INTERPRET=1 (the interpreter). Triton itself
    reads TRITON_INTERPRET once, when its kernels are decorated (the first Triton call here imports them), so
    set it before that; the launchers then follow the kernels' actual mode.
FASTSAE_KERNELS_SPARSE = auto (default) | always | never
    Whether the decoder and the backward passes use the gather (sparse) kernels or dense matmuls;
    auto decides from the measured density of the batch against the cut-offs below.
"""

from __future__ import annotations

import os

import torch

from .checks import KernelBackendError, KernelDeviceError

# Density (nonzero fraction of acts) at or below which the gather path is used; how each was found and the
# commands that measure them: benchmarks/README.md, "Sparse vs dense cut-offs".
# CPU (torch path): near where a train step's gather and dense paths cross (benchmarks/train_step.py).
CPU_SPARSE_MAX_DENSITY = 0.10
# GPU (Triton path): a roofline estimate (gather traffic vs dense tensor-core matmul), not yet measured.
GPU_SPARSE_MAX_DENSITY = {torch.bfloat16: 0.004, torch.float16: 0.004, torch.float32: 0.02}


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() not in ("", "0", "false", "off")


def is_interpreted(kernel) -> bool:
    """Whether a @triton.jit kernel runs in the interpreter (Triton decides when the decorator runs)."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(kernel, InterpretedFunction)


def backend_for(op: str, device: torch.device) -> str:
    """'torch' or 'triton' for tensors on `device`."""
    choice = os.environ.get("FASTSAE_KERNELS", "auto").strip().lower() or "auto"
    if choice not in ("auto", "torch", "triton"):
        raise KernelBackendError(f"FASTSAE_KERNELS must be auto, torch or triton, got {choice!r}")
    if choice == "torch":
        return "torch"
    if choice == "auto":
        return "triton" if device.type == "cuda" else "torch"
    if device.type != "cuda" and not interpreting():
        raise KernelDeviceError(
            f"{op}: FASTSAE_KERNELS=triton needs CUDA tensors or TRITON_INTERPRET=1, got tensors on {device}"
        )
    return "triton"


def sparse_cutoff(*, dtype: torch.dtype, device: torch.device) -> float:
    """The density at or below which acts take the gather path (inf: always, -1: never)."""
    choice = os.environ.get("FASTSAE_KERNELS_SPARSE", "auto").strip().lower() or "auto"
    if choice == "always":
        return float("inf")
    if choice == "never":
        return -1.0
    if choice != "auto":
        raise KernelBackendError(f"FASTSAE_KERNELS_SPARSE must be auto, always or never, got {choice!r}")
    return GPU_SPARSE_MAX_DENSITY[dtype] if device.type == "cuda" else CPU_SPARSE_MAX_DENSITY


def use_sparse(density: float, *, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether a batch whose acts have this nonzero fraction should take the gather path."""
    return density <= sparse_cutoff(dtype=dtype, device=device)
