"""`fastsae features`: the typer command. Its options mirror FeaturesConfig field for field (help and default
from the field; tests/test_cli_options.py checks both).

Bad input raises (FeaturesInputError, SAEError, StoreError, ModelLoadError: all FastSAEError) before any
work; fastsae/cli.py prints it as one line and exits 2."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from fastsae.interp.features_config import FeaturesConfig
from fastsae.options import ConfigFields

F = ConfigFields(FeaturesConfig)
_o, _c, _d = F.option, F.count, F.default


def to_config(values: dict) -> FeaturesConfig:
    """The command's option values -> a validated FeaturesConfig."""
    return FeaturesConfig(**{name: values[name] for name in F.by_name})


def features_cmd(
    sae: Annotated[str, _o("sae")],
    out: Annotated[str, _o("out")],
    store: Annotated[str | None, _o("store")] = _d("store"),
    sequences: Annotated[int | None, _c("sequences")] = _d("sequences"),
    seed: Annotated[int, _o("seed")] = _d("seed"),
    top_k: Annotated[int, _c("top_k")] = _d("top_k"),
    window: Annotated[int, _c("window")] = _d("window"),
    n_quantile: Annotated[int, _c("n_quantile")] = _d("n_quantile"),
    special_sequences: Annotated[int, _c("special_sequences")] = _d("special_sequences"),
    batch_tokens: Annotated[int, _c("batch_tokens")] = _d("batch_tokens"),
    delphi: Annotated[bool, _o("delphi")] = _d("delphi"),
    logits: Annotated[bool, _o("logits")] = _d("logits"),
    model: Annotated[str | None, _o("model")] = _d("model"),
    device: Annotated[str, _o("device")] = _d("device"),
    progress: Annotated[bool, _o("progress")] = _d("progress"),
) -> None:
    """What each SAE feature reads: density, histogram, token-type mass, top and quantile contexts, and
    the tokens its decoder direction promotes and suppresses (the logit view)."""
    cfg = to_config({k: v for k, v in locals().items() if k in F.by_name})
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: idle OpenMP threads sleep
    from rich.console import Console

    from fastsae.interp.features import run_features

    meta = run_features(cfg)
    out_dir = Path(cfg.out)
    live = meta["sae"]["d_sae"] - meta["n_dead"]
    Console(stderr=True).print(
        f"{live} live features of {meta['sae']['d_sae']} over {meta['n_sequences']} sequences "
        f"({meta['n_tokens']} tokens); saved {out_dir / 'features.json'}, features.safetensors, "
        "special_tokens.json/.md"
        + (", delphi/" if cfg.delphi else "")
        + ("" if meta["logits"] else " (no logit view: --no-logits)")
    )
