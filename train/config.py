"""TrainConfig: every knob of `fastsae train`, one field per CLI flag; recipes; sweep expansion.

The field help strings below ARE the CLI help (train/cli.py mirrors the fields 1:1 and a test checks it).

Recipes. A recipe supplies the defaults of the fields left as None; an explicit value always wins.
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

Sweeps. --arch, --expansion, --sparsity-coef, --k and --lr take comma-separated values; the run trains the
cartesian product in ONE pass over the data. The sparsity axis depends on the architecture: standard and
jumprelu combine with every --sparsity-coef value (default: the recipe's coefficient for that architecture),
topk and batchtopk with every --k value instead. So `--arch jumprelu,topk --expansion 8,16 --sparsity-coef
0.003,0.01 --k 32` trains 2×2 jumprelu + 2×1 topk = 6 SAEs. Each SAE's folder is named from its point
(`jumprelu-x16-sc0.01`, `topk-x8-k32`, plus `-lr7e-05` when --lr is swept).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from enum import Enum

from fastsae.errors import FastSAEError, UsageError


class TrainError(FastSAEError):
    """Base class of train's own errors (the CLI prints them as one line, exit code 2)."""


class TrainConfigError(TrainError, UsageError):
    """A bad train argument, detected before any training step."""


class Recipe(str, Enum):
    DEFAULT = "default"
    PAPER = "paper"


class BDecInit(str, Enum):
    GEOMETRIC_MEDIAN = "geometric_median"
    MEAN = "mean"
    ZEROS = "zeros"


ARCHS = ("standard", "jumprelu", "topk", "batchtopk")
SPARSITY_ARCHS = ("standard", "jumprelu")  # trained with a sparsity coefficient λ
K_ARCHS = ("topk", "batchtopk")  # sparsity set by k

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
DEFAULT_SPARSITY_COEF = {"jumprelu": 0.01, "standard": 5.0}  # paper, both recipes
DEFAULT_K = 64
EVAL_EVERY_MAX = 1000

MAX_HOLDOUT = 0.5  # a held-out split measures; past half the store a run evaluates on more than it trains on
MIN_BUFFER_TOKENS = 2  # the mixing buffer emits a random half of its slots a round: one slot cannot mix

# Fields that change how a run is operated but not what it computes: a rerun may change them.
OPERATIONAL_FIELDS = (
    "device", "checkpoint_every", "progress", "reuse_host_memory", "sae_workers", "allow_incomplete", "parallel",
)  # fmt: skip
PARALLEL = ("auto", "sweep", "data")


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
        _validate(self)


def _fail(msg: str):
    raise TrainConfigError(msg)


