"""TrainConfig: every knob of `fastsae train`, one field per CLI flag.

The field help strings below ARE the CLI help (train/cli.py mirrors the fields 1:1 and a test checks it).
The rules on their values: train/config_checks.py (checked at construction). Recipes (the defaults of the
fields left as None, and `resolve`): train/recipes.py. Sweeps (comma-separated axes, one SAE per point):
train/sweep.py. Their names are importable from here too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum

from fastsae.train.config_checks import MAX_HOLDOUT, MIN_BUFFER_TOKENS, PARALLEL, validate
from fastsae.train.errors import TrainConfigError, TrainError
from fastsae.train.recipes import (
    EVAL_EVERY_MAX,
    LR_DECAY_FRACTION,
    LR_WARMUP_FRACTION,
    PAPER_TOKENS,
    RECIPES,
    SPARSITY_WARMUP_FRACTION,
    BDecInit,
    Recipe,
    resolve,
    total_steps,
)
from fastsae.train.sweep import (
    ARCHS,
    DEFAULT_K,
    DEFAULT_SPARSITY_COEF,
    K_ARCHS,
    SPARSITY_ARCHS,
    SweepPoint,
    sweep_points,
)

__all__ = [
    "ARCHS", "DEFAULT_K", "DEFAULT_SPARSITY_COEF", "EVAL_EVERY_MAX", "K_ARCHS", "LR_DECAY_FRACTION",
    "LR_WARMUP_FRACTION", "MAX_HOLDOUT", "MIN_BUFFER_TOKENS", "OPERATIONAL_FIELDS", "PAPER_TOKENS", "PARALLEL",
    "RECIPES", "SPARSITY_ARCHS", "SPARSITY_WARMUP_FRACTION", "BDecInit", "Recipe", "SweepPoint", "TrainConfig",
    "TrainConfigError", "TrainError", "from_json", "resolve", "sweep_points", "to_json", "total_steps",
]  # fmt: skip

# Fields that change how a run is operated but not what it computes: a rerun may change them.
OPERATIONAL_FIELDS = (
    "device", "checkpoint_every", "progress", "reuse_host_memory", "sae_workers", "allow_incomplete", "parallel",
)  # fmt: skip


def _help(text: str) -> dict:
    return {"help": text}


@dataclass(frozen=True)
class TrainConfig:
    store: str = field(metadata=_help("Activation store to train on (a `fastsae harvest` output folder)."))
    layer: int = field(metadata=_help("Layer of the store to train on."))
    out: str = field(
        metadata=_help(
            "Output folder: one sub-folder per SAE (named from its settings) plus run.json and the checkpoint. "
            "Rerunning the same command resumes; a folder holding another config is refused."
        )
    )
    recipe: Recipe = field(
        default=Recipe.DEFAULT,
        metadata=_help(
            "Defaults for unset flags: 'paper' (Appendix C, batch 128) or 'default' (batch 4,096)."
        ),
    )
    arch: tuple[str, ...] = field(
        default=("jumprelu",),
        metadata=_help("SAE architecture(s), comma separated: " + ", ".join(ARCHS) + "."),
    )
    expansion: tuple[int, ...] = field(
        default=(16,), metadata=_help("d_sae / d_in, comma separated (paper: 8, 16).")
    )
    sparsity_coef: tuple[float, ...] | None = field(
        default=None,
        metadata=_help(
            "Sparsity coefficient λ for standard/jumprelu, comma separated. Default per architecture: "
            "0.01 (jumprelu), 5 (standard). Meaningless for topk/batchtopk (use --k)."
        ),
    )
    k: tuple[int, ...] | None = field(
        default=None,
        metadata=_help(
            f"Active latents per token for topk/batchtopk, comma separated (default {DEFAULT_K})."
        ),
    )
    lr: tuple[float, ...] | None = field(
        default=None, metadata=_help("Peak Adam learning rate(s), comma separated (recipe: 7e-5).")
    )
    lr_end_ratio: float | None = field(
        default=None, metadata=_help("Final lr as a fraction of the peak lr (recipe: 0.1, i.e. 7e-5 → 7e-6).")
    )
    lr_warmup_steps: int | None = field(
        default=None, metadata=_help("Linear lr warm-up steps (recipe: 5% of the steps; paper 16,000).")
    )
    lr_decay_steps: int | None = field(
        default=None,
        metadata=_help("Cosine lr decay over the last N steps (recipe: 20% of the steps; paper 64,000)."),
    )
    sparsity_warmup_steps: int | None = field(
        default=None,
        metadata=_help(
            "Linear sparsity-coefficient warm-up steps (recipe: 3.125% of the steps; paper 10,000)."
        ),
    )
    tokens: int | None = field(default=None, metadata=_help("Training tokens (recipe: 40,960,000)."))
    batch_size: int | None = field(
        default=None, metadata=_help("Tokens per batch (recipe: paper 128, default 4,096).")
    )
    adam_beta1: float = field(default=0.9, metadata=_help("Adam β1."))
    adam_beta2: float = field(default=0.999, metadata=_help("Adam β2."))
    grad_clip: float = field(default=1.0, metadata=_help("Clip each SAE's gradient norm to this (0 = off)."))
    seed: int = field(default=42, metadata=_help("Seed of the weight init and of the data order."))
    b_dec_init: BDecInit = field(
        default=BDecInit.GEOMETRIC_MEDIAN,
        metadata=_help("Decoder bias init: geometric_median (Weiszfeld) of a sample, mean, or zeros."),
    )
    init_sample_tokens: int = field(
        default=16_384,
        metadata=_help(
            "Tokens sampled for the b_dec init and the norm scale: the first tokens of the training stream "
            "(a separate reader, same seed; never held-out sequences). At least 2 × d_in."
        ),
    )
    normalize_activations: bool = field(
        default=False,
        metadata=_help(
            "Scale inputs so that E‖x‖ = √d (estimated on the init sample); folded into the weights on save."
        ),
    )
    jumprelu_bandwidth: float | None = field(
        default=None, metadata=_help("JumpReLU STE bandwidth ε (recipe: paper 0.001, default 0.05).")
    )
    jumprelu_init_threshold: float | None = field(
        default=None, metadata=_help("JumpReLU initial threshold θ (recipe: paper 0.001, default 0.01).")
    )
    jumprelu_log_threshold: bool | None = field(
        default=None, metadata=_help("Store θ as log θ (recipe: paper yes, default no: θ stored directly).")
    )
    dead_feature_threshold: float = field(
        default=1e-8,
        metadata=_help(
            "A feature firing on fewer than this fraction of tokens in a sampling window is rare."
        ),
    )
    dead_feature_window: int = field(
        default=1000, metadata=_help("A feature that has not fired for this many steps is dead.")
    )
    feature_sampling_window: int = field(
        default=2000, metadata=_help("Steps over which feature firing frequencies are measured and logged.")
    )
    aux_k_coef: float = field(
        default=1 / 32,
        metadata=_help(
            "TopK/BatchTopK: coefficient of the AuxK loss that lets dead latents (no firing for "
            "--dead-feature-window steps) reconstruct the residual (0 = off)."
        ),
    )
    token_types: str = field(
        default="all",
        metadata=_help("Token types to train on, comma separated (e.g. 'assistant,user' or 'all')."),
    )
    holdout: float = field(
        default=0.02,
        metadata=_help(
            f"Fraction of the store's sequences held out of training for the metrics (seeded; 0 to {MAX_HOLDOUT})."
        ),
    )
    eval_tokens: int = field(
        default=65_536,
        metadata=_help(
            "Held-out tokens evaluated (whole sequences, in store order, up to about this; at least one sequence)."
        ),
    )
    buffer_tokens: int = field(
        default=2**19,
        metadata=_help(
            "Tokens in the reader's mixing buffer. Uncompressed store: 8 bytes of RAM each, the rows are read in"
            " place from the page cache; compressed: a copy of the rows, buffer_tokens × d × 2 bytes in bf16."
        ),
    )
    chunk_tokens: int = field(
        default=4096, metadata=_help("Tokens the reader reads contiguously from a shard before moving on.")
    )
    log_every: int = field(
        default=100, metadata=_help("Log training scalars every N steps (the only syncs).")
    )
    eval_every: int | None = field(
        default=None,
        metadata=_help(
            "Held-out metrics every N steps (default: a tenth of the run, at most 1,000; 0 = only at the end)."
        ),
    )
    checkpoint_every: int = field(default=1000, metadata=_help("Checkpoint every N steps (0 = never)."))
    device: str = field(
        default="auto", metadata=_help("Torch device: auto (cuda if available, else cpu), cpu, cuda:0, ...")
    )
    progress: bool = field(default=True, metadata=_help("Show the progress bar."))
    sae_workers: int = field(
        default=0,
        metadata=_help(
            "CPU: step the SAEs of a sweep concurrently on this many threads, splitting torch's intra-op threads "
            "between them (0 = auto: one per SAE up to torch's thread count; 1 = one after another; CUDA: 1)."
        ),
    )
    allow_incomplete: bool = field(
        default=False,
        metadata=_help(
            "Train on a store its writers' records call incomplete (a harvest still running or stopped, or "
            "shards missing); refused by default."
        ),
    )
    parallel: str = field(
        default="auto",
        metadata=_help(
            "Under torchrun: sweep (the sweep's SAEs spread over the ranks, each reading every batch), data (every "
            "rank a part of each batch, gradients all-reduced), or auto (sweep when there are at least as many "
            "SAEs as ranks). One process ignores it."
        ),
    )
    reuse_host_memory: bool = field(
        default=True,
        metadata=_help(
            "CPU training: keep freed host memory in the process for reuse (glibc mallopt, process-wide) instead "
            "of page-faulting fresh [batch, d_sae] temporaries every step; RSS then stays at its peak."
        ),
    )

    def __post_init__(self):  # validation only (raises); no side effects
        validate(self)


def to_json(cfg: TrainConfig) -> dict:
    """The config as plain JSON values (enums as their strings, tuples as lists)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = v.value if isinstance(v, Enum) else list(v) if isinstance(v, tuple) else v
    return out


def from_json(d: dict) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names}
    return TrainConfig(**kw)
