"""Learning-rate and sparsity-coefficient schedules (pure functions of the step).

`step` t counts optimizer steps already taken: the update applied at step t (t = 0 .. T-1, T = total_steps)
uses lr(t) and λ(t). With peak lr η, final lr η_end = η · lr_end_ratio, warm-up W and decay D steps:

    lr(t) = η · (t + 1) / W                                  for t < W              (linear warm-up from ≈0)
          = η                                                for W ≤ t < T − D       (constant)
          = η_end + (η − η_end) · (1 + cos(π · p)) / 2,      p = (t − (T − D)) / D   for t ≥ T − D (cosine decay)

so lr(0) = η/W, lr(W) = η, lr(T − D) = η and lr(T) = η_end (T itself is past the last update; the last update
uses a value within (η − η_end)·π²/(4D²) of η_end). This is the paper's "cosine annealing with 16,000 warm-up
and 64,000 decay steps" read as SAELens's lr_warm_up_steps / lr_decay_steps: warm-up, constant plateau,
cosine decay over the LAST D steps. Paper: η = 7e-5, η_end = 7e-6, W = 16,000, D = 64,000, T = 320,000.

The sparsity coefficient warms up linearly and then stays constant:

    λ(t) = λ · min(1, (t + 1) / W_λ)       (λ(t) = λ when W_λ = 0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, decay_steps: int, end_ratio: float) -> float:
    """lr(step) / η: the schedule above with η = 1 and η_end = end_ratio."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_start = total_steps - decay_steps
    if decay_steps <= 0 or step < decay_start:
        return 1.0
    p = min(1.0, (step - decay_start) / decay_steps)
    return end_ratio + (1.0 - end_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))


def sparsity_factor(step: int, *, warmup_steps: int) -> float:
    """λ(step) / λ: linear warm-up over warmup_steps, then 1."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, (step + 1) / warmup_steps)


@dataclass(frozen=True)
class Schedule:
    """The schedules of one run; SAEs of a sweep share the factors and scale them by their own η and λ."""

    total_steps: int
    lr_warmup_steps: int
    lr_decay_steps: int
    lr_end_ratio: float
    sparsity_warmup_steps: int

    @classmethod
    def from_config(cls, cfg) -> Schedule:
        """From a resolved TrainConfig."""
        return cls(
            total_steps=cfg.tokens // cfg.batch_size,
            lr_warmup_steps=cfg.lr_warmup_steps,
            lr_decay_steps=cfg.lr_decay_steps,
            lr_end_ratio=cfg.lr_end_ratio,
            sparsity_warmup_steps=cfg.sparsity_warmup_steps,
        )

    def lr_factor(self, step: int) -> float:
        return lr_factor(
            step,
            total_steps=self.total_steps,
            warmup_steps=self.lr_warmup_steps,
            decay_steps=self.lr_decay_steps,
            end_ratio=self.lr_end_ratio,
        )

    def sparsity_factor(self, step: int) -> float:
        return sparsity_factor(step, warmup_steps=self.sparsity_warmup_steps)

    def lr(self, step: int, peak: float) -> float:
        return peak * self.lr_factor(step)

    def sparsity_coef(self, step: int, coef: float) -> float:
        return coef * self.sparsity_factor(step)
