"""The `fastsae` command: one typer app composed from each stage's command module.

It owns no logic. Each stage exposes plain typer command functions; importing them here is
cheap because the stages import torch/transformers inside the commands, not at module load.
"""

import typer

from fastsae.harvest.cli import harvest
from fastsae.store.cli import inspect, verify
from fastsae.train.cli import train

app = typer.Typer(
    name="fastsae",
    help="Train sparse autoencoders on instruct models, one conversation at a time.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("harvest")(harvest)
app.command("inspect")(inspect)
app.command("verify")(verify)
app.command("train")(train)


def main() -> None:
    app()
