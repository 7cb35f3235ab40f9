"""The torch path of both ops (CPU default): same results and gradients as kernels/reference.py,
but it keeps only a compact record for the backward and uses sparse products (CSR patterns, computed with
embedding_bag) when acts are sparse.

Encoder forward keeps acts (the output, no copy) and the coordinates of the few near-threshold entries
(|z-θ| < ε/2), never the full z: 1[z > θ] == (acts != 0) because θ > 0 (acts equals z there, in z's dtype).
When the batch is sparse enough (kernels/dispatch.py) it also records the nonzero pattern of acts as an
ActsPlan (kernels/torch_plan.py), which its own backward products use. In the training op only
(kernels/training.py) the plan is attached to acts: the decoder reuses it and computes grad_acts only where
the encoder's backward reads it (the active and band entries), so no backward product is dense. The public
ops attach nothing, and their decoder's grad_acts is the full dense product.
The encoder's epilogue (bias, mask, band, l0, pattern) runs over blocks of rows (see encoder_epilogue).
"""

from __future__ import annotations

import torch

from .dispatch import sparse_cutoff, use_sparse
from .torch_plan import ActsPlan, plan_from

# Row-block size of the encoder epilogue: a block of z is this many bytes or less. Whole-matrix elementwise
# ops on [N, d_sae] allocate fresh temporaries of that size (bool masks, z - θ, an int64 copy inside
# count_nonzero(dim)); above glibc's mmap threshold (32 MiB) each one is page-faulted in anew every step.
# Blocks of a few MiB reuse the same heap memory and stay in cache (benchmarks/cpu_ops.py epilogue).
EPILOGUE_BLOCK_BYTES = 4 << 20


def sparse_plan(m: torch.Tensor) -> ActsPlan | None:
    """An ActsPlan of m's nonzeros when the gather path is chosen for its density, else None."""
    # count_nonzero/nonzero on m itself: a bool mask's .sum() would materialise an int64 copy on CPU
    density = int(torch.count_nonzero(m)) / max(m.numel(), 1)
    if not use_sparse(density, dtype=m.dtype, device=m.device):
        return None
    return plan_from(m)


def encoder_epilogue(
    z: torch.Tensor,
    threshold: torch.Tensor | None = None,
    bandwidth: float = 0.0,
    *,
    bias: torch.Tensor | None = None,
):
    """Turn z [N, d_sae] (+ bias [d_sae], added here block by block: one pass over z fewer than addmm's bias
    copy) into acts in place, block by block of rows, and record what the backward needs.

    threshold None: acts = relu(z). Else acts = z·1[z > θ] and the band 1[|z - θ| < ε/2] (float32 arithmetic,
    as kernels/reference.rect_band) is recorded. Returns (acts (= z), l0 [N] (nonzeros per row, in z's dtype),
    band_rows, band_cols (None without a threshold), plan (an ActsPlan of acts when the batch takes the
    sparse path, kernels/dispatch.py, else None)).

    The nonzero pattern is collected block by block while the blocks seen so far are sparse enough, so a
    sparse batch needs no second scan of acts; a dense one stops collecting after its first block.
    """
    n, d_sae = z.shape
    rows = max(1, EPILOGUE_BLOCK_BYTES // max(1, d_sae * z.element_size()))
    cutoff = sparse_cutoff(dtype=z.dtype, device=z.device)
    l0 = torch.empty(n, dtype=z.dtype, device=z.device)
    band_r, band_c, act_r, act_c = [], [], [], []
    collecting, seen = cutoff >= 0, 0
    if threshold is not None:
        theta32, half = threshold.float(), 0.5 * bandwidth
    # Comparisons and bool -> float products cost more than plain float arithmetic: hence float 0/1 masks
    # from relu/sign, a comparison only for the band (benchmarks/cpu_ops.py float_mask).
    for start in range(0, n, rows):
        blk = z[start : start + rows]  # a view: edited in place
        if bias is not None:
            blk.add_(bias)
        if threshold is None:
            blk.relu_()
            mask = blk.sign()  # 1[acts != 0] as a float (acts >= 0)
            band = None
        else:
            dz = blk.float() - theta32  # z - θ in float32 (as kernels/reference.rect_band): > 0 iff z > θ
            band = dz.abs() < half
            mask = dz.relu_().sign_()  # 1[z > θ]
            blk.mul_(mask)  # = z * 1[z > θ] as the reference
        l0_blk = l0[start : start + rows]
        l0_blk.copy_(mask.sum(dim=-1))
        if collecting:  # only while the rows so far (this block included) are sparse enough
            seen += float(l0_blk.sum(dtype=torch.float64))
            collecting = seen <= cutoff * (start + blk.shape[0]) * d_sae
        if band is not None:
            r, c = band.nonzero(as_tuple=True)
            band_r.append(r + start)
            band_c.append(c)
        if collecting:
            r, c = mask.bool().nonzero(as_tuple=True)  # nonzero() of a bool mask: faster than a float's
            act_r.append(r + start)
            act_c.append(c)
    plan = None
    if collecting:  # every block collected and the whole batch is sparse enough
        plan = ActsPlan(_cat(act_r, z.device), _cat(act_c, z.device), z.shape)
    elif cutoff >= 0 and use_sparse(
        float(l0.sum(dtype=torch.float64)) / max(z.numel(), 1), dtype=z.dtype, device=z.device
    ):
        plan = plan_from(z)  # dense early blocks, sparse overall: rare
    if threshold is None:
        return z, l0, None, None, plan
    band_rows, band_cols = _cat(band_r, z.device), _cat(band_c, z.device)
    if plan is not None:
        plan.band_rows, plan.band_cols = band_rows, band_cols
    return z, l0, band_rows, band_cols, plan


def _cat(parts: list[torch.Tensor], device) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64, device=device)


