"""`fastsae harvest`: typer command whose options mirror HarvestConfig 1:1 (help = the field's doc, default =
the field's default; tests/test_cli_options.py checks both). Count flags take 1e6, 1_000_000, 256k, 1M, ...

Bad input raises (HarvestError, SourceError, StoreError, ...: all FastSAEError); fastsae/cli.py prints it
as one line. SIGTERM exits 143 after one warning line (harvest/stops.py)."""

from __future__ import annotations

import logging
import os
from enum import Enum
from typing import Annotated

import typer

from fastsae.harvest.config import (
    ATTENTION,
    DTYPES,
    MODEL_DTYPES,
    ON_ERROR,
    PACKINGS,
    HarvestConfig,
    parse_layers,
)
from fastsae.options import ConfigFields
from fastsae.store.format import FP8_ROUNDINGS

F = ConfigFields(HarvestConfig)
_o, _c, _d = F.option, F.count, F.default


def _choices(name: str, values: tuple[str, ...]) -> type[Enum]:
    """A typer choice type from the config's own list (typer reads choices from an Enum)."""
    return Enum(name, [(v, v) for v in values], type=str)


DType = _choices("DType", DTYPES)
ModelDType = _choices("ModelDType", MODEL_DTYPES)
Packing = _choices("Packing", PACKINGS)
Fp8Rounding = _choices("Fp8Rounding", FP8_ROUNDINGS)
OnError = _choices("OnError", ON_ERROR)
Attention = _choices("Attention", ATTENTION)


def _value(v):
    return v.value if isinstance(v, Enum) else v


def to_config(values: dict) -> HarvestConfig:
    """The command's option values (as typer passes them, or click's raw defaults) -> a validated HarvestConfig."""
    kw = {name: _value(values[name]) for name in F.by_name}
    kw["data"] = tuple(kw["data"] or ())
    kw["layers"] = parse_layers(kw["layers"])
    return HarvestConfig(**kw)


def harvest(
    out: Annotated[str, _o("out")],
    model: Annotated[str, _o("model")] = _d("model"),
    data: Annotated[list[str] | None, _o("data")] = None,
    layers: Annotated[str, _o("layers")] = ",".join(map(str, _d("layers"))),
    max_tokens: Annotated[int, _c("max_tokens")] = _d("max_tokens"),
    dtype: Annotated[DType, _o("dtype")] = DType(_d("dtype")),
    fp8_rounding: Annotated[Fp8Rounding, _o("fp8_rounding")] = Fp8Rounding(_d("fp8_rounding")),
    packing: Annotated[Packing, _o("packing")] = Packing(_d("packing")),
    context_size: Annotated[int, _c("context_size")] = _d("context_size"),
    batch_tokens: Annotated[int, _c("batch_tokens")] = _d("batch_tokens"),
    shard_tokens: Annotated[int, _c("shard_tokens")] = _d("shard_tokens"),
    dedup_ngram: Annotated[int, _c("dedup_ngram")] = _d("dedup_ngram"),
    limit: Annotated[int | None, _c("limit")] = _d("limit"),
    on_error: Annotated[OnError, _o("on_error")] = OnError(_d("on_error")),
    device: Annotated[str, _o("device")] = _d("device"),
    model_dtype: Annotated[ModelDType, _o("model_dtype")] = ModelDType(_d("model_dtype")),
    revision: Annotated[str | None, _o("revision")] = _d("revision"),
    writer: Annotated[int, _o("writer")] = _d("writer"),
    num_writers: Annotated[int, _c("num_writers")] = _d("num_writers"),
    sort_window: Annotated[int, _c("sort_window")] = _d("sort_window"),
    threads: Annotated[int, _c("threads")] = _d("threads"),
    attn_implementation: Annotated[Attention, _o("attn_implementation")] = Attention(
        _d("attn_implementation")
    ),
    progress: Annotated[bool, _o("progress")] = _d("progress"),
) -> None:
    """Run an instruct model over chat data, one conversation at a time, and store residual activations."""
    cfg = to_config(locals())
    # Before torch is imported: idle OpenMP threads must sleep, not spin (spinning starves other processes).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from fastsae.harvest.runner import run_harvest
    from fastsae.harvest.stops import HarvestTerminated

    try:
        result = run_harvest(cfg)
        if result.main:  # under torchrun rank 0's line counts every rank
            typer.echo(result.summary())
    except HarvestTerminated as e:
        logging.getLogger(__name__).warning(
            "harvest of %s stopped by SIGTERM with %s sequences committed (the open shard was dropped); run "
            "the same command again to resume",
            cfg.out,
            "its" if e.committed is None else e.committed,
        )
        raise typer.Exit(e.exit_code) from None
