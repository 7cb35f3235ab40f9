"""Pure torch reference of both ops: the definition the fast paths are tested against.

JumpReLU with straight-through threshold gradients (rect kernel of width ε around θ):

    z = x @ W_enc + b_enc                   # [N, d_sae]
    acts = z * 1[z > θ]                     # dacts/dz = 1[z > θ]
    l0 = Σ_j 1[z > θ]                       # no gradient to z
    dacts/dθ = -(θ/ε) · rect((z-θ)/ε),  dl0/dθ = -(1/ε) · rect((z-θ)/ε),  rect(u) = 1[|u| < 1/2]

Everything is written the plain way (full z kept for the backward, dense matmuls); it is slow by design.
The rect test is |z - θ| < ε/2 evaluated in float32, exactly as the kernels evaluate it.
"""

from __future__ import annotations

import torch


def rect_band(z: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """1[|z - θ| < ε/2] as bool [N, d_sae], in float32 arithmetic (the definition all paths share)."""
    half = torch.tensor(0.5 * bandwidth, dtype=torch.float32)
    return (z.float() - threshold.float()).abs() < half


class JumpReLUReference(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W_enc, b_enc, threshold, bandwidth: float):
        z = x @ W_enc + b_enc  # [N, d_sae]
        active = z > threshold
        acts = z * active
        l0 = active.sum(-1).to(x.dtype)  # [N]
        ctx.save_for_backward(x, W_enc, threshold, z)
        ctx.bandwidth = bandwidth
        return acts, l0

    @staticmethod
    def backward(ctx, grad_acts, grad_l0):
        x, W_enc, threshold, z = ctx.saved_tensors
        eps = ctx.bandwidth
        active = z > threshold
        band = rect_band(z, threshold, eps).float()  # [N, d_sae]
        g_acts = torch.zeros_like(z) if grad_acts is None else grad_acts
        g_l0 = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device) if grad_l0 is None else grad_l0
        grad_z = g_acts * active
        per_entry = threshold.float() * g_acts.float() + g_l0.float()[:, None]  # [N, d_sae]
        grad_threshold = (-(band * per_entry).sum(0) / eps).to(threshold.dtype)
        grad_x = grad_z @ W_enc.t()
        grad_W_enc = x.t() @ grad_z
        grad_b_enc = grad_z.sum(0)
        return grad_x, grad_W_enc, grad_b_enc, grad_threshold, None


def jumprelu_encode_reference(x, W_enc, b_enc, threshold, bandwidth: float = 0.001):
    """Reference JumpReLU encoder: returns (acts [N, d_sae], l0 [N])."""
    return JumpReLUReference.apply(x, W_enc, b_enc, threshold, float(bandwidth))


def sae_decode_reference(acts, W_dec, b_dec):
    """Reference decoder: acts @ W_dec + b_dec (plain autograd gives every gradient)."""
    return acts @ W_dec + b_dec
