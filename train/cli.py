"""`fastsae train`: the typer command. Its options mirror TrainConfig field for field (a test checks it);
the help strings are the config's field docs. Comma-separated values of --arch, --expansion, --sparsity-coef,
--k and --lr make a sweep trained in one pass over the data (see train/config.py)."""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Annotated

import typer

from fastsae.train.config import BDecInit, Recipe, TrainConfig, TrainConfigError

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _h(name: str) -> str:
    return _FIELDS[name].metadata["help"]


def _split(text: str | None, kind, flag: str):
    if text is None:
        return None
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise TrainConfigError(f"--{flag} is empty")
    try:
        return tuple(kind(t.replace("_", "")) if kind is not str else t.lower() for t in items)
    except ValueError:
        raise TrainConfigError(
            f"--{flag}: cannot read {text!r} as comma-separated {kind.__name__} values"
        ) from None


def train(
    store: Annotated[str, typer.Option(help=_h("store"))],
    layer: Annotated[int, typer.Option(help=_h("layer"))],
    out: Annotated[str, typer.Option(help=_h("out"))],
    recipe: Annotated[Recipe, typer.Option(help=_h("recipe"))] = Recipe.DEFAULT,
    arch: Annotated[str, typer.Option(help=_h("arch"))] = "jumprelu",
    expansion: Annotated[str, typer.Option(help=_h("expansion"))] = "16",
    sparsity_coef: Annotated[str | None, typer.Option(help=_h("sparsity_coef"))] = None,
    k: Annotated[str | None, typer.Option(help=_h("k"))] = None,
    lr: Annotated[str | None, typer.Option(help=_h("lr"))] = None,
    lr_end_ratio: Annotated[float | None, typer.Option(help=_h("lr_end_ratio"))] = None,
    lr_warmup_steps: Annotated[int | None, typer.Option(help=_h("lr_warmup_steps"))] = None,
    lr_decay_steps: Annotated[int | None, typer.Option(help=_h("lr_decay_steps"))] = None,
    sparsity_warmup_steps: Annotated[int | None, typer.Option(help=_h("sparsity_warmup_steps"))] = None,
    tokens: Annotated[str | None, typer.Option(help=_h("tokens"))] = None,
    batch_size: Annotated[int | None, typer.Option(help=_h("batch_size"))] = None,
    adam_beta1: Annotated[float, typer.Option(help=_h("adam_beta1"))] = 0.9,
    adam_beta2: Annotated[float, typer.Option(help=_h("adam_beta2"))] = 0.999,
    grad_clip: Annotated[float, typer.Option(help=_h("grad_clip"))] = 1.0,
    seed: Annotated[int, typer.Option(help=_h("seed"))] = 42,
    b_dec_init: Annotated[BDecInit, typer.Option(help=_h("b_dec_init"))] = BDecInit.GEOMETRIC_MEDIAN,
    init_sample_tokens: Annotated[int, typer.Option(help=_h("init_sample_tokens"))] = 16_384,
    normalize_activations: Annotated[bool, typer.Option(help=_h("normalize_activations"))] = False,
    jumprelu_bandwidth: Annotated[float | None, typer.Option(help=_h("jumprelu_bandwidth"))] = None,
    jumprelu_init_threshold: Annotated[float | None, typer.Option(help=_h("jumprelu_init_threshold"))] = None,
    jumprelu_log_threshold: Annotated[bool | None, typer.Option(help=_h("jumprelu_log_threshold"))] = None,
    dead_feature_threshold: Annotated[float, typer.Option(help=_h("dead_feature_threshold"))] = 1e-8,
    dead_feature_window: Annotated[int, typer.Option(help=_h("dead_feature_window"))] = 1000,
    feature_sampling_window: Annotated[int, typer.Option(help=_h("feature_sampling_window"))] = 2000,
    aux_k_coef: Annotated[float, typer.Option(help=_h("aux_k_coef"))] = 1 / 32,
    token_types: Annotated[str, typer.Option(help=_h("token_types"))] = "all",
    holdout: Annotated[float, typer.Option(help=_h("holdout"))] = 0.02,
    eval_tokens: Annotated[int, typer.Option(help=_h("eval_tokens"))] = 65_536,
    buffer_tokens: Annotated[int, typer.Option(help=_h("buffer_tokens"))] = 2**19,
    chunk_tokens: Annotated[int, typer.Option(help=_h("chunk_tokens"))] = 4096,
    log_every: Annotated[int, typer.Option(help=_h("log_every"))] = 100,
    eval_every: Annotated[int, typer.Option(help=_h("eval_every"))] = 1000,
    checkpoint_every: Annotated[int, typer.Option(help=_h("checkpoint_every"))] = 1000,
    device: Annotated[str, typer.Option(help=_h("device"))] = "auto",
    progress: Annotated[bool, typer.Option(help=_h("progress"))] = True,
    sae_workers: Annotated[int, typer.Option(help=_h("sae_workers"))] = 0,
    reuse_host_memory: Annotated[bool, typer.Option(help=_h("reuse_host_memory"))] = True,
) -> None:
    """Train sparse autoencoders on a layer of an activation store (a sweep: every combination in one pass)."""
    kw = {name: value for name, value in locals().items() if name in _FIELDS}
    # Before torch is imported: idle OpenMP threads must sleep, not spin (the reader's threads share the cores).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from rich.console import Console

    from fastsae.store import StoreError

    err = Console(stderr=True)
    try:
        kw["arch"] = _split(arch, str, "arch")
        kw["expansion"] = _split(expansion, int, "expansion")
        kw["sparsity_coef"] = _split(sparsity_coef, float, "sparsity-coef")
        kw["k"] = _split(k, int, "k")
        kw["lr"] = _split(lr, float, "lr")
        tok = _split(tokens, int, "tokens")
        if tok is not None and len(tok) != 1:
            raise TrainConfigError("--tokens takes one value")
        kw["tokens"] = tok[0] if tok else None
        cfg = TrainConfig(**kw)
        _run(cfg, err)
    except _user_errors(StoreError) as e:
        print(f"Error: {_one_line(e)}", file=sys.stderr)
        raise typer.Exit(2) from None


def _user_errors(store_error) -> tuple:
    from fastsae.train.config import TrainError
    from fastsae.train.export import ExportError
    from fastsae.train.reader import ReaderError
    from fastsae.train.sae import SAESpecError

    return (TrainError, store_error, ReaderError, SAESpecError, ExportError)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _run(cfg: TrainConfig, err) -> None:
    from fastsae.train.trainer import NonFiniteError, train_saes

    try:
        paths = train_saes(cfg, console=err)
    except NonFiniteError as e:
        print(f"Error: {_one_line(e)}", file=sys.stderr)
        raise typer.Exit(1) from None
    from fastsae.train.metrics import read_metrics

    for p in paths:
        held = [r for r in read_metrics(p / "metrics.jsonl") if r.get("split") == "heldout"]
        if held:  # the final held-out evaluation, in the paper's averaging
            h = held[-1]
            err.print(
                f"saved {p}: held-out MSE {h['mse']:.4g} (log2 {h['log2_mse']:.2f}), MSE_st {h['mse_st']:.4g}, "
                f"explained variance {h['explained_variance']:.3f}, L0 {h['l0']:.1f}, dead {h['dead_frac']:.1%}"
            )
        else:
            err.print(f"saved {p}")
