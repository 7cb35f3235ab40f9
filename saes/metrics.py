"""Reconstruction metrics of an SAE: the one definition that train logs and eval reports.

Per token t of sequence s (x_t, x̂_t in R^d, in whatever units the caller passes; train passes the store's
raw activation units):

    err_t  = mean_d (x̂_t,d − x_t,d)²                                  (token_errors)
    mse    = mean over sequences s of (mean over t ∈ s of err_t)       (the paper's averaging)
    mse_st = the same over SPECIAL tokens only (sequences without any special token are left out)
    log2_mse, log2_mse_st = their base-2 logarithms (nan unless > 0)
    explained_variance = 1 − Σ_t ‖x̂_t − x_t‖² / Σ_t ‖x_t − x̄‖²     (x̄ = the mean of every x_t seen)
    l0     = mean over tokens of the number of active latents (acts > 0)

Also, for eval (``extras()``; train's logs hold CORE_KEYS only):

    cosine_sim    = mean over tokens of cos(x̂_t, x_t)
    relative_norm = mean over tokens of ‖x̂_t‖ / ‖x_t‖
    dead_frac, dense_frac (when acts were given) = fraction of the latents that fired on none of the tokens
                    seen / on more than ``dense_above`` of them (firing_fractions)

ReconstructionStats accumulates all of it over any number of updates (one sequence at a time, or chunks of
tokens with their sequence index), in float64, keeping no tokens; reconstruction_metrics is one update, then
compute; heldout_metrics runs an SAE over a HeldOut set (what train logs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

SPECIAL = 0  # store.TokenType.SPECIAL (an int: saes imports no store)
CORE_KEYS = ("mse", "mse_st", "log2_mse", "log2_mse_st", "explained_variance", "l0")
DENSE_ABOVE = 0.1  # a latent firing on more than this fraction of tokens counts as dense


def token_errors(x: Tensor, x_hat: Tensor) -> Tensor:
    """err_t = mean_d (x̂_t,d − x_t,d)²  [T] float32, for x, x_hat [T, d]."""
    return (x_hat.float() - x.float()).pow(2).mean(-1)


def firing_fractions(counts: Tensor, tokens: int, *, dense_above: float = DENSE_ABOVE) -> dict:
    """{"dead_frac", "dense_frac"} of per-latent firing counts [d_sae] over `tokens` tokens."""
    if tokens <= 0 or counts.numel() == 0:
        return {"dead_frac": float("nan"), "dense_frac": float("nan")}
    dense = counts.double() / tokens > dense_above
    return {"dead_frac": float((counts == 0).double().mean()), "dense_frac": float(dense.double().mean())}


def _log2(v: float) -> float:
    return math.log2(v) if v > 0 and math.isfinite(v) else float("nan")


def _per_sequence_mean(sums: Tensor, counts: Tensor) -> float:
    """mean over sequences having ≥ 1 counted token of (their sum / their count)."""
    has = counts > 0
    if not bool(has.any()):
        return float("nan")
    return float((sums[has] / counts[has]).mean())


class ReconstructionStats:
    """Streaming accumulator of the metrics above (float64 sums on the device of the first update)."""

    def __init__(self) -> None:
        self.num_tokens = 0
        self.num_sequences = 0  # 1 + the largest sequence index seen
        self.fire_counts: Tensor | None = None  # [d_sae] int64, while every update passed acts
        self._acts_everywhere = True
        self._seq: Tensor | None = None  # [4, capacity] float64: Σ err, count, Σ err and count over special
        self._err = self._mean = self._m2 = self._l0 = self._cos = self._ratio = None

    def update(
        self,
        x: Tensor,  # [T, d]
        x_hat: Tensor,  # [T, d]
        *,
        acts: Tensor | None = None,  # [T, d_sae]: gives l0 and the firing counts
        l0: Tensor | None = None,  # [T] active latents per token, when acts are not at hand
        token_types: Tensor | np.ndarray | None = None,  # [T] store TokenType values (SPECIAL = 0)
        special: Tensor | None = None,  # [T] bool, instead of token_types
        seq: Tensor | None = None,  # [T] int64 sequence index of each token; None: one new sequence
    ) -> ReconstructionStats:
        """Add T tokens. Indices in ``seq`` are global (a sequence may span updates)."""
        if x.ndim != 2 or x_hat.shape != x.shape:
            shapes = f"{tuple(x.shape)} and {tuple(x_hat.shape)}"
            raise ValueError(f"update: x and x_hat must be [T, d] of one shape, got {shapes}")
        if (acts is None) == (l0 is None):
            raise ValueError("update: pass exactly one of acts (per-latent) or l0 (per token)")
        n, dev = x.shape[0], x.device
        if n == 0:
            return self
        if acts is not None:
            active = acts > 0
            l0 = active.sum(-1)
            self._count_fired(active.sum(0))
        else:
            self._acts_everywhere = False
        if special is None and token_types is not None:
            special = torch.as_tensor(np.asarray(token_types) == SPECIAL, device=dev)
        special = torch.zeros(n, dtype=torch.bool, device=dev) if special is None else special.to(dev)
        seq = (
            torch.full((n,), self.num_sequences, dtype=torch.int64, device=dev)
            if seq is None
            else seq.to(dev)
        )
        err = token_errors(x, x_hat)  # [T]
        xd = x.double()
        self._grow(int(seq.max()) + 1, dev)
        e64 = err.double()
        self._seq[0].index_add_(0, seq, e64)
        self._seq[1].index_add_(0, seq, torch.ones_like(e64))
        self._seq[2].index_add_(0, seq, e64 * special)
        self._seq[3].index_add_(0, seq, special.double())
        mean_b = xd.mean(0)
        m2_b = (xd - mean_b).pow(2).sum()
        xh = x_hat.float()
        cos = torch.nn.functional.cosine_similarity(xh, x.float(), dim=-1).double().sum()
        ratio = (xh.norm(dim=-1) / x.float().norm(dim=-1).clamp_min(1e-8)).double().sum()
        if self.num_tokens == 0:  # the first batch as is: one batch gives exactly the two-pass numbers
            self._err, self._mean, self._m2 = e64.sum(), mean_b, m2_b
            self._l0, self._cos, self._ratio = l0.double().sum(), cos, ratio
        else:  # Chan et al.'s pairwise update of the mean and the sum of squared deviations
            na, total = self.num_tokens, self.num_tokens + n
            delta = mean_b - self._mean
            self._m2 = self._m2 + m2_b + delta.pow(2).sum() * (na * n / total)
            self._mean = self._mean + delta * (n / total)
            self._err = self._err + e64.sum()
            self._l0, self._cos, self._ratio = (
                self._l0 + l0.double().sum(),
                self._cos + cos,
                self._ratio + ratio,
            )
        self.num_tokens += n
        return self

    def _grow(self, needed: int, dev) -> None:
        self.num_sequences = max(self.num_sequences, needed)
        have = 0 if self._seq is None else self._seq.shape[1]
        if needed > have:
            grown = torch.zeros(4, max(needed, 2 * have), dtype=torch.float64, device=dev)
            if self._seq is not None:
                grown[:, :have] = self._seq
            self._seq = grown

    def _count_fired(self, counts: Tensor) -> None:
        if not self._acts_everywhere:
            return
        self.fire_counts = counts if self.fire_counts is None else self.fire_counts + counts

    def compute(self) -> dict:
        """The CORE_KEYS (train's held-out metrics); {} before any token."""
        if self.num_tokens == 0:
            return {}
        s = self._seq[:, : self.num_sequences]
        mse = _per_sequence_mean(s[0], s[1])
        mse_st = _per_sequence_mean(s[2], s[3])
        d = self._mean.shape[0]
        ev = 1.0 - float(self._err * d / self._m2) if self._m2 > 0 else float("nan")
        return {
            "mse": mse,
            "mse_st": mse_st,
            "log2_mse": _log2(mse),
            "log2_mse_st": _log2(mse_st),
            "explained_variance": ev,
            "l0": float(self._l0 / self.num_tokens),
        }

    def extras(self, *, dense_above: float = DENSE_ABOVE) -> dict:
        """cosine_sim, relative_norm, and dead_frac / dense_frac when every update passed acts."""
        if self.num_tokens == 0:
            return {}
        out = {
            "cosine_sim": float(self._cos / self.num_tokens),
            "relative_norm": float(self._ratio / self.num_tokens),
        }
        if self._acts_everywhere and self.fire_counts is not None:
            out.update(firing_fractions(self.fire_counts, self.num_tokens, dense_above=dense_above))
        return out


def reconstruction_metrics(x: Tensor, x_hat: Tensor, *, extras: bool = False, **kw) -> dict:
    """The metrics of one batch of tokens (keywords as ReconstructionStats.update); extras adds extras()."""
    stats = ReconstructionStats().update(x, x_hat, **kw)
    return {**stats.compute(), **(stats.extras() if extras else {})}


@dataclass
class HeldOut:
    """All held-out tokens in one matrix, with their sequence index and whether each is a special token."""

    x: Tensor  # [N, d] float32, raw units
    seq: Tensor  # [N] int64, 0..S-1
    special: Tensor  # [N] bool
    num_sequences: int

    @classmethod
    def from_sequences(cls, sequences, *, device) -> HeldOut:
        """`sequences`: iterable of (acts [T, d] float32 array/tensor, token_types [T] uint8)."""
        xs, seqs, specials = [], [], []
        for i, (acts, types) in enumerate(sequences):
            acts = torch.as_tensor(np.asarray(acts, dtype=np.float32))
            xs.append(acts)
            seqs.append(torch.full((acts.shape[0],), i, dtype=torch.int64))
            specials.append(torch.as_tensor(np.asarray(types) == SPECIAL))
        if not xs:
            return cls(
                x=torch.zeros(0, 0),
                seq=torch.zeros(0, dtype=torch.int64),
                special=torch.zeros(0, dtype=torch.bool),
                num_sequences=0,
            )
        return cls(
            x=torch.cat(xs).to(device),
            seq=torch.cat(seqs).to(device),
            special=torch.cat(specials).to(device),
            num_sequences=len(xs),
        )

    def __len__(self) -> int:
        return self.x.shape[0]


@torch.no_grad()
def heldout_metrics(sae, held: HeldOut, *, scale: float = 1.0, chunk: int = 8192) -> dict:
    """The CORE_KEYS for one SAE trained on x·scale, over every held-out token (in raw units)."""
    stats = ReconstructionStats()
    for a in range(0, len(held), chunk):
        x = held.x[a : a + chunk]
        acts = sae.encode(x * scale)
        x_hat = sae.decode(acts) / scale
        l0 = (acts > 0).sum(-1)  # no per-latent counts: train keeps its own
        stats.update(x, x_hat, l0=l0, special=held.special[a : a + chunk], seq=held.seq[a : a + chunk])
    return stats.compute()
