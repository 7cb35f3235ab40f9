"""`fastsae harvest`: typer command whose options mirror HarvestConfig 1:1 (help = field help)."""

from __future__ import annotations

import dataclasses
import os
from enum import Enum
from typing import Annotated

import typer

from fastsae.harvest.config import HarvestConfig

_FIELDS = {f.name: f for f in dataclasses.fields(HarvestConfig)}


def _h(name: str) -> str:
    return _FIELDS[name].metadata["help"]


def _d(name: str):
    f = _FIELDS[name]
    return f.default


class DType(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class ModelDType(str, Enum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class Packing(str, Enum):
    conversation = "conversation"
    block = "block"


class OnError(str, Enum):
    skip = "skip"
    fail = "fail"


class Attention(str, Enum):
    sdpa = "sdpa"
    eager = "eager"


def harvest(
    out: Annotated[str, typer.Option(help=_h("out"))],
    model: Annotated[str, typer.Option(help=_h("model"))] = _d("model"),
    data: Annotated[list[str] | None, typer.Option(help=_h("data"))] = None,
    layers: Annotated[str, typer.Option(help=_h("layers"))] = ",".join(map(str, _d("layers"))),
    max_tokens: Annotated[int, typer.Option(help=_h("max_tokens"))] = _d("max_tokens"),
    dtype: Annotated[DType, typer.Option(help=_h("dtype"))] = DType(_d("dtype")),
    packing: Annotated[Packing, typer.Option(help=_h("packing"))] = Packing(_d("packing")),
    context_size: Annotated[int, typer.Option(help=_h("context_size"))] = _d("context_size"),
    batch_tokens: Annotated[int, typer.Option(help=_h("batch_tokens"))] = _d("batch_tokens"),
    shard_tokens: Annotated[int, typer.Option(help=_h("shard_tokens"))] = _d("shard_tokens"),
    dedup_ngram: Annotated[int, typer.Option(help=_h("dedup_ngram"))] = _d("dedup_ngram"),
    limit: Annotated[int | None, typer.Option(help=_h("limit"))] = _d("limit"),
    on_error: Annotated[OnError, typer.Option(help=_h("on_error"))] = OnError(_d("on_error")),
    device: Annotated[str, typer.Option(help=_h("device"))] = _d("device"),
    model_dtype: Annotated[ModelDType, typer.Option(help=_h("model_dtype"))] = ModelDType(_d("model_dtype")),
    revision: Annotated[str | None, typer.Option(help=_h("revision"))] = _d("revision"),
    writer: Annotated[int, typer.Option(help=_h("writer"))] = _d("writer"),
    num_writers: Annotated[int, typer.Option(help=_h("num_writers"))] = _d("num_writers"),
    sort_window: Annotated[int, typer.Option(help=_h("sort_window"))] = _d("sort_window"),
    threads: Annotated[int, typer.Option(help=_h("threads"))] = _d("threads"),
    attn_implementation: Annotated[Attention, typer.Option(help=_h("attn_implementation"))] = Attention(
        _d("attn_implementation")
    ),
    progress: Annotated[bool, typer.Option(help=_h("progress"))] = _d("progress"),
) -> None:
    """Run an instruct model over chat data, one conversation at a time, and store residual activations."""
    # Before torch is imported: idle OpenMP threads must sleep, not spin (shared CPUs slow down ~40x).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from fastsae.harvest.config import HarvestError, parse_layers
    from fastsae.harvest.records import RecordError
    from fastsae.harvest.sources import SourceError
    from fastsae.store import StoreError

    try:
        cfg = HarvestConfig(
            out=out, model=model, data=tuple(data or ()), layers=parse_layers(layers), max_tokens=max_tokens,
            dtype=dtype.value, packing=packing.value, context_size=context_size, batch_tokens=batch_tokens,
            shard_tokens=shard_tokens, dedup_ngram=dedup_ngram, limit=limit, on_error=on_error.value,
            device=device, model_dtype=model_dtype.value, revision=revision, writer=writer,
            num_writers=num_writers, sort_window=sort_window, threads=threads,
            attn_implementation=attn_implementation.value, progress=progress,
        )  # fmt: skip
        from fastsae.harvest.runner import run_harvest

        result = run_harvest(cfg)
    except (HarvestError, StoreError, SourceError, RecordError) as e:
        typer.echo(f"Error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(result.summary())