def _grad_threshold(threshold, band_grad_acts, grad_l0, band_rows, band_cols, eps) -> torch.Tensor:
    """-(1/ε) Σ_{n in band_j} (θ_j·grad_acts[n,j] + grad_l0[n]), accumulated in float32."""
    per = torch.zeros(band_cols.shape[0], dtype=torch.float32, device=threshold.device)
    if band_grad_acts is not None:
        per += threshold.float().index_select(0, band_cols) * band_grad_acts.float()
    if grad_l0 is not None:
        per += grad_l0.float().index_select(0, band_rows)
    out = torch.zeros(threshold.shape[0], dtype=torch.float32, device=threshold.device)
    out.index_add_(0, band_cols, per)
    return (out * (-1.0 / eps)).to(threshold.dtype)


def encoder_grads(ctx, plan: ActsPlan | None, acts, grad_acts, x, W_enc, band=False, l1=None):
    """(grad_x, grad_W_enc, grad_b_enc, grad_acts at the band entries or None) of z = x @ W_enc + b_enc
    followed by a mask that keeps exactly the nonzeros of acts.

    grad_acts may be None (no gradient reached acts itself); l1 = (grad_l1 [N], w [d_sae]) adds the gradient
    of l1[n] = Σ_i acts[n, i]·w_i, i.e. grad_l1[n]·w_i at each active entry.
    """
    band_vals = vals = None
    if plan is not None:
        if grad_acts is not None:
            if plan.grad_acts is not None and grad_acts is plan.grad_acts:  # straight from sae_decode, alone
                vals, band_vals = plan.grad_vals, plan.grad_band
            else:  # other consumers' gradients were added (dense, or sparse + sparse)
                if grad_acts.is_sparse:
                    grad_acts = grad_acts.to_dense()
                vals = plan.gather(grad_acts)
                band_vals = plan.gather_band(grad_acts) if band else None
        plan.grad_acts = plan.grad_vals = plan.grad_band = None
        if l1 is not None:
            extra = l1[0].index_select(0, plan.rows) * l1[1].index_select(0, plan.cols)  # [nnz]
            vals = extra if vals is None else vals + extra
        if vals is None:
            vals = acts.new_zeros(plan.rows.shape[0])
        grad_x = plan.mm(vals, W_enc.t()) if ctx.needs_input_grad[0] else None
        grad_W_enc = plan.mm_t(vals, x).t() if ctx.needs_input_grad[1] else None  # (grad_z.T @ x).T
        grad_b_enc = plan.sum_cols(vals) if ctx.needs_input_grad[2] else None
        return grad_x, grad_W_enc, grad_b_enc, band_vals
    if grad_acts is not None and grad_acts.is_sparse:
        grad_acts = grad_acts.to_dense()
    if l1 is not None:
        g = torch.outer(*l1) if grad_acts is None else torch.addr(grad_acts, *l1)
    else:
        g = torch.zeros_like(acts) if grad_acts is None else grad_acts
    grad_z = g * acts.sign()  # [N, d_sae]; sign = 1[acts != 0] (acts >= 0), faster than a bool mask
    grad_x = grad_z @ W_enc.t() if ctx.needs_input_grad[0] else None
    grad_W_enc = x.t() @ grad_z if ctx.needs_input_grad[1] else None
    grad_b_enc = grad_z.sum(0) if ctx.needs_input_grad[2] else None
    return grad_x, grad_W_enc, grad_b_enc, band_vals


