"""`fastsae train`: the typer command. Its options mirror TrainConfig field for field: each help is the
field's doc and each default the field's default (tests/test_cli_options.py checks both). Comma-separated
values of --arch, --expansion, --sparsity-coef, --k and --lr make a sweep trained in one pass over the data
(see train/sweep.py). Count flags take the usual spellings: 1e6, 1_000_000, 1,000,000, 256k, 1M.

Bad input raises (TrainError, StoreError, ...: all FastSAEError); fastsae/cli.py prints it as one line.
SIGTERM or SIGINT: the run checkpoints, says so on one line and exits 143 or 130 (train/interrupt.py)."""

from __future__ import annotations

import logging
import os
from enum import Enum
from typing import Annotated

import typer

from fastsae.options import ConfigFields, parse_count
from fastsae.train.config import PARALLEL, BDecInit, Recipe, TrainConfig, TrainConfigError

F = ConfigFields(TrainConfig)
_o, _c, _d = F.option, F.count, F.default
# the sweep axes: comma-separated on the command line, tuples in the config
_SWEEP = {"arch": str, "expansion": parse_count, "sparsity_coef": float, "k": parse_count, "lr": float}
Parallel = Enum("Parallel", [(v, v) for v in PARALLEL], type=str)  # typer reads choices from an Enum


def _joined(values: tuple | None) -> str | None:
    return None if values is None else ",".join(map(str, values))


def _split(text: str | None, kind, flag: str):
    if text is None:
        return None
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise TrainConfigError(f"--{flag} is empty")
    if kind is str:
        return tuple(t.lower() for t in items)
    try:
        return tuple(kind(t.replace("_", "")) if kind is float else kind(t) for t in items)
    except ValueError as e:
        detail = str(e) if kind is parse_count else f"cannot read {text!r} as comma-separated numbers"
        raise TrainConfigError(f"--{flag}: {detail}") from None


def to_config(values: dict) -> TrainConfig:
    """The command's option values (as typer passes them, or click's raw defaults) -> a validated TrainConfig."""
    kw = {name: values[name] for name in F.by_name}
    for name, kind in _SWEEP.items():
        kw[name] = _split(kw[name], kind, name.replace("_", "-"))
    kw["recipe"] = Recipe(kw["recipe"])
    kw["b_dec_init"] = BDecInit(kw["b_dec_init"])
    kw["parallel"] = getattr(kw["parallel"], "value", kw["parallel"])
    return TrainConfig(**kw)


