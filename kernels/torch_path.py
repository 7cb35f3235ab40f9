"""The torch path of both ops (CPU default): same results and gradients as kernels/reference.py,
but it keeps only a compact record for the backward and uses index gathers when acts are sparse.

Encoder forward keeps acts (the output, no copy) and the coordinates of the few near-threshold entries
(|z-θ| < ε/2), never the full z: 1[z > θ] == (acts != 0) because θ > 0 (acts equals z there, in z's dtype).
"""

from __future__ import annotations

import torch

from .dispatch import use_sparse
from .reference import rect_band


def sparse_plan(m: torch.Tensor) -> tuple[bool, torch.Tensor | None, torch.Tensor | None]:
    """(use the gather path?, rows, cols of the nonzeros of m, or None when dense is chosen)."""
    # count_nonzero/nonzero on m itself: a bool mask's .sum() would materialise an int64 copy on CPU
    density = int(torch.count_nonzero(m)) / max(m.numel(), 1)
    if not use_sparse(density, dtype=m.dtype, device=m.device):
        return False, None, None
    rows, cols = m.nonzero(as_tuple=True)
    return True, rows, cols


def _grad_threshold(threshold, grad_acts, grad_l0, band_rows, band_cols, eps) -> torch.Tensor:
    """-(1/ε) Σ_{n in band_j} (θ_j·grad_acts[n,j] + grad_l0[n]), accumulated in float32."""
    per = torch.zeros(band_cols.shape[0], dtype=torch.float32, device=threshold.device)
    if grad_acts is not None:
        per += threshold.float()[band_cols] * grad_acts[band_rows, band_cols].float()
    if grad_l0 is not None:
        per += grad_l0.float()[band_rows]
    out = torch.zeros(threshold.shape[0], dtype=torch.float32, device=threshold.device)
    out.index_add_(0, band_cols, per)
    return (out * (-1.0 / eps)).to(threshold.dtype)


def sparse_matmul_rows(m: torch.Tensor, rows, cols, weight: torch.Tensor, n_rows: int) -> torch.Tensor:
    """m @ weight from the nonzeros (rows, cols) of m [n_rows, K]: reads only the rows of weight [K, d] in cols.

    A COO sparse.mm: one pass over the nonzeros with index gathers into weight (torch's CPU index_add_ runs one
    row op per index, far slower).
    """
    vals = m[rows, cols]
    coo = torch.sparse_coo_tensor(
        torch.stack([rows, cols]),
        vals,
        (n_rows, weight.shape[0]),
        is_coalesced=bool((rows[1:] >= rows[:-1]).all()),
        check_invariants=False,  # built from nonzero(): in range and sorted by construction
    )
    return torch.sparse.mm(coo, weight)


class JumpReLUTorch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W_enc, b_enc, threshold, bandwidth: float):
        z = torch.addmm(b_enc, x, W_enc)  # [N, d_sae]
        band_rows, band_cols = rect_band(z, threshold, bandwidth).nonzero(as_tuple=True)
        acts = z.masked_fill_(~(z > threshold), 0)  # in place: the full z is not kept
        l0 = torch.count_nonzero(acts, dim=-1).to(x.dtype)  # [N]; acts != 0 exactly where z > θ (θ > 0)
        ctx.bandwidth = bandwidth
        ctx.save_for_backward(x, W_enc, threshold, acts, band_rows, band_cols)
        return acts, l0

    @staticmethod
    def backward(ctx, grad_acts, grad_l0):
        x, W_enc, threshold, acts, band_rows, band_cols = ctx.saved_tensors
        grad_threshold = None
        if ctx.needs_input_grad[3]:
            grad_threshold = _grad_threshold(
                threshold, grad_acts, grad_l0, band_rows, band_cols, ctx.bandwidth
            )
        if grad_acts is None:
            return None, None, None, grad_threshold, None
        grad_z = grad_acts * (acts != 0)  # [N, d_sae], as sparse as acts
        grad_x = grad_W_enc = None
        sparse, rows, cols = sparse_plan(grad_z)
        if ctx.needs_input_grad[0]:
            if sparse:
                grad_x = sparse_matmul_rows(grad_z, rows, cols, W_enc.t().contiguous(), x.shape[0])
            else:
                grad_x = grad_z @ W_enc.t()
        if ctx.needs_input_grad[1]:
            if sparse:  # x.T @ grad_z, built as its transpose one active feature row at a time
                grad_W_enc = sparse_matmul_rows(grad_z.t(), cols, rows, x, W_enc.shape[1]).t()
            else:
                grad_W_enc = x.t() @ grad_z
        grad_b_enc = grad_z.sum(0) if ctx.needs_input_grad[2] else None
        return grad_x, grad_W_enc, grad_b_enc, grad_threshold, None


class DecodeTorch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, acts, W_dec, b_dec):
        sparse, rows, cols = sparse_plan(acts)
        if sparse:
            x_hat = sparse_matmul_rows(acts, rows, cols, W_dec, acts.shape[0]) + b_dec
        else:
            x_hat = torch.addmm(b_dec, acts, W_dec)
        ctx.sparse = sparse
        if sparse:
            ctx.save_for_backward(acts, W_dec, rows, cols)
        else:
            ctx.save_for_backward(acts, W_dec)
        return x_hat

    @staticmethod
    def backward(ctx, grad_xhat):
        acts, W_dec, *coo = ctx.saved_tensors
        grad_acts = grad_xhat @ W_dec.t() if ctx.needs_input_grad[0] else None
        grad_W_dec = None
        if ctx.needs_input_grad[1]:
            if ctx.sparse:  # acts.T @ grad_xhat needs only the active rows of W_dec
                rows, cols = coo
                grad_W_dec = sparse_matmul_rows(acts.t(), cols, rows, grad_xhat, W_dec.shape[0])
            else:
                grad_W_dec = acts.t() @ grad_xhat
        grad_b_dec = grad_xhat.sum(0) if ctx.needs_input_grad[2] else None
        return grad_acts, grad_W_dec, grad_b_dec
