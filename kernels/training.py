"""Training-only ops: an encoder and the decoder in one call, sharing the torch path's sparse plan.

    acts, l0, x_hat = jumprelu_autoencode(x, W_enc, b_enc, threshold, W_dec, b_dec, bandwidth=ε)
    acts, l0, l1, x_hat = relu_autoencode(x, W_enc, b_enc, W_dec.norm(dim=1), W_dec, b_dec)

The forward values, and the gradients of every input tensor, are those of the public ops (jumprelu_encode or
relu_encode, then sae_decode). The shortcut: on the torch path a sparse batch's encoder attaches its plan to
acts and the decoder computes grad_acts only at the entries the encoder's backward reads (kernels/torch_plan.py),
so no backward product is dense. The gradient that acts itself receives (acts.retain_grad(), hooks on acts)
is valid at those entries only: never hand these acts to code that reads their gradient (attribution,
steering); the public ops are exact at every entry. feature_counts(acts) reads the attached plan.
"""

from __future__ import annotations

import torch

from .ops import apply_decode, apply_jumprelu
from .relu_encode import apply_relu


def jumprelu_autoencode(
    x: torch.Tensor,  # [N, d_in]
    W_enc: torch.Tensor,  # [d_in, d_sae]
    b_enc: torch.Tensor,  # [d_sae]
    threshold: torch.Tensor,  # [d_sae], > 0
    W_dec: torch.Tensor,  # [d_sae, d_in]
    b_dec: torch.Tensor,  # [d_in]
    bandwidth: float = 0.001,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(acts [N, d_sae], l0 [N], x_hat [N, d_in]) of jumprelu_encode then sae_decode; training only."""
    acts, l0 = apply_jumprelu(x, W_enc, b_enc, threshold, bandwidth, share_plan=True)
    return acts, l0, apply_decode(acts, W_dec, b_dec, shared_plan=True)


def relu_autoencode(
    x: torch.Tensor,  # [N, d_in]
    W_enc: torch.Tensor,  # [d_in, d_sae]
    b_enc: torch.Tensor,  # [d_sae]
    l1_weight: torch.Tensor,  # [d_sae], e.g. the decoder row norms
    W_dec: torch.Tensor,  # [d_sae, d_in]
    b_dec: torch.Tensor,  # [d_in]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(acts, l0, l1, x_hat) of relu_encode then sae_decode; training only."""
    acts, l0, l1 = apply_relu(x, W_enc, b_enc, l1_weight, share_plan=True)
    return acts, l0, l1, apply_decode(acts, W_dec, b_dec, shared_plan=True)


__all__ = ["jumprelu_autoencode", "relu_autoencode"]
