"""`fastsae steer`: the typer command. Its options mirror SteerConfig field for field (help and default from
the field; tests/test_cli_options.py checks both). `--prompts a.jsonl b.parquet` takes several files after
one flag, or the flag repeated.

Bad input raises (SteerConfigError, SteerInputError, NoPromptsError, SAEError, ...: all FastSAEError);
fastsae/cli.py prints it as one line and exits 2."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from fastsae.interp.steer_config import SteerConfig, SteerConfigError
from fastsae.options import ConfigFields

F = ConfigFields(SteerConfig)
_o, _c, _d = F.option, F.count, F.default


def to_config(values: dict) -> SteerConfig:
    """The command's option values -> a validated SteerConfig."""
    kw = {name: values[name] for name in F.by_name}
    kw["prompts"] = tuple(kw["prompts"] or ())
    return SteerConfig(**kw)


def steer_cmd(
    ctx: typer.Context,
    sae: Annotated[str, _o("sae")],
    feature: Annotated[str, _o("feature")],
    out: Annotated[str, _o("out")],
    alpha: Annotated[str | None, _o("alpha")] = _d("alpha"),
    method: Annotated[str, _o("method")] = _d("method"),
    positions: Annotated[str, _o("positions")] = _d("positions"),
    prompts: Annotated[list[str] | None, _o("prompts")] = None,
    limit: Annotated[int | None, _c("limit")] = _d("limit"),
    features_from: Annotated[str | None, _o("features_from")] = _d("features_from"),
    model: Annotated[str | None, _o("model")] = _d("model"),
    max_new_tokens: Annotated[int, _c("max_new_tokens")] = _d("max_new_tokens"),
    temperature: Annotated[float, _o("temperature")] = _d("temperature"),
    top_p: Annotated[float, _o("top_p")] = _d("top_p"),
    seed: Annotated[int, _o("seed")] = _d("seed"),
    batch_size: Annotated[int, _c("batch_size")] = _d("batch_size"),
    judge: Annotated[bool, _o("judge")] = _d("judge"),
    judge_endpoint: Annotated[str | None, _o("judge_endpoint")] = _d("judge_endpoint"),
    judge_model: Annotated[str | None, _o("judge_model")] = _d("judge_model"),
    judge_api_key_env: Annotated[str, _o("judge_api_key_env")] = _d("judge_api_key_env"),
    device: Annotated[str, _o("device")] = _d("device"),
    progress: Annotated[bool, _o("progress")] = _d("progress"),
) -> None:
    """Steer the model with SAE features over a sweep of α: responses, their measures, the sweet spot."""
    values = {k: v for k, v in locals().items() if k in F.by_name}
    extra = list(ctx.args)
    for word in extra:
        if word.startswith("-"):
            raise SteerConfigError(f"unexpected option {word!r}")
    values["prompts"] = [*(prompts or []), *extra]  # files after `--prompts a.jsonl` (a shell glob)
    cfg = to_config(values)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: idle OpenMP threads sleep
    from rich.console import Console

    from fastsae.interp.steer import run_steer
    from fastsae.interp.steer_report import sweet_spot_line, write_all

    doc = run_steer(cfg)
    write_all(doc, Path(cfg.out))
    err = Console(stderr=True)
    err.print(sweet_spot_line(doc["summary"]), markup=False)
    err.print(f"saved {Path(cfg.out) / 'steer.md'}, steer.jsonl, steer.json and steer.png", markup=False)


STEER_CONTEXT = {"allow_extra_args": True, "allow_interspersed_args": True}
