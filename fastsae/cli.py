"""The `fastsae` command: one typer app composed from each stage's command module.

It owns no logic. Each stage exposes plain typer command functions that raise on bad input; the one
handler here turns any FastSAEError into one `error: ...` line on stderr and its exit code (2 for bad
input). Importing the commands is cheap: the stages import torch/transformers inside the commands.
"""

from __future__ import annotations

import logging
import os
import sys
from enum import Enum
from importlib import metadata
from typing import Annotated

import typer
from typer.core import TyperGroup

from fastsae.errors import FastSAEError, one_line
from fastsae.harvest.cli import harvest
from fastsae.interp.dashboard_cli import dashboard
from fastsae.interp.eval_cli import EVAL_CONTEXT, eval_cmd
from fastsae.interp.features_cli import features_cmd
from fastsae.interp.judge_cli import judge_cmd
from fastsae.interp.steer_cli import STEER_CONTEXT, steer_cmd
from fastsae.store.cli import convert, inspect, verify
from fastsae.train.cli import train

DISTRIBUTION = "fastsae-instruct"  # "fastsae" on PyPI is another project


class LogLevel(str, Enum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class _App(TyperGroup):
    """The one error handler: a command's FastSAEError is one line on stderr, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FastSAEError as e:
            typer.echo(f"error: {one_line(e)}", err=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:  # the commands clean up on the way out; the shell's code for SIGINT
            raise typer.Exit(130) from None


class _Stderr(logging.StreamHandler):
    """Writes to sys.stderr as it is when a record is emitted (rich's progress bar and test runners swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


class _Format(logging.Formatter):
    """`warning: ...` like the `error: ...` lines; info as plain text; `[rank R]` first when several ranks run."""

    def __init__(self, rank: str | None):
        super().__init__()
        self.prefix = f"[rank {rank}] " if rank is not None else ""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return f"{self.prefix}{level}{message}"


def setup_logging(level: str = "info") -> logging.Logger:
    """One handler on the `fastsae` logger (idempotent); diagnostics of every module go through it."""
    log = logging.getLogger("fastsae")
    for h in [h for h in log.handlers if isinstance(h, _Stderr)]:
        log.removeHandler(h)
    several = int(os.environ.get("WORLD_SIZE", "1") or 1) > 1
    handler = _Stderr()
    handler.setFormatter(_Format(os.environ.get("RANK", "0") if several else None))
    log.addHandler(handler)
    log.setLevel(level.upper())
    return log


def _version(value: bool) -> None:
    if value:
        try:
            typer.echo(f"{DISTRIBUTION} {metadata.version(DISTRIBUTION)}")
        except metadata.PackageNotFoundError:
            typer.echo(f"{DISTRIBUTION} (not installed: run from a source tree)")
        raise typer.Exit()


app = typer.Typer(
    name="fastsae",
    cls=_App,
    help="Train sparse autoencoders on instruct models, one conversation at a time.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: flag names stay whole at 80 columns
)


@app.callback()
def _root(
    log_level: Annotated[
        LogLevel, typer.Option(envvar="FASTSAE_LOG_LEVEL", help="Least severe diagnostics shown on stderr.")
    ] = LogLevel.info,
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_version, help="Print the version and exit."),
    ] = False,
) -> None:
    setup_logging(LogLevel(log_level).value)


app.command("harvest")(harvest)
app.command("inspect")(inspect)
app.command("verify")(verify)
app.command("convert")(convert)
app.command("train")(train)
app.command("eval", context_settings=EVAL_CONTEXT)(eval_cmd)
app.command("features")(features_cmd)
app.command("dashboard")(dashboard)
app.command("judge")(judge_cmd)
app.command("steer", context_settings=STEER_CONTEXT)(steer_cmd)


def main() -> None:
    app()
