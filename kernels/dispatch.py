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

# Density (nonzero fraction of acts) at or below which the gather path is used.
# CPU (torch path): one train step as in benchmarks/train_step.py (2 threads, batch 4096, 8x), with
# FASTSAE_KERNELS_SPARSE=always vs never, after the CSR products became embedding_bag calls: JumpReLU d_in 576
# 5,420 vs 4,090 tok/s at density 0.08, 4,590 vs 3,430 at 0.12, even at 0.15, 3,740 vs 4,200 at 0.18;
# Standard d_in 256 at 0.12: 13,300 vs 14,400 (the dense matmuls are cheap at small d_in). Noisy machine.
CPU_SPARSE_MAX_DENSITY = 0.10
# GPU (Triton path): estimates from H100 rooflines, not yet measured: gather traffic ~ nnz·d_in elements at
# ~1.5 TB/s vs dense tensor-core matmul 2·N·d_sae·d_in FLOPs at ~500 TFLOP/s (bf16/fp16) or fp32 SIMT.
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
