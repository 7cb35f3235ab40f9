"""Sparse autoencoders: Standard (ReLU + L1), JumpReLU, TopK and BatchTopK, with their training losses.

Conventions (SAELens's, which the JumpReLU paper's λ values assume):
- loss = Σ_d (x̂ − x)² averaged over the batch + sparsity term averaged over the batch (+ AuxK for TopK archs).
- Standard: f = ReLU(x W_enc + b_enc); sparsity λ·Σ_i |f_i|·‖W_dec,i‖.
- JumpReLU: f = z·H(z − θ), θ > 0 per feature; sparsity λ·Σ_i H(z_i − θ_i). Gradients to θ through the
  rectangle-kernel straight-through estimator of Rajamanoharan et al. (bandwidth ε), computed by
  ``kernels.jumprelu_encode``. θ is stored directly (float32), or as log θ (``log_threshold=True``, the paper's setup).
- TopK: the k largest pre-activations per token (ReLU'd). BatchTopK: the k·N largest ReLU'd pre-activations over the
  batch while training; at inference a global threshold (EMA of the smallest kept activation, Bussmann et al.) gates
  each token, i.e. it is a JumpReLU with one shared θ — that is how SAELens exports it too.
- Every decode goes through ``kernels.sae_decode`` (which may take a sparse path).
- The input is never shifted by b_dec (SAELens's ``apply_b_dec_to_input=False``).

Gradients: ``encode`` and ``decode`` (the public inference API: attribution and steering differentiate them)
use the public kernels ops, exact with respect to every input at every entry — d/dacts of decode at zero
activations too — and to every parameter (θ through the STE above). ``training_forward`` alone uses the
training-only ops (kernels/training.py), whose grad_acts is computed only where the encoder reads it.

Initialisation (JumpReLU paper, Appendix C): W_dec Kaiming-uniform then rows normalised to unit norm; W_enc = W_dec.T
(the paper's and SAELens's choice: every feature starts as a matched filter for its own decoder direction); b_enc = 0;
b_dec = 0 until ``init_b_dec_`` sets it to the geometric median of a sample.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from enum import Enum

import torch
from torch import Tensor, nn

from fastsae.errors import FastSAEError
from fastsae.kernels import jumprelu_autoencode, jumprelu_encode, relu_autoencode, sae_decode

MIN_THRESHOLD = 1e-6  # JumpReLU θ is kept at or above this after each step (it must stay > 0)


class SAEError(FastSAEError):
    """Root of the errors of fastsae.saes (specs, saving and loading)."""


class SAESpecError(SAEError, ValueError):
    """An SAESpec field has an invalid value (the message names the field)."""


class Arch(str, Enum):
    STANDARD = "standard"
    JUMPRELU = "jumprelu"
    TOPK = "topk"
    BATCHTOPK = "batchtopk"


@dataclass(frozen=True)
class SAESpec:
    """Shape and architecture of one SAE (everything that shapes its parameters and forward pass)."""

    arch: Arch
    d_in: int
    d_sae: int
    k: int = 64  # topk / batchtopk: active latents per token (batchtopk: on average over the batch)
    jumprelu_bandwidth: float = 0.05  # ε of the rectangle-kernel STE
    jumprelu_init_threshold: float = 0.01
    log_threshold: bool = False  # store θ as log θ (paper setup) instead of θ directly
    aux_k_coef: float = 1 / 32  # topk / batchtopk: AuxK loss coefficient for dead latents (0 disables it)
    dead_tokens: int = 10_000_000  # a latent that has not fired for this many training tokens is dead (AuxK)
    batchtopk_threshold_lr: float = 0.01  # EMA rate of BatchTopK's inference threshold

    def __post_init__(self) -> None:
        try:
            arch = Arch(self.arch)
        except ValueError:
            choices = ", ".join(a.value for a in Arch)
            raise SAESpecError(
                f"SAESpec.arch: unknown architecture {self.arch!r} (choose from {choices})"
            ) from None
        object.__setattr__(self, "arch", arch)  # accept the plain string; normalise to the enum
        for name in ("d_in", "d_sae", "k", "dead_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise SAESpecError(f"SAESpec.{name} must be a positive integer, got {value!r}")
        if arch in (Arch.TOPK, Arch.BATCHTOPK) and self.k > self.d_sae:
            raise SAESpecError(f"SAESpec.k must be <= d_sae ({self.d_sae}) for {arch.value}, got {self.k}")
        for name in ("jumprelu_bandwidth", "jumprelu_init_threshold"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise SAESpecError(f"SAESpec.{name} must be a finite number > 0, got {value!r}")
        if not (
            isinstance(self.aux_k_coef, (int, float))
            and math.isfinite(self.aux_k_coef)
            and self.aux_k_coef >= 0
        ):
            raise SAESpecError(f"SAESpec.aux_k_coef must be a finite number >= 0, got {self.aux_k_coef!r}")
        if not (0 < self.batchtopk_threshold_lr <= 1):
            raise SAESpecError(
                f"SAESpec.batchtopk_threshold_lr must be in (0, 1], got {self.batchtopk_threshold_lr!r}"
            )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["arch"] = self.arch.value
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SAESpec:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class TrainStep:
    """What ``training_forward`` returns. ``loss`` is what to backpropagate."""

    loss: Tensor  # [] mse_loss + sparsity_loss + aux_loss
    mse_loss: Tensor  # [] Σ_d (x̂ − x)², mean over the batch
    sparsity_loss: Tensor  # [] λ·(sparsity penalty), mean over the batch (0 for topk archs)
    aux_loss: Tensor  # [] AuxK loss (0 unless topk archs with dead latents)
    acts: Tensor  # [N, d_sae]
    x_hat: Tensor  # [N, d_in]
    l0: Tensor  # [N] float, active latents per token (no grad)


def geometric_median(points: Tensor, *, max_iter: int = 100, tol: float = 1e-5) -> Tensor:
    """Geometric median of ``points`` [n, d] by Weiszfeld's algorithm (float32 at least; sums in float64).

    Starts from the mean; stops when the estimate moves less than ``tol`` relative to max(1, ‖estimate‖).
    """
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError(
            f"geometric_median: points must be a non-empty [n, d] tensor, got shape {tuple(points.shape)}"
        )
    pts = points.detach()
    if pts.dtype not in (torch.float32, torch.float64):
        pts = pts.float()
    y = pts.sum(0, dtype=torch.float64) / pts.shape[0]  # [d] float64, the mean
    for _ in range(max_iter):
        dist = (pts - y.to(pts.dtype)).norm(dim=1).double().clamp_min(1e-12)  # [n]
        w = 1.0 / dist
        y_new = (w.to(pts.dtype) @ pts).double() / w.sum()
        moved = (y_new - y).norm()
        y = y_new
        if moved <= tol * max(1.0, float(y.norm())):
            break
    return y.to(points.dtype)


class SparseAutoencoder(nn.Module):
    """One SAE. Parameters W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in];
    JumpReLU adds ``threshold`` [d_sae] float32 (or ``log_threshold``); BatchTopK keeps a ``topk_threshold`` buffer [].
    ``threshold`` always reads as θ [d_sae] for jumprelu and batchtopk.
    """

    def __init__(
        self,
        spec: SAESpec,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.d_in = spec.d_in
        self.d_sae = spec.d_sae
        init_device = generator.device if generator is not None else device
        W_dec = torch.empty(spec.d_sae, spec.d_in, dtype=torch.float32, device=init_device)
        nn.init.kaiming_uniform_(W_dec, generator=generator)
        W_dec /= W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
        W_dec = W_dec.to(device=device, dtype=dtype)
        self.W_enc = nn.Parameter(W_dec.T.clone().contiguous())  # [d_in, d_sae]
        self.b_enc = nn.Parameter(torch.zeros(spec.d_sae, device=device, dtype=dtype))  # [d_sae]
        self.W_dec = nn.Parameter(W_dec.contiguous())  # [d_sae, d_in]
        self.b_dec = nn.Parameter(torch.zeros(spec.d_in, device=device, dtype=dtype))  # [d_in]
        if spec.arch == Arch.JUMPRELU:
            theta = torch.full(
                (spec.d_sae,), spec.jumprelu_init_threshold, device=device, dtype=torch.float32
            )
            if spec.log_threshold:
                self.log_threshold = nn.Parameter(theta.log())  # [d_sae]
            else:
                self.threshold = nn.Parameter(theta)  # [d_sae]
        if spec.arch == Arch.BATCHTOPK:
            self.register_buffer("topk_threshold", torch.zeros((), device=device, dtype=torch.float32))
        if spec.arch in (Arch.TOPK, Arch.BATCHTOPK):
            # training tokens since each latent last fired (for AuxK's dead-latent mask)
            self.register_buffer(
                "tokens_since_fired", torch.zeros(spec.d_sae, device=device, dtype=torch.int64)
            )

    def __getattr__(self, name: str):
        if name == "threshold":
            params = self.__dict__["_parameters"]
            if "log_threshold" in params:
                return params["log_threshold"].exp()
            buffers = self.__dict__["_buffers"]
            if "topk_threshold" in buffers:
                return buffers["topk_threshold"].expand(self.d_sae)
        return super().__getattr__(name)

    def extra_repr(self) -> str:
        return f"arch={self.spec.arch.value}, d_in={self.d_in}, d_sae={self.d_sae}"

    # ------------------------------------------------------------------ inference
    def _pre(self, x: Tensor) -> Tensor:
        return torch.addmm(self.b_enc, x, self.W_enc)  # [N, d_sae]

    def encode(self, x: Tensor) -> Tensor:
        """Feature activations [..., d_sae] for inputs [..., d_in] (inference semantics)."""
        lead = x.shape[:-1]
        x = x.reshape(-1, self.d_in).to(self.W_enc.dtype)
        arch = self.spec.arch
        if arch == Arch.JUMPRELU:
            acts, _ = jumprelu_encode(
                x, self.W_enc, self.b_enc, self.threshold.to(x.dtype), bandwidth=self.spec.jumprelu_bandwidth
            )
        elif arch == Arch.STANDARD:
            acts = torch.relu(self._pre(x))
        elif arch == Arch.TOPK:
            acts = _topk_per_token(self._pre(x), self.spec.k)
        else:  # BATCHTOPK at inference: JumpReLU with the learned global threshold
            z = self._pre(x)
            acts = torch.relu(z) * (z > self.topk_threshold.to(z.dtype))
        return acts.reshape(*lead, self.d_sae)

    def decode(self, acts: Tensor) -> Tensor:
        """Reconstruction [..., d_in] from activations [..., d_sae], through ``kernels.sae_decode``."""
        lead = acts.shape[:-1]
        x_hat = sae_decode(acts.reshape(-1, self.d_sae).to(self.W_dec.dtype), self.W_dec, self.b_dec)
        return x_hat.reshape(*lead, self.d_in)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    # ------------------------------------------------------------------ training
    def training_forward(self, x: Tensor, *, sparsity_coef: float) -> TrainStep:
        """Losses for one batch x [N, d_in] (see the module docstring for the conventions)."""
        x = x.to(self.W_enc.dtype)
        arch = self.spec.arch
        zero = x.new_zeros(())
        sparsity, aux = zero, zero
        if arch == Arch.JUMPRELU:
            acts, l0_ste, x_hat = jumprelu_autoencode(
                x,
                self.W_enc,
                self.b_enc,
                self.threshold.to(x.dtype),
                self.W_dec,
                self.b_dec,
                bandwidth=self.spec.jumprelu_bandwidth,
            )
            sparsity = sparsity_coef * l0_ste.mean()
            l0 = l0_ste.detach()
        elif arch == Arch.STANDARD:
            # l1[n] = Σ_i f_ni·‖W_dec,i‖ summed inside the op, over the active entries only (on CPU the op
            # shares its sparse plan with the decoder; written outside, this term costs dense passes)
            acts, l0, l1, x_hat = relu_autoencode(
                x, self.W_enc, self.b_enc, self.W_dec.norm(dim=1), self.W_dec, self.b_dec
            )
            sparsity = sparsity_coef * l1.mean()
        else:
            z = self._pre(x)
            if arch == Arch.TOPK:
                acts = _topk_per_token(z, self.spec.k)
            else:
                acts = _topk_batch(z, self.spec.k)
                self._update_topk_threshold(acts)
            x_hat = sae_decode(acts, self.W_dec, self.b_dec)
            fired = acts.detach() > 0
            l0 = fired.sum(-1).to(x.dtype)
            aux = self._aux_k_loss(x, x_hat, z, fired)
        mse = (x_hat - x).pow(2).sum(-1).mean()
        return TrainStep(
            loss=mse + sparsity + aux,
            mse_loss=mse,
            sparsity_loss=sparsity,
            aux_loss=aux,
            acts=acts,
            x_hat=x_hat,
            l0=l0,
        )

    @torch.no_grad()
    def _update_topk_threshold(self, acts: Tensor) -> None:
        pos = acts[acts > 0]
        if pos.numel():
            lr = self.spec.batchtopk_threshold_lr
            self.topk_threshold.mul_(1 - lr).add_(lr * pos.min().float())

    def _aux_k_loss(self, x: Tensor, x_hat: Tensor, z: Tensor, fired: Tensor) -> Tensor:
        """AuxK (Gao et al.): the top k_aux dead latents reconstruct the residual; scaled down when few are dead."""
        with torch.no_grad():
            counter = self.tokens_since_fired
            counter.add_(x.shape[0])
            counter.masked_fill_(fired.any(0), 0)
            dead = counter >= self.spec.dead_tokens  # [d_sae]
            num_dead = int(dead.sum()) if self.spec.aux_k_coef > 0 else 0
        if num_dead == 0:
            return x.new_zeros(())
        k_aux = self.d_in // 2
        scale = min(num_dead / k_aux, 1.0)
        k_aux = min(k_aux, num_dead)
        z_dead = z.masked_fill(~dead, float("-inf"))
        vals, idx = z_dead.topk(k_aux, dim=-1, sorted=False)
        aux_acts = torch.zeros_like(z).scatter(-1, idx, vals.relu())
        recon = sae_decode(aux_acts, self.W_dec, torch.zeros_like(self.b_dec))
        residual = (x - x_hat).detach()
        return self.spec.aux_k_coef * scale * (recon - residual).pow(2).sum(-1).mean()

    # ------------------------------------------------------------------ parameter maintenance
    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale W_dec rows to unit norm (call after each optimizer step).

        Also keeps JumpReLU's θ positive (θ ≥ 1e-6; with log θ it is positive by construction).
        """
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))
        if "threshold" in self._parameters:
            self._parameters["threshold"].clamp_(min=MIN_THRESHOLD)

    @torch.no_grad()
    def remove_parallel_grad_(self) -> None:
        """Project out the component of W_dec's gradient parallel to each row (call before the optimizer step)."""
        g = self.W_dec.grad
        if g is None:
            return
        W = self.W_dec
        coef = (g * W).sum(1, keepdim=True) / (W * W).sum(1, keepdim=True).clamp_min(1e-12)  # [d_sae, 1]
        g.sub_(coef * W)

    @torch.no_grad()
    def init_b_dec_(self, sample: Tensor) -> None:
        """Set b_dec to the geometric median of ``sample`` [n, d_in] (Weiszfeld)."""
        if sample.ndim != 2 or sample.shape[1] != self.d_in:
            raise ValueError(f"init_b_dec_: sample must be [n, {self.d_in}], got shape {tuple(sample.shape)}")
        self.b_dec.copy_(geometric_median(sample.float()).to(self.b_dec))

    @torch.no_grad()
    def fold_activation_norm_(self, scale: float) -> None:
        """The SAE was trained on x·scale; rewrite the weights so it takes raw x and returns raw-scale x̂.

        z = (x·scale) W_enc + b_enc = x (scale·W_enc) + b_enc, so pre-activations, thresholds and activations are
        unchanged; x̂_raw = x̂/scale = f (W_dec/scale) + b_dec/scale. Decoder rows then have norm 1/scale.
        """
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"fold_activation_norm_: scale must be a finite number > 0, got {scale!r}")
        self.W_enc.mul_(scale)
        self.W_dec.div_(scale)
        self.b_dec.div_(scale)


def _topk_per_token(z: Tensor, k: int) -> Tensor:
    vals, idx = z.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(z).scatter(-1, idx, vals.relu())


def _topk_batch(z: Tensor, k: int) -> Tensor:
    acts = z.relu()
    flat = acts.flatten()
    vals, idx = flat.topk(k * z.shape[0], sorted=False)
    return torch.zeros_like(flat).scatter(-1, idx, vals).view_as(z)
