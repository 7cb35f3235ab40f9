"""ReLU encoder (the Standard SAE's): acts = relu(x @ W_enc + b_enc), as a kernels op.

    acts = relu_encode(x, W_enc, b_enc)      # [N, d_sae]
    x_hat = sae_decode(acts, W_dec, b_dec)

On the torch path a sparse batch gets the same ActsPlan as jumprelu_encode's (kernels/torch_plan.py): the
decoder then reuses the nonzero pattern and computes grad_acts only at the active entries (ReLU's gradient is
zero elsewhere), and the encoder's backward products are CSR products over the active entries only.
On CUDA it is plain torch (addmm + relu, cuBLAS). relu_encode_reference is the definition.
"""

from __future__ import annotations

import torch

from .checks import check_tensors
from .dispatch import use_sparse
from .torch_path import encoder_grads
from .torch_plan import plan_from

RELU_SHAPES = {"x": ("N", "d_in"), "W_enc": ("d_in", "d_sae"), "b_enc": ("d_sae",)}


def relu_encode_reference(x, W_enc, b_enc):
    """Reference: relu(x @ W_enc + b_enc) with plain autograd."""
    return torch.relu(x @ W_enc + b_enc)


class ReLUEncodeTorch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W_enc, b_enc):
        acts = torch.addmm(b_enc, x, W_enc).relu_()  # [N, d_sae]; in place: z is not kept
        density = int(torch.count_nonzero(acts)) / max(acts.numel(), 1)
        plan = plan_from(acts) if use_sparse(density, dtype=acts.dtype, device=acts.device) else None
        ctx.plan = plan
        ctx.save_for_backward(x, W_enc, acts)
        if plan is not None:
            plan.attach(acts)
        return acts

    @staticmethod
    def backward(ctx, grad_acts):
        x, W_enc, acts = ctx.saved_tensors
        plan, ctx.plan = ctx.plan, None
        return encoder_grads(ctx, plan, acts, grad_acts, x, W_enc)[:3]


def relu_encode(
    x: torch.Tensor,  # [N, d_in]
    W_enc: torch.Tensor,  # [d_in, d_sae]
    b_enc: torch.Tensor,  # [d_sae]
) -> torch.Tensor:
    """acts = relu(x @ W_enc + b_enc)  [N, d_sae], differentiable in every input."""
    check_tensors("relu_encode", {"x": x, "W_enc": W_enc, "b_enc": b_enc}, RELU_SHAPES)
    if x.device.type == "cuda":
        return torch.relu(torch.addmm(b_enc, x, W_enc))
    return ReLUEncodeTorch.apply(x, W_enc, b_enc)


__all__ = ["relu_encode", "relu_encode_reference"]
