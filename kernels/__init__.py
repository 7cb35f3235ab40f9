"""Fused JumpReLU encoder and sparse-aware decoder for sparse autoencoders.

    from fastsae.kernels import jumprelu_encode, relu_encode, sae_decode
    acts, l0 = jumprelu_encode(x, W_enc, b_enc, threshold, bandwidth=0.001)
    acts, l0, l1 = relu_encode(x, W_enc, b_enc, W_dec.norm(dim=1))   # Standard SAE: ReLU + weighted L1
    x_hat = sae_decode(acts, W_dec, b_dec)

All are differentiable in every tensor input, with exact gradients at every entry (acts included). Training
uses the fused ops of kernels/training.py instead, whose decoder computes grad_acts only where the encoder
reads it (see there):

    acts, l0, x_hat = jumprelu_autoencode(x, W_enc, b_enc, threshold, W_dec, b_dec, bandwidth=0.001)

The backend (Triton or torch) is chosen per call, see kernels/dispatch.py; kernels/reference.py is the plain
definition both backends are tested against.
"""

from .checks import (
    KernelBackendError,
    KernelDeviceError,
    KernelDtypeError,
    KernelError,
    KernelLayoutError,
    KernelShapeError,
)
from .ops import feature_counts, jumprelu_encode, sae_decode
from .relu_encode import relu_encode
from .training import jumprelu_autoencode, relu_autoencode

__all__ = [
    "jumprelu_encode",
    "sae_decode",
    "relu_encode",
    "feature_counts",
    "jumprelu_autoencode",
    "relu_autoencode",
    "KernelError",
    "KernelShapeError",
    "KernelDtypeError",
    "KernelDeviceError",
    "KernelLayoutError",
    "KernelBackendError",
]
