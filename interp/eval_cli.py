"""`fastsae eval`: the typer command. Its options mirror EvalConfig field for field (help and default from
the field; tests/test_cli_options.py checks both). `--sae A B C` takes several folders after one flag (a
shell glob such as `--sae sweep/*`), as does `--data`; the flags may also repeat.

Bad input raises (EvalInputError, EvalSetError, SAEError, StoreError: all FastSAEError); fastsae/cli.py
prints it as one line and exits 2."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from fastsae.interp.eval_config import EvalConfig, EvalConfigError
from fastsae.options import ConfigFields

F = ConfigFields(EvalConfig)
_o, _c, _d = F.option, F.count, F.default


def to_config(values: dict) -> EvalConfig:
    """The command's option values -> a validated EvalConfig."""
    kw = {name: values[name] for name in F.by_name}
    kw["sae"] = tuple(kw["sae"] or ())
    kw["data"] = tuple(kw["data"] or ())
    return EvalConfig(**kw)


def _split_extra(sae: list[str], data: list[str], extra: list[str]) -> tuple[list, list]:
    """Words after `--sae A` or `--data a.jsonl` without a flag of their own (a shell glob's expansion):
    folders are SAE folders, .jsonl/.json files data."""
    for word in extra:
        if Path(word).is_dir():
            sae.append(word)
        elif word.endswith((".jsonl", ".json")):
            data.append(word)
        else:
            raise EvalConfigError(
                f"unexpected argument {word!r}: not an SAE folder nor a .jsonl/.json file (give it after --sae/--data)"
            )
    return sae, data


def eval_cmd(
    ctx: typer.Context,
    sae: Annotated[list[str], _o("sae")],
    out: Annotated[str, _o("out")],
    data: Annotated[list[str] | None, _o("data")] = None,
    limit: Annotated[int | None, _c("limit")] = _d("limit"),
    model: Annotated[str | None, _o("model")] = _d("model"),
    max_tokens: Annotated[int | None, _c("max_tokens")] = _d("max_tokens"),
    batch_tokens: Annotated[int, _c("batch_tokens")] = _d("batch_tokens"),
    splice_types: Annotated[str, _o("splice_types")] = _d("splice_types"),
    with_error: Annotated[bool, _o("with_error")] = _d("with_error"),
    saelens_compatible: Annotated[bool, _o("saelens_compatible")] = _d("saelens_compatible"),
    allow_overlap: Annotated[bool, _o("allow_overlap")] = _d("allow_overlap"),
    compare: Annotated[bool, _o("compare")] = _d("compare"),
    device: Annotated[str, _o("device")] = _d("device"),
    progress: Annotated[bool, _o("progress")] = _d("progress"),
) -> None:
    """Splice SAEs into the model: CE loss recovered, KL, Δloss and reconstruction, per token type."""
    values = {k: v for k, v in locals().items() if k in F.by_name}
    values["sae"], values["data"] = _split_extra(list(sae), list(data or []), list(ctx.args))
    cfg = to_config(values)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: idle OpenMP threads sleep
    from rich.console import Console

    from fastsae.interp.eval_report import write_all
    from fastsae.interp.evaluate import run_eval

    doc = run_eval(cfg)
    err = Console(stderr=True)
    write_all(doc, Path(cfg.out), compare=cfg.compare, console=Console())
    err.print(f"saved {Path(cfg.out) / 'results.json'}, results.csv, results.md and the PNGs")


EVAL_CONTEXT = {"allow_extra_args": True, "allow_interspersed_args": True}