def _validate(c: TrainConfig) -> None:
    if not isinstance(c.recipe, Recipe):
        try:
            Recipe(c.recipe)
        except ValueError:
            _fail(f"unknown --recipe {c.recipe!r} (choose: default, paper)")
    if not c.arch:
        _fail("--arch is empty")
    for name, values in (
        ("arch", c.arch),
        ("expansion", c.expansion),
        ("sparsity-coef", c.sparsity_coef),
        ("k", c.k),
        ("lr", c.lr),
    ):
        if values is not None and len(set(values)) != len(values):
            _fail(f"--{name} lists a value twice: {','.join(map(str, values))}")
    for a in c.arch:
        if a not in ARCHS:
            _fail(f"unknown --arch {a!r} (choose: {', '.join(ARCHS)})")
    for e in c.expansion:
        if not isinstance(e, int) or e < 1:
            _fail(f"--expansion must be a whole number ≥ 1, got {e!r}")
    if c.sparsity_coef is not None:
        if not any(a in SPARSITY_ARCHS for a in c.arch):
            _fail("--sparsity-coef makes no sense for topk/batchtopk (they use --k)")
        for s in c.sparsity_coef:
            if not math.isfinite(s) or s < 0:
                _fail(f"--sparsity-coef must be a finite number ≥ 0, got {s!r}")
    if c.k is not None:
        if not any(a in K_ARCHS for a in c.arch):
            _fail("--k only applies to topk/batchtopk; standard/jumprelu use --sparsity-coef")
        for k in c.k:
            if not isinstance(k, int) or k < 1:
                _fail(f"--k must be a whole number ≥ 1, got {k!r}")
    for lr in c.lr or ():
        if not math.isfinite(lr) or lr <= 0:
            _fail(f"--lr must be > 0, got {lr!r}")
    if c.lr_end_ratio is not None and not 0 < c.lr_end_ratio <= 1:
        _fail(f"--lr-end-ratio must be in (0, 1], got {c.lr_end_ratio!r}")
    for name in ("lr_warmup_steps", "lr_decay_steps", "sparsity_warmup_steps", "eval_every"):
        v = getattr(c, name)
        if v is not None and v < 0:
            _fail(f"--{name.replace('_', '-')} must be ≥ 0, got {v}")
    if c.batch_size is not None and c.batch_size < 1:
        _fail(f"--batch-size must be ≥ 1, got {c.batch_size}")
    if c.tokens is not None and c.tokens < 1:
        _fail(f"--tokens must be ≥ 1, got {c.tokens}")
    if c.tokens is not None and c.batch_size is not None and c.tokens < c.batch_size:
        _fail(f"--tokens ({c.tokens}) is less than one batch (--batch-size {c.batch_size})")
    if not 0 <= c.adam_beta1 < 1 or not 0 <= c.adam_beta2 < 1:
        _fail("--adam-beta1/--adam-beta2 must be in [0, 1)")
    if not (math.isfinite(c.aux_k_coef) and c.aux_k_coef >= 0):
        _fail(f"--aux-k-coef must be a finite number ≥ 0, got {c.aux_k_coef}")
    if c.grad_clip < 0:
        _fail(f"--grad-clip must be ≥ 0, got {c.grad_clip}")
    if c.jumprelu_bandwidth is not None and not c.jumprelu_bandwidth > 0:
        _fail(f"--jumprelu-bandwidth must be > 0, got {c.jumprelu_bandwidth}")
    if c.jumprelu_init_threshold is not None and not c.jumprelu_init_threshold > 0:
        _fail(f"--jumprelu-init-threshold must be > 0, got {c.jumprelu_init_threshold}")
    for name in (
        "init_sample_tokens",
        "dead_feature_window",
        "feature_sampling_window",
        "log_every",
        "chunk_tokens",
    ):
        if getattr(c, name) < 1:
            _fail(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(c, name)}")
    if c.eval_tokens < 1:
        _fail(f"--eval-tokens must be ≥ 1, got {c.eval_tokens} (--holdout 0 trains without held-out metrics)")
    if c.buffer_tokens < MIN_BUFFER_TOKENS:
        _fail(
            f"--buffer-tokens must be ≥ {MIN_BUFFER_TOKENS} (the buffer emits a random half of its slots a round), "
            f"got {c.buffer_tokens}"
        )
    if not 0 <= c.holdout <= MAX_HOLDOUT:
        _fail(
            f"--holdout must be in [0, {MAX_HOLDOUT}], got {c.holdout}: it is the share of sequences kept out of "
            "training for the metrics; more than half would train on less than it evaluates"
        )
    if c.parallel not in PARALLEL:
        _fail(f"unknown --parallel {c.parallel!r}; choose one of {', '.join(PARALLEL)}")
    for name in ("checkpoint_every", "sae_workers"):
        if getattr(c, name) < 0:
            _fail(f"--{name.replace('_', '-')} must be ≥ 0, got {getattr(c, name)}")
    if not c.dead_feature_threshold >= 0:
        _fail(f"--dead-feature-threshold must be ≥ 0, got {c.dead_feature_threshold}")


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
        _fail(
            f"lr warm-up ({c.lr_warmup_steps}) + decay ({c.lr_decay_steps}) steps exceed the run's {steps} steps"
        )
    return c


def total_steps(cfg: TrainConfig) -> int:
    """Optimizer steps of the run: tokens // batch_size (a resolved config)."""
    return cfg.tokens // cfg.batch_size


@dataclass(frozen=True)
class SweepPoint:
    """One SAE of a sweep: its architecture, size, sparsity setting and peak lr."""

    arch: str
    expansion: int
    sparsity_coef: float | None  # standard / jumprelu
    k: int | None  # topk / batchtopk
    lr: float
    name: str


def _fmt(x: float) -> str:
    return f"{x:g}"


def sweep_points(cfg: TrainConfig) -> list[SweepPoint]:
    """The SAEs a resolved config trains, in a stable order (see the module doc for how axes combine)."""
    points = []
    for arch, expansion, lr in itertools.product(cfg.arch, cfg.expansion, cfg.lr):
        if arch in SPARSITY_ARCHS:
            # defaults are per architecture: jumprelu 0.01, standard 5 (not crossed with each other)
            coefs = cfg.sparsity_coef if cfg.sparsity_coef is not None else (DEFAULT_SPARSITY_COEF[arch],)
            settings = [(sc, None, f"sc{_fmt(sc)}") for sc in coefs]
        else:
            settings = [(None, k, f"k{k}") for k in (cfg.k or (DEFAULT_K,))]
        for sc, k, tag in settings:
            name = f"{arch}-x{expansion}-{tag}" + (f"-lr{_fmt(lr)}" if len(cfg.lr) > 1 else "")
            points.append(SweepPoint(arch=arch, expansion=expansion, sparsity_coef=sc, k=k, lr=lr, name=name))
    names = [p.name for p in points]
    if len(set(names)) != len(names):  # values equal to 6 significant digits would share (overwrite) a folder
        twice = sorted({n for n in names if names.count(n) > 1})
        _fail(f"two SAEs of the sweep would share the folder {twice[0]}; make the swept values differ more")
    return points


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
