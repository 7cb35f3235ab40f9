"""Recipes: the defaults of the TrainConfig fields left as None; an explicit value always wins.

`resolve(cfg)` returns the config with the recipe's values filled in — that resolved config is what a run
saves (sparsity_coef / k may stay None: "each architecture's default", recorded per SAE in its folder).

- paper (Appendix C of the FAST paper): Adam β=(0.9, 0.999); lr 7e-5 → 7e-6 (linear warm-up over 16,000
  steps, constant, cosine decay over the last 64,000 steps, see train/schedule.py); sparsity coefficient 0.01
  (JumpReLU) / 5 (Standard) warmed up linearly over 10,000 steps; 40,960,000 tokens in batches of 128
  (= 320,000 steps); seed 42; float32; b_dec = geometric median of a sample; Kaiming-uniform weights; unit
  decoder rows; dead-feature threshold 1e-8, dead window 1,000 steps, feature sampling window 2,000 steps;
  JumpReLU bandwidth 0.001, initial threshold 0.001, θ stored as log θ; no input noise; b_dec not
  subtracted from the input; gradient-norm clip 1.0.
- default: the same, but batches of 4,096 tokens (10,000 steps for 40.96M tokens), JumpReLU bandwidth 0.05 and
  initial threshold 0.01 with θ stored directly.
  Both recipes express the warm-up/decay lengths as fractions of the run (lr warm-up 5%, lr decay 20%,
  sparsity warm-up 3.125%), which for the paper's 320,000 steps are exactly its 16,000 / 64,000 / 10,000.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import TYPE_CHECKING

from fastsae.train.errors import fail

if TYPE_CHECKING:
    from fastsae.train.config import TrainConfig


class Recipe(str, Enum):
    DEFAULT = "default"
    PAPER = "paper"


class BDecInit(str, Enum):
    GEOMETRIC_MEDIAN = "geometric_median"
    MEAN = "mean"
    ZEROS = "zeros"


PAPER_TOKENS = 40_960_000
RECIPES: dict[Recipe, dict] = {
    Recipe.PAPER: dict(
        lr=(7e-5,),
        lr_end_ratio=0.1,
        tokens=PAPER_TOKENS,
        batch_size=128,
        jumprelu_bandwidth=0.001,
        jumprelu_init_threshold=0.001,
        jumprelu_log_threshold=True,
    ),
    Recipe.DEFAULT: dict(
        lr=(7e-5,),
        lr_end_ratio=0.1,
        tokens=PAPER_TOKENS,
        batch_size=4096,
        jumprelu_bandwidth=0.05,
        jumprelu_init_threshold=0.01,
        jumprelu_log_threshold=False,
    ),
}
# Schedule lengths as fractions of the run: 16,000 / 64,000 / 10,000 of the paper's 320,000 steps.
LR_WARMUP_FRACTION = 0.05
LR_DECAY_FRACTION = 0.20
SPARSITY_WARMUP_FRACTION = 10_000 / 320_000
EVAL_EVERY_MAX = 1000


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill the None fields from the recipe (explicit values win) and the schedule fractions."""
    recipe = RECIPES[Recipe(cfg.recipe)]
    values = {k: v for k, v in recipe.items() if getattr(cfg, k) is None}
    c = dataclasses.replace(cfg, recipe=Recipe(cfg.recipe), b_dec_init=BDecInit(cfg.b_dec_init), **values)
    steps = total_steps(c)
    fill = {}
    if c.lr_warmup_steps is None:
        fill["lr_warmup_steps"] = round(LR_WARMUP_FRACTION * steps)
    if c.lr_decay_steps is None:
        fill["lr_decay_steps"] = round(LR_DECAY_FRACTION * steps)
    if c.sparsity_warmup_steps is None:
        fill["sparsity_warmup_steps"] = round(SPARSITY_WARMUP_FRACTION * steps)
    if c.eval_every is None:  # ~10 held-out points on a short run's curves, one per 1,000 steps on long ones
        fill["eval_every"] = min(EVAL_EVERY_MAX, max(1, steps // 10))
    # sparsity_coef / k stay None = "the architecture's default" (sweep_points fills them per SAE)
    c = dataclasses.replace(c, **fill)
    if c.lr_warmup_steps + c.lr_decay_steps > steps:
        fail(
            f"lr warm-up ({c.lr_warmup_steps}) + decay ({c.lr_decay_steps}) steps exceed the run's {steps} steps"
        )
    return c


def total_steps(cfg: TrainConfig) -> int:
    """Optimizer steps of the run: tokens // batch_size (a resolved config)."""
    return cfg.tokens // cfg.batch_size