def train(
    store: Annotated[str, _o("store")],
    layer: Annotated[int, _o("layer")],
    out: Annotated[str, _o("out")],
    recipe: Annotated[Recipe, _o("recipe")] = _d("recipe"),
    arch: Annotated[str, _o("arch")] = _joined(_d("arch")),
    expansion: Annotated[str, _o("expansion")] = _joined(_d("expansion")),
    sparsity_coef: Annotated[str | None, _o("sparsity_coef")] = _joined(_d("sparsity_coef")),
    k: Annotated[str | None, _o("k")] = _joined(_d("k")),
    lr: Annotated[str | None, _o("lr")] = _joined(_d("lr")),
    lr_end_ratio: Annotated[float | None, _o("lr_end_ratio")] = _d("lr_end_ratio"),
    lr_warmup_steps: Annotated[int | None, _c("lr_warmup_steps")] = _d("lr_warmup_steps"),
    lr_decay_steps: Annotated[int | None, _c("lr_decay_steps")] = _d("lr_decay_steps"),
    sparsity_warmup_steps: Annotated[int | None, _c("sparsity_warmup_steps")] = _d("sparsity_warmup_steps"),
    tokens: Annotated[int | None, _c("tokens")] = _d("tokens"),
    batch_size: Annotated[int | None, _c("batch_size")] = _d("batch_size"),
    adam_beta1: Annotated[float, _o("adam_beta1")] = _d("adam_beta1"),
    adam_beta2: Annotated[float, _o("adam_beta2")] = _d("adam_beta2"),
    grad_clip: Annotated[float, _o("grad_clip")] = _d("grad_clip"),
    seed: Annotated[int, _o("seed")] = _d("seed"),
    b_dec_init: Annotated[BDecInit, _o("b_dec_init")] = _d("b_dec_init"),
    init_sample_tokens: Annotated[int, _c("init_sample_tokens")] = _d("init_sample_tokens"),
    normalize_activations: Annotated[bool, _o("normalize_activations")] = _d("normalize_activations"),
    jumprelu_bandwidth: Annotated[float | None, _o("jumprelu_bandwidth")] = _d("jumprelu_bandwidth"),
    jumprelu_init_threshold: Annotated[float | None, _o("jumprelu_init_threshold")] = _d(
        "jumprelu_init_threshold"
    ),
    jumprelu_log_threshold: Annotated[bool | None, _o("jumprelu_log_threshold")] = _d(
        "jumprelu_log_threshold"
    ),
    dead_feature_threshold: Annotated[float, _o("dead_feature_threshold")] = _d("dead_feature_threshold"),
    dead_feature_window: Annotated[int, _c("dead_feature_window")] = _d("dead_feature_window"),
    feature_sampling_window: Annotated[int, _c("feature_sampling_window")] = _d("feature_sampling_window"),
    aux_k_coef: Annotated[float, _o("aux_k_coef")] = _d("aux_k_coef"),
    token_types: Annotated[str, _o("token_types")] = _d("token_types"),
    holdout: Annotated[float, _o("holdout")] = _d("holdout"),
    eval_tokens: Annotated[int, _c("eval_tokens")] = _d("eval_tokens"),
    buffer_tokens: Annotated[int, _c("buffer_tokens")] = _d("buffer_tokens"),
    chunk_tokens: Annotated[int, _c("chunk_tokens")] = _d("chunk_tokens"),
    log_every: Annotated[int, _c("log_every")] = _d("log_every"),
    eval_every: Annotated[int | None, _c("eval_every")] = _d("eval_every"),
    checkpoint_every: Annotated[int, _c("checkpoint_every")] = _d("checkpoint_every"),
    device: Annotated[str, _o("device")] = _d("device"),
    progress: Annotated[bool, _o("progress")] = _d("progress"),
    sae_workers: Annotated[int, _c("sae_workers")] = _d("sae_workers"),
    allow_incomplete: Annotated[bool, _o("allow_incomplete")] = _d("allow_incomplete"),
    reuse_host_memory: Annotated[bool, _o("reuse_host_memory")] = _d("reuse_host_memory"),
    parallel: Annotated[Parallel, _o("parallel")] = Parallel(_d("parallel")),
) -> None:
    """Train sparse autoencoders on a layer of an activation store (a sweep: every combination in one pass)."""
    cfg = to_config(locals())
    # Before torch is imported: idle OpenMP threads must sleep, not spin (the reader's threads share the cores).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from rich.console import Console

    _run(cfg, Console(stderr=True))


def _run(cfg: TrainConfig, err) -> None:
    from fastsae.train.interrupt import TrainInterrupted
    from fastsae.train.trainer import train_saes

    try:
        paths = train_saes(cfg, console=err)
    except TrainInterrupted as e:  # not an error: the run saved its progress and stops as the signal asked
        logging.getLogger(__name__).info(str(e))
        raise typer.Exit(e.exit_code) from None
    from fastsae.lm.distributed import ranks_from_env
    from fastsae.train.metrics import heldout_summary, read_metrics

    if not ranks_from_env().main:  # under torchrun rank 0 reports
        return

    for p in paths:
        err.print(f"saved {p}", soft_wrap=True)  # a log line: no hard breaks at the terminal width
        held = [r for r in read_metrics(p / "metrics.jsonl") if r.get("split") == "heldout"]
        if held:  # the final held-out evaluation, in the paper's averaging
            err.print(heldout_summary(held[-1]), soft_wrap=True)
