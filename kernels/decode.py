"""SAE decoder on the Triton path: x_hat = acts @ W_dec + b_dec.

Sparse batches (density at or below the cut-off in kernels/dispatch.py) gather only the active rows of W_dec
with the segment gather kernel (kernels/sparse.py), one program per (token, d_in block); dense batches use one
cuBLAS addmm, which is already at the matmul roofline. Backward: grad_acts = grad_xhat @ W_dec.T is dense
(the encoder's θ gradient needs it at inactive near-threshold entries too); grad_W_dec = acts.T @ grad_xhat
touches only the active rows of W_dec (segment gather over the CSC of acts); grad_b_dec = Σ_n grad_xhat.
"""

from __future__ import annotations

import torch

from .checks import DECODE_SHAPES, check_launch
from .dispatch import is_interpreted, use_sparse
from .sparse import _segment_gather_kernel, col_segments, density, row_segments, segment_gather


def decode_forward(acts, W_dec, b_dec) -> tuple[torch.Tensor, bool]:
    """Launch the decoder forward: (x_hat [N, d_in], whether the gather path was used)."""
    tensors = {"acts": acts, "W_dec": W_dec, "b_dec": b_dec}
    check_launch("sae_decode", tensors, DECODE_SHAPES, interpreted=is_interpreted(_segment_gather_kernel))
    if use_sparse(density(acts), dtype=acts.dtype, device=acts.device):
        off, cols, vals = row_segments(acts)
        return segment_gather(off, cols, vals, W_dec, bias=b_dec, out_dtype=acts.dtype), True
    return torch.addmm(b_dec, acts, W_dec), False


class DecodeTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, acts, W_dec, b_dec):
        x_hat, sparse = decode_forward(acts, W_dec, b_dec)
        ctx.sparse = sparse
        ctx.save_for_backward(acts, W_dec)
        return x_hat

    @staticmethod
    def backward(ctx, grad_xhat):
        acts, W_dec = ctx.saved_tensors
        grad_acts = grad_xhat @ W_dec.t() if ctx.needs_input_grad[0] else None
        grad_W_dec = None
        if ctx.needs_input_grad[1]:
            if ctx.sparse:
                off, rows, vals = col_segments(acts)
                grad_W_dec = segment_gather(off, rows, vals, grad_xhat, out_dtype=W_dec.dtype)
            else:
                grad_W_dec = acts.t() @ grad_xhat
        grad_b_dec = grad_xhat.sum(0) if ctx.needs_input_grad[2] else None
        return grad_acts, grad_W_dec, grad_b_dec
