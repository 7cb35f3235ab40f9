"""`fastsae dashboard FEATS`: the typer command. Its options mirror DashboardConfig field for field (help
and default from the field; tests/test_cli_options.py checks both). Bad input raises a FastSAEError;
fastsae/cli.py prints it as one line and exits 2."""

from __future__ import annotations

from typing import Annotated

import typer

from fastsae.interp.dashboard_config import DashboardConfig
from fastsae.options import ConfigFields

F = ConfigFields(DashboardConfig)
_o, _c, _d = F.option, F.count, F.default


def to_config(values: dict) -> DashboardConfig:
    """The command's option values -> a validated DashboardConfig."""
    return DashboardConfig(**{name: values[name] for name in F.by_name})


def dashboard(
    feats: Annotated[str, typer.Argument(help=F.help("feats"), metavar="FEATS", show_default=False)],
    out: Annotated[str | None, _o("out")] = _d("out"),
    max_features: Annotated[int | None, _c("max_features")] = _d("max_features"),
    store: Annotated[str | None, _o("store")] = _d("store"),
) -> None:
    """One self-contained HTML page of the features: table, histograms, contexts, special tokens."""
    cfg = to_config({k: v for k, v in locals().items() if k in F.by_name})
    from fastsae.interp.dashboard import run_dashboard

    run_dashboard(cfg)  # logs the page's path and size