def attach_plan(acts: torch.Tensor, plan: ActsPlan | None) -> None:
    """Attach the encoder's plan (or its 'too dense' mark) to acts, for the training op's decoder only."""
    if plan is not None:
        plan.attach(acts)
    else:
        ActsPlan.mark_dense(acts)


class JumpReLUTorch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W_enc, b_enc, threshold, bandwidth: float, share: bool):
        z = torch.mm(x, W_enc)  # [N, d_sae]; + b_enc in the epilogue
        # in place: the full z is not kept; acts != 0 exactly where z > θ (θ > 0)
        acts, l0, band_rows, band_cols, plan = encoder_epilogue(z, threshold, bandwidth, bias=b_enc)
        ctx.bandwidth = bandwidth
        ctx.plan = plan  # the backward's own sparse products use it whether or not acts carries it
        ctx.save_for_backward(x, W_enc, threshold, acts, band_rows, band_cols)
        if share:
            attach_plan(acts, plan)
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
                band_vals = (grad_acts.to_dense() if grad_acts.is_sparse else grad_acts)[band_rows, band_cols]
        grad_threshold = None
        if ctx.needs_input_grad[3]:
            grad_threshold = _grad_threshold(
                threshold, band_vals, grad_l0, band_rows, band_cols, ctx.bandwidth
            )
        return grad_x, grad_W_enc, grad_b_enc, grad_threshold, None, None


class DecodeTorch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, acts, W_dec, b_dec, shared: bool):
        # shared (the training op only): the plan the encoder attached to acts, if sparse; grad_acts is then
        # computed only at its pattern and band. Otherwise acts' own pattern, and the full dense grad_acts.
        plan = ActsPlan.of(acts) if shared else None
        partial = plan is not None
        if plan is None and not (shared and ActsPlan.known_dense(acts)):
            plan = sparse_plan(acts)
        ctx.sparse = plan is not None
        ctx.partial, ctx.plan = partial, plan
        if plan is not None:
            vals = plan.values(acts)
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
            if ctx.partial:  # only the entries the encoder's backward reads (see kernels/torch_plan.py)
                gv = plan.sddmm(grad_xhat, W_dec)  # [nnz]
                gb = plan.sddmm(grad_xhat, W_dec, band=True) if plan.band_rows is not None else None
                grad_acts = plan.sparse_grad(acts, gv, gb)  # sparse COO [N, d_sae]: no dense zeros
                plan.grad_acts, plan.grad_vals, plan.grad_band = grad_acts, gv, gb
            else:
                grad_acts = grad_xhat @ W_dec.t()
        grad_W_dec = None
        if ctx.needs_input_grad[1]:
            if plan is not None:  # acts.T @ grad_xhat needs only the active rows of W_dec
                grad_W_dec = plan.mm_t(vals[0], grad_xhat)
            else:
                grad_W_dec = acts.t() @ grad_xhat
        grad_b_dec = grad_xhat.sum(0) if ctx.needs_input_grad[2] else None
        return grad_acts, grad_W_dec, grad_b_dec, None
