"""The rules a TrainConfig's values must satisfy, checked when it is built (TrainConfig.__post_init__): each
bad value is one TrainConfigError naming its flag, before any store is opened."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from fastsae.train.errors import fail
from fastsae.train.recipes import Recipe
from fastsae.train.sweep import ARCHS, K_ARCHS, SPARSITY_ARCHS

if TYPE_CHECKING:
    from fastsae.train.config import TrainConfig

MAX_HOLDOUT = 0.5  # a held-out split measures; past half the store a run evaluates on more than it trains on
MIN_BUFFER_TOKENS = 2  # the mixing buffer emits a random half of its slots a round: one slot cannot mix
PARALLEL = ("auto", "sweep", "data")


def validate(c: TrainConfig) -> None:
    """Raises TrainConfigError naming the first bad field (its flag); no side effects."""
    if not isinstance(c.recipe, Recipe):
        try:
            Recipe(c.recipe)
        except ValueError:
            fail(f"unknown --recipe {c.recipe!r} (choose: default, paper)")
    if not c.arch:
        fail("--arch is empty")
    for name, values in (
        ("arch", c.arch),
        ("expansion", c.expansion),
        ("sparsity-coef", c.sparsity_coef),
        ("k", c.k),
        ("lr", c.lr),
    ):
        if values is not None and len(set(values)) != len(values):
            fail(f"--{name} lists a value twice: {','.join(map(str, values))}")
    for a in c.arch:
        if a not in ARCHS:
            fail(f"unknown --arch {a!r} (choose: {', '.join(ARCHS)})")
    for e in c.expansion:
        if not isinstance(e, int) or e < 1:
            fail(f"--expansion must be a whole number ≥ 1, got {e!r}")
    if c.sparsity_coef is not None:
        if not any(a in SPARSITY_ARCHS for a in c.arch):
            fail("--sparsity-coef makes no sense for topk/batchtopk (they use --k)")
        for s in c.sparsity_coef:
            if not math.isfinite(s) or s < 0:
                fail(f"--sparsity-coef must be a finite number ≥ 0, got {s!r}")
    if c.k is not None:
        if not any(a in K_ARCHS for a in c.arch):
            fail("--k only applies to topk/batchtopk; standard/jumprelu use --sparsity-coef")
        for k in c.k:
            if not isinstance(k, int) or k < 1:
                fail(f"--k must be a whole number ≥ 1, got {k!r}")
    for lr in c.lr or ():
        if not math.isfinite(lr) or lr <= 0:
            fail(f"--lr must be > 0, got {lr!r}")
    if c.lr_end_ratio is not None and not 0 < c.lr_end_ratio <= 1:
        fail(f"--lr-end-ratio must be in (0, 1], got {c.lr_end_ratio!r}")
    for name in ("lr_warmup_steps", "lr_decay_steps", "sparsity_warmup_steps", "eval_every"):
        v = getattr(c, name)
        if v is not None and v < 0:
            fail(f"--{name.replace('_', '-')} must be ≥ 0, got {v}")
    if c.batch_size is not None and c.batch_size < 1:
        fail(f"--batch-size must be ≥ 1, got {c.batch_size}")
    if c.tokens is not None and c.tokens < 1:
        fail(f"--tokens must be ≥ 1, got {c.tokens}")
    if c.tokens is not None and c.batch_size is not None and c.tokens < c.batch_size:
        fail(f"--tokens ({c.tokens}) is less than one batch (--batch-size {c.batch_size})")
    if not 0 <= c.adam_beta1 < 1 or not 0 <= c.adam_beta2 < 1:
        fail("--adam-beta1/--adam-beta2 must be in [0, 1)")
    if not (math.isfinite(c.aux_k_coef) and c.aux_k_coef >= 0):
        fail(f"--aux-k-coef must be a finite number ≥ 0, got {c.aux_k_coef}")
    if c.grad_clip < 0:
        fail(f"--grad-clip must be ≥ 0, got {c.grad_clip}")
    if c.jumprelu_bandwidth is not None and not c.jumprelu_bandwidth > 0:
        fail(f"--jumprelu-bandwidth must be > 0, got {c.jumprelu_bandwidth}")
    if c.jumprelu_init_threshold is not None and not c.jumprelu_init_threshold > 0:
        fail(f"--jumprelu-init-threshold must be > 0, got {c.jumprelu_init_threshold}")
    for name in (
        "init_sample_tokens",
        "dead_feature_window",
        "feature_sampling_window",
        "log_every",
        "chunk_tokens",
    ):
        if getattr(c, name) < 1:
            fail(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(c, name)}")
    if c.eval_tokens < 1:
        fail(f"--eval-tokens must be ≥ 1, got {c.eval_tokens} (--holdout 0 trains without held-out metrics)")
    if c.buffer_tokens < MIN_BUFFER_TOKENS:
        fail(
            f"--buffer-tokens must be ≥ {MIN_BUFFER_TOKENS} (the buffer emits a random half of its slots a round), "
            f"got {c.buffer_tokens}"
        )
    if not 0 <= c.holdout <= MAX_HOLDOUT:
        fail(
            f"--holdout must be in [0, {MAX_HOLDOUT}], got {c.holdout}: it is the share of sequences kept out of "
            "training for the metrics; more than half would train on less than it evaluates"
        )
    if c.parallel not in PARALLEL:
        fail(f"unknown --parallel {c.parallel!r}; choose one of {', '.join(PARALLEL)}")
    for name in ("checkpoint_every", "sae_workers"):
        if getattr(c, name) < 0:
            fail(f"--{name.replace('_', '-')} must be ≥ 0, got {getattr(c, name)}")
    if not c.dead_feature_threshold >= 0:
        fail(f"--dead-feature-threshold must be ≥ 0, got {c.dead_feature_threshold}")
