"""`fastsae inspect`, `fastsae verify` and `fastsae convert`: plain typer command functions, registered by
fastsae/cli.py (convert's options mirror ConvertConfig, store/convert.py: help and default from its fields).

Bad input raises (StoreError: a FastSAEError); fastsae/cli.py prints it as one line. Damage that verify
finds is its report: one `error:` line per finding, exit 2."""

from __future__ import annotations

import json
import logging
from typing import Annotated

import typer

from fastsae.options import ConfigFields

from .convert import ConvertConfig, parse_layers
from .errors import StoreCorruptError

log = logging.getLogger(__name__)
F = ConfigFields(ConvertConfig)
_o, _d = F.option, F.default


def convert_config(values: dict) -> ConvertConfig:
    """convert's option values (as typer passes them) -> a validated ConvertConfig. Not named to_config:
    tests/test_cli_options.py would check inspect and verify, of this module too, against ConvertConfig."""
    kw = {name: values[name] for name in F.by_name}
    kw["layers"] = parse_layers(kw["layers"])
    return ConvertConfig(**kw)


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"


def inspect(
    store: Annotated[
        str, typer.Argument(help="Store directory (contains store.json and shard-*.zarr), or an fsspec URL.")
    ],
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the summary as one JSON object.")
    ] = False,
) -> None:
    """Summarise a store after its cheap checks (sizes, offsets, token types and ids, small arrays' checksums,
    writer records): model, layers, sizes, bytes/token, token types, data provenance, skipped rows, completeness.
    """
    from .summary import summarize_store

    info = summarize_store(store)
    for w in info["warnings"]:
        log.warning(w)
    if json_output:
        typer.echo(json.dumps(info, indent=2, sort_keys=True))
        return
    lines = [
        f"store:          {info['path']}",
        f"model:          {info['model'] or '?'}" + (f" @ {info['revision']}" if info["revision"] else ""),
        f"layers:         {', '.join(map(str, info['layers']))}",
        f"d_model:        {info['d_model']}",
        f"dtype:          {info['dtype']}",
        f"shards:         {info['shards']}",
        f"conversations:  {info['sequences']:,}",
        f"tokens:         {info['tokens']:,}",
        f"bytes:          {info['bytes']:,} ({_fmt_bytes(info['bytes'])})",
    ]
    if info["bytes_per_token"] is not None:
        lines.append(f"bytes/token:    {info['bytes_per_token']:.1f}")
        lines.append(f"bytes/token / (dtype bytes x d_model x layers): {info['overhead_ratio']:.4f}")
    total = max(1, info["tokens"])
    lines.append("token types:")
    lines += [f"  {name:<10} {n:>14,}  {100 * n / total:5.1f}%" for name, n in info["token_types"].items()]
    if info["data"]:
        lines.append("data:")
        for i, d in enumerate(info["data"]):
            if isinstance(d, dict) and "spec" in d:
                extra = {k: v for k, v in d.items() if k != "spec" and v is not None}
                sha = extra.pop("sha256", None)
                d = f"{d['spec']} {json.dumps(extra, sort_keys=True)}" + (
                    f" sha256={sha[:16]}" if sha else ""
                )
            lines.append(f"  [{i}] " + (d if isinstance(d, str) else json.dumps(d, sort_keys=True)))
    if info["skipped"] is not None:
        n = sum(info["skipped"].values())
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(info["skipped"].items()))
        lines.append(f"skipped:        {n:,}" + (f" ({detail})" if detail else ""))
    if info["partial_shards"]:
        lines.append(f"partial shards: {info['partial_shards']} (left by a crashed writer)")
    lines.append(f"complete:       {info['complete']['state']} ({info['complete']['message']})")
    lines.append(f"fingerprint:    {info['fingerprint'][:16]}")
    typer.echo("\n".join(lines))


def verify(
    store: Annotated[
        str, typer.Argument(help="Store directory, or an fsspec URL (s3://bucket/path), to check.")
    ],
    quick: Annotated[
        bool,
        typer.Option("--quick", help="Skip reading the activations (their crc32c, NaN/inf/|x|>1e6 scan)."),
    ] = False,
) -> None:
    """Full integrity check of every shard (metadata, shapes, offsets, file sizes, crc32c of every file, finite
    activations with |x| <= 1e6, contiguous sequence ranges) and of the writers' records (missing shards, a
    writer not finished). Exits 2 with one 'error:' line per problem on any damage or an incomplete store."""
    from .verify import verify_store

    try:
        report = verify_store(store, check_values=not quick)
    except StoreCorruptError as e:  # the findings are verify's report, one line each (the handler prints one)
        for problem in e.problems:
            typer.echo(f"error: {' '.join(problem.split())}", err=True)
        raise typer.Exit(e.exit_code) from None
    for w in report["warnings"]:
        log.warning(w)
    typer.echo(
        f"OK: {report['shards']} shards, {report['sequences']:,} sequences, {report['tokens']:,} tokens"
        f" (completeness: {report['complete']})"
    )


def convert(
    src: Annotated[str, typer.Argument(help=F.help("src"), metavar="SRC", show_default=False)],
    out: Annotated[str, _o("out")],
    dtype: Annotated[str, _o("dtype")] = _d("dtype"),
    layers: Annotated[str, _o("layers")] = ",".join(map(str, _d("layers"))),
    compression: Annotated[str, _o("compression")] = _d("compression"),
    fp8_rounding: Annotated[str, _o("fp8_rounding")] = _d("fp8_rounding"),
    progress: Annotated[bool, _o("progress")] = _d("progress"),
) -> None:
    """Write a store again in another stored dtype (bfloat16 -> fp8_e4m3 halves it), shard for shard: same
    sequences, tokens, shards and completeness. A rerun finishes an interrupted conversion; SRC is only read."""
    from .convert import convert_store

    typer.echo(convert_store(convert_config(locals())).summary())
