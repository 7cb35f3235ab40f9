"""ReLU encoder with its L1 penalty (the Standard SAE's), as one kernels op.

    acts, l0, l1 = relu_encode(x, W_enc, b_enc, l1_weight)   # [N, d_sae], [N], [N]
    x_hat = sae_decode(acts, W_dec, b_dec)
    loss = mse(x_hat, x) + λ * l1.mean()                     # l1_weight = W_dec.norm(dim=1)

acts = relu(x @ W_enc + b_enc); l0 = Σ_i 1[acts_i > 0] (no gradient); l1 = Σ_i acts_i·l1_weight_i.
The L1 term lives inside the op because written outside it (acts.sum(0) @ w) it costs two dense passes over
[N, d_sae] forward and a dense broadcast gradient backward; inside, it is a sum over the active entries only
and its gradient joins the decoder's at those entries.

On the torch path a sparse batch gets the same ActsPlan as jumprelu_encode's (kernels/torch_plan.py): the
encoder's backward products are CSR products over the active entries only, and inside the training op
(kernels/training.py relu_autoencode) the decoder reuses the nonzero pattern and computes grad_acts only at
the active entries (ReLU's gradient is zero elsewhere). The public relu_encode attaches no plan.
On CUDA it is plain torch (addmm + relu, cuBLAS). relu_encode_reference is the definition.
"""

from __future__ import annotations

import torch

from .checks import check_tensors
from .torch_path import attach_plan, encoder_epilogue, encoder_grads

RELU_SHAPES = {"x": ("N", "d_in"), "W_enc": ("d_in", "d_sae"), "b_enc": ("d_sae",), "l1_weight": ("d_sae",)}


def relu_encode_reference(x, W_enc, b_enc, l1_weight):
    """Reference: (relu(x @ W_enc + b_enc), its nonzero count per row, acts @ l1_weight) with plain autograd."""
    acts = torch.relu(x @ W_enc + b_enc)
    return acts, (acts > 0).sum(-1).to(x.dtype), acts @ l1_weight


class ReLUEncodeTorch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W_enc, b_enc, l1_weight, share: bool):
        # [N, d_sae], [N]: relu in place, the sparse plan collected on the way when the batch is sparse
        acts, l0, _, _, plan = encoder_epilogue(torch.mm(x, W_enc), bias=b_enc)
        if plan is not None:
            vals = plan.values(acts)  # [nnz], cached on the plan for the decoder
            l1 = torch.zeros(acts.shape[0], dtype=acts.dtype, device=acts.device)
            l1.index_add_(0, plan.rows, vals * l1_weight.index_select(0, plan.cols))  # [N]
        else:
            l1 = acts @ l1_weight  # [N]
        ctx.mark_non_differentiable(l0)
        ctx.plan = plan
        ctx.save_for_backward(x, W_enc, acts, l1_weight)
        if share:
            attach_plan(acts, plan)
        return acts, l0, l1

    @staticmethod
    def backward(ctx, grad_acts, grad_l0, grad_l1):
        x, W_enc, acts, l1_weight = ctx.saved_tensors
        plan, ctx.plan = ctx.plan, None
        grad_w = None
        if grad_l1 is not None and ctx.needs_input_grad[3]:
            if plan is not None:  # Σ_n grad_l1[n]·acts[n, i] over the active entries
                grad_w = plan.sum_cols(plan.values(acts) * grad_l1.index_select(0, plan.rows))
            else:
                grad_w = acts.t() @ grad_l1  # [d_sae]
        l1 = None if grad_l1 is None else (grad_l1, l1_weight)
        grads = encoder_grads(ctx, plan, acts, grad_acts, x, W_enc, l1=l1)[:3]
        return *grads, grad_w, None


def relu_encode(
    x: torch.Tensor,  # [N, d_in]
    W_enc: torch.Tensor,  # [d_in, d_sae]
    b_enc: torch.Tensor,  # [d_sae]
    l1_weight: torch.Tensor,  # [d_sae], e.g. the decoder row norms
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(acts [N, d_sae], l0 [N], l1 [N]): acts = relu(x @ W_enc + b_enc), l0 its nonzeros per row (float, no
    gradient), l1 = acts @ l1_weight. Differentiable in every tensor input, exact at every entry."""
    return apply_relu(x, W_enc, b_enc, l1_weight, share_plan=False)


def apply_relu(x, W_enc, b_enc, l1_weight, *, share_plan: bool):
    """relu_encode; share_plan (kernels/training.py only) attaches the torch path's plan to acts."""
    check_tensors(
        "relu_encode", {"x": x, "W_enc": W_enc, "b_enc": b_enc, "l1_weight": l1_weight}, RELU_SHAPES
    )
    if x.device.type == "cuda":
        acts = torch.relu(torch.addmm(b_enc, x, W_enc))
        return acts, torch.count_nonzero(acts, dim=-1).to(x.dtype), acts @ l1_weight
    return ReLUEncodeTorch.apply(x, W_enc, b_enc, l1_weight, share_plan)


__all__ = ["relu_encode", "relu_encode_reference"]
