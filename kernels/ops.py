"""The public entry points: check inputs, pick the backend for these tensors, apply its autograd Function."""

from __future__ import annotations

import torch

from .checks import DECODE_SHAPES, ENCODE_SHAPES, check_bandwidth, check_tensors
from .dispatch import backend_for
from .torch_path import DecodeTorch, JumpReLUTorch
from .torch_plan import ActsPlan


def jumprelu_encode(
    x: torch.Tensor,  # [N, d_in]
    W_enc: torch.Tensor,  # [d_in, d_sae]
    b_enc: torch.Tensor,  # [d_sae]
    threshold: torch.Tensor,  # [d_sae], > 0
    bandwidth: float = 0.001,
) -> tuple[torch.Tensor, torch.Tensor]:
    """JumpReLU encoder: (acts [N, d_sae], l0 [N]) with straight-through threshold gradients.

    z = x @ W_enc + b_enc; acts = z·1[z > θ]; l0 = Σ_j 1[z > θ] (float, like x). All inputs share one
    float dtype and device. Gradients: those of kernels/reference.py, exact at every entry.
    """
    return apply_jumprelu(x, W_enc, b_enc, threshold, bandwidth, share_plan=False)


def apply_jumprelu(x, W_enc, b_enc, threshold, bandwidth: float, *, share_plan: bool):
    """jumprelu_encode; share_plan (kernels/training.py only) attaches the torch path's plan to acts."""
    op = "jumprelu_encode"
    check_tensors(op, {"x": x, "W_enc": W_enc, "b_enc": b_enc, "threshold": threshold}, ENCODE_SHAPES)
    bw = check_bandwidth(op, bandwidth)
    if backend_for(op, x.device) == "triton":
        from .encode import JumpReLUTriton  # triton is imported only when used

        return JumpReLUTriton.apply(x, W_enc, b_enc, threshold, bw)
    return JumpReLUTorch.apply(x, W_enc, b_enc, threshold, bw, share_plan)


def sae_decode(
    acts: torch.Tensor,  # [N, d_sae]
    W_dec: torch.Tensor,  # [d_sae, d_in]
    b_dec: torch.Tensor,  # [d_in]
) -> torch.Tensor:
    """x_hat = acts @ W_dec + b_dec  [N, d_in]; reads only the active rows of W_dec when acts are sparse.
    Its gradients are exact at every entry, grad_acts included (zero entries of acts too)."""
    return apply_decode(acts, W_dec, b_dec, shared_plan=False)


def apply_decode(acts, W_dec, b_dec, *, shared_plan: bool):
    """sae_decode; shared_plan (kernels/training.py only) uses the plan an encoder attached to acts and then
    computes grad_acts only where that encoder's backward reads it (kernels/torch_plan.py)."""
    op = "sae_decode"
    check_tensors(op, {"acts": acts, "W_dec": W_dec, "b_dec": b_dec}, DECODE_SHAPES)
    if backend_for(op, acts.device) == "triton":
        from .decode import DecodeTriton

        return DecodeTriton.apply(acts, W_dec, b_dec)
    return DecodeTorch.apply(acts, W_dec, b_dec, shared_plan)


def feature_counts(acts: torch.Tensor) -> torch.Tensor:
    """[d_sae] int64: in how many rows of acts [N, d_sae] each feature is nonzero (no gradient).

    From the sparse plan the training op's encoders attach (a bincount of its columns), else one float pass
    (sign): `(acts > 0).sum(0)` materialises an int64 copy of the whole matrix on CPU, slower than either
    (benchmarks/cpu_ops.py feature_counts).
    """
    plan = ActsPlan.of(acts)
    if plan is not None:
        return torch.bincount(plan.cols, minlength=acts.shape[1])
    return acts.detach().sign().abs_().sum(0).to(torch.int64)


__all__ = ["jumprelu_encode", "sae_decode", "feature_counts"]
