"""The edit `fastsae steer` makes to the residual stream after the SAE's block, for one batch of rows.

    with ResidualHooks(model, replace={layer: Steering(...)}):
        model.generate(input_ids, attention_mask=..., use_cache=True)

- add:   x' = x + Σ_i c_i·W_dec[k_i]                 (c_i = α × feature i's coefficient)
- clamp: x' = x + Σ_i (c_i − f_{k_i}(x))·W_dec[k_i]  (f = the SAE's encoding of x itself)

Clamping keeps the SAE's error: x = x̂ + e with x̂ = Σ_j f_j W_dec[j] + b_dec, and only the terms of the
clamped features change, whatever the architecture (TopK's other picks and JumpReLU's gates are the ones
of x itself, never of an encoding of the edited x). W_dec is the saved SAE's, which takes and returns raw
activations (train folds any activation scale into the weights), so c is in the feature's activation units.

Positions: the prompt's (a bool mask per row; left padding is never steered) on the first forward of a
generate call, then one new token per forward with the KV cache: those are "generated" positions, steered
when asked. A forward that sees more tokens than that (no cache) is refused rather than mis-steered.
"""

from __future__ import annotations

import torch


class Steering:
    """A `replace` callable for ResidualHooks at the SAE's layer (see the module doc).

    directions [n, d]: the features' decoder rows; values [B, n]: c per row and feature; prompt_mask [B, T]:
    prompt positions to steer; generated [B]: steer the row's generated tokens; clamp: the SAE and the
    feature ids, for clamping (None: add)."""

    def __init__(self, directions, values, prompt_mask, generated, *, clamp=None):
        self.directions = directions.float()
        self.values = values.float()
        self.prompt_mask = prompt_mask.bool()
        self.generated = generated.bool()
        self.clamp = clamp  # (sae, feature ids tensor) or None
        self.seen = 0  # positions this generate call has passed through the block so far

    def mask(self, t: int) -> torch.Tensor:
        """[B, t] positions to edit in the forward that brings the next `t` positions."""
        T = self.prompt_mask.shape[1]
        if self.seen == 0 and t == T:
            m = self.prompt_mask
        elif self.seen >= T and t == 1:
            m = self.generated[:, None]
        else:
            raise RuntimeError(
                f"steering: a forward of {t} positions after {self.seen} (prompt {T}); generate with the KV cache"
            )
        self.seen += t
        return m

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """[B, t, d] (float32) what is added at each edited position."""
        if self.clamp is None:
            return (self.values @ self.directions)[:, None, :]
        sae, ids = self.clamp
        acts = sae.encode(x.to(sae.W_enc.dtype))[..., ids].float()  # [B, t, n]
        return (self.values[:, None, :] - acts) @ self.directions

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        m = self.mask(x.shape[1]).to(x.device)
        if not bool(m.any()):
            return x
        return torch.where(m[..., None], x + self.delta(x).to(x.dtype), x)
