"""The torch path of both ops (CPU default): same results and gradients as kernels/reference.py,
but it keeps only a compact record for the backward and uses CSR sparse products when acts are sparse.

Encoder forward keeps acts (the output, no copy) and the coordinates of the few near-threshold entries
(|z-θ| < ε/2), never the full z: 1[z > θ] == (acts != 0) because θ > 0 (acts equals z there, in z's dtype).
When the batch is sparse enough (kernels/dispatch.py) it also records the nonzero pattern of acts as an
ActsPlan attached to acts (kernels/torch_plan.py): the decoder reuses it, and computes grad_acts only where
the encoder's backward reads it (the active and band entries), so no backward product is dense.
"""

from __future__ import annotations

import torch

from .dispatch import use_sparse
from .reference import rect_band
from .torch_plan import ActsPlan, plan_from


def sparse_plan(m: torch.Tensor) -> ActsPlan | None:
    """An ActsPlan of m's nonzeros when the gather path is chosen for its density, else None."""
    # count_nonzero/nonzero on m itself: a bool mask's .sum() would materialise an int64 copy on CPU
    density = int(torch.count_nonzero(m)) / max(m.numel(), 1)
    if not use_sparse(density, dtype=m.dtype, device=m.device):
        return None
    return plan_from(m)


def _grad_threshold(threshold, band_grad_acts, grad_l0, band_rows, band_cols, eps) -> torch.Tensor:
    """-(1/ε) Σ_{n in band_j} (θ_j·grad_acts[n,j] + grad_l0[n]), accumulated in float32."""
    per = torch.zeros(band_cols.shape[0], dtype=torch.float32, device=threshold.device)
    if band_grad_acts is not None:
        per += threshold.float()[band_cols] * band_grad_acts.float()
    if grad_l0 is not None:
        per += grad_l0.float()[band_rows]
    out = torch.zeros(threshold.shape[0], dtype=torch.float32, device=threshold.device)
    out.index_add_(0, band_cols, per)
    return (out * (-1.0 / eps)).to(threshold.dtype)


def encoder_grads(ctx, plan: ActsPlan | None, acts, grad_acts, x, W_enc, band=False):
    """(grad_x, grad_W_enc, grad_b_enc, grad_acts at the band entries or None) of z = x @ W_enc + b_enc
    followed by a mask that keeps exactly the nonzeros of acts."""
    band_vals = None
    if plan is not None:
        fresh = grad_acts is plan.grad_acts and grad_acts._version == plan.grad_version
        if plan.grad_acts is not None and fresh:  # straight from sae_decode, nothing added to it
            vals, band_vals = plan.grad_vals, plan.grad_band
        else:
            vals = plan.gather(grad_acts)
            band_vals = plan.gather_band(grad_acts) if band else None
        plan.grad_acts = plan.grad_vals = plan.grad_band = None
        grad_x = plan.mm(vals, W_enc.t()) if ctx.needs_input_grad[0] else None
        grad_W_enc = plan.mm_t(vals, x).t() if ctx.needs_input_grad[1] else None  # (grad_z.T @ x).T
        grad_b_enc = plan.sum_cols(vals) if ctx.needs_input_grad[2] else None
        return grad_x, grad_W_enc, grad_b_enc, band_vals
    grad_z = grad_acts * (acts != 0)  # [N, d_sae]
    grad_x = grad_z @ W_enc.t() if ctx.needs_input_grad[0] else None
    grad_W_enc = x.t() @ grad_z if ctx.needs_input_grad[1] else None
    grad_b_enc = grad_z.sum(0) if ctx.needs_input_grad[2] else None
    return grad_x, grad_W_enc, grad_b_enc, band_vals


class JumpReLUTorch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W_enc, b_enc, threshold, bandwidth: float):
        z = torch.addmm(b_enc, x, W_enc)  # [N, d_sae]
        band_rows, band_cols = rect_band(z, threshold, bandwidth).nonzero(as_tuple=True)
        acts = z.masked_fill_(~(z > threshold), 0)  # in place: the full z is not kept
        nnz = torch.count_nonzero(acts, dim=-1)  # [N]; acts != 0 exactly where z > θ (θ > 0)
        l0 = nnz.to(x.dtype)
        plan = None
        if use_sparse(int(nnz.sum()) / max(acts.numel(), 1), dtype=acts.dtype, device=acts.device):
            plan = plan_from(acts, band_rows, band_cols)
        ctx.bandwidth = bandwidth
        ctx.plan = plan
        ctx.save_for_backward(x, W_enc, threshold, acts, band_rows, band_cols)
        if plan is not None:
            plan.attach(acts)
        return acts, l0

    @staticmethod
    def backward(ctx, grad_acts, grad_l0):
        x, W_enc, threshold, acts, band_rows, band_cols = ctx.saved_tensors
        plan, ctx.plan = ctx.plan, None
        grad_x = grad_W_enc = grad_b_enc = band_vals = None
        if grad_acts is not None:
            grad_x, grad_W_enc, grad_b_enc, band_vals = encoder_grads(
                ctx, plan, acts, grad_acts, x, W_enc, band=True
            )
            if plan is None:
                band_vals = grad_acts[band_rows, band_cols]
        grad_threshold = None
        if ctx.needs_input_grad[3]:
            grad_threshold = _grad_threshold(threshold, band_vals, grad_l0, band_rows, band_cols, ctx.bandwidth)
        return grad_x, grad_W_enc, grad_b_enc, grad_threshold, None


class DecodeTorch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, acts, W_dec, b_dec):
        plan = ActsPlan.of(acts)  # set by the encoder that produced acts, if sparse
        exact = plan is not None  # grad_acts is then needed only at its pattern and band
        if plan is None:
            plan = sparse_plan(acts)
        ctx.sparse = plan is not None
        ctx.exact, ctx.plan = exact, plan
        if plan is not None:
            vals = plan.gather(acts)
            x_hat = plan.mm(vals, W_dec) + b_dec
            ctx.save_for_backward(acts, W_dec, vals)
        else:
            x_hat = torch.addmm(b_dec, acts, W_dec)
            ctx.save_for_backward(acts, W_dec)
        return x_hat

    @staticmethod
    def backward(ctx, grad_xhat):
        acts, W_dec, *vals = ctx.saved_tensors
        plan = ctx.plan
        grad_acts = None
        if ctx.needs_input_grad[0]:
            if ctx.exact:  # only the entries the encoder's backward reads (see kernels/torch_plan.py)
                gv = plan.sddmm(grad_xhat, W_dec)
                grad_acts = torch.zeros_like(acts)
                grad_acts[plan.rows, plan.cols] = gv
                gb = None
                if plan.band_rows is not None:
                    gb = plan.sddmm(grad_xhat, W_dec, band=True)
                    grad_acts[plan.band_rows, plan.band_cols] = gb
                plan.grad_acts, plan.grad_vals, plan.grad_band = grad_acts, gv, gb
                plan.grad_version = grad_acts._version
            else:
                grad_acts = grad_xhat @ W_dec.t()
        grad_W_dec = None
        if ctx.needs_input_grad[1]:
            if plan is not None:  # acts.T @ grad_xhat needs only the active rows of W_dec
                grad_W_dec = plan.mm_t(vals[0], grad_xhat)
            else:
                grad_W_dec = acts.t() @ grad_xhat
        grad_b_dec = grad_xhat.sum(0) if ctx.needs_input_grad[2] else None
        return grad_acts, grad_W_dec, grad_b_dec
