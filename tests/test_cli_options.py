"""Every option of every command: its default and help come from its config field, its name stays whole in
the help at 80 columns, and count options take the usual spellings of whole numbers (1e6, 1_000_000, 256k)."""

from __future__ import annotations

import dataclasses
import re
import sys
import typing

import pytest
import typer
from typer.testing import CliRunner

from fastsae.cli import app
from fastsae.options import count, parse_count

runner = CliRunner()
GROUP = typer.main.get_command(app)
FUNCTIONS = {info.name: info.callback for info in app.registered_commands}
# A command's module that declares `F = ConfigFields(SomeConfig)` and `to_config(values)` is checked here.
CONFIGURED = sorted(
    name for name, fn in FUNCTIONS.items() if hasattr(sys.modules[fn.__module__], "to_config")
)
IDS = {"layer", "seed", "writer"}  # whole numbers that are not counts: no 1e6 / 256k spellings


def module(name: str):
    return sys.modules[FUNCTIONS[name].__module__]


def required_args(name: str) -> tuple[dict, list[str]]:
    """Values for the config fields without a default, and the same as command-line options."""
    config = module(name).F.config
    hints = typing.get_type_hints(config)
    values = {
        f.name: 3 if hints[f.name] is int else "x"
        for f in dataclasses.fields(config)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    positional = {p.name for p in GROUP.commands[name].params if p.param_type_name == "argument"}
    args = [str(v) for k, v in values.items() if k in positional]  # `fastsae dashboard FEATS`
    return values, args + [
        a for k, v in values.items() if k not in positional for a in (f"--{k.replace('_', '-')}", str(v))
    ]


def count_options(name: str) -> list[str]:
    hints = typing.get_type_hints(FUNCTIONS[name], include_extras=True)
    return [
        p for p, h in hints.items() if getattr(h, "__metadata__", None) and h.__metadata__[0].parser is count
    ]


def test_the_commands_with_a_config_are_checked():
    assert {"train", "harvest"} <= set(CONFIGURED)


@pytest.mark.parametrize("name", CONFIGURED)
def test_options_mirror_the_config_fields(name):
    cmd, F = GROUP.commands[name], module(name).F
    assert {p.name for p in cmd.params} == set(F.by_name)
    for p in cmd.params:
        assert p.help == F.help(p.name), p.name
    values, args = required_args(name)
    # every option left at its default gives the config's own defaults
    ctx = cmd.make_context(name, args)
    assert module(name).to_config(ctx.params) == F.config(**values)


@pytest.mark.parametrize("name", CONFIGURED)
def test_every_int_option_but_ids_is_a_count(name):
    hints = typing.get_type_hints(module(name).F.config)
    ints = {f for f, h in hints.items() if h in (int, int | None)}
    assert set(count_options(name)) == ints - IDS


@pytest.mark.parametrize(
    "path", [[], *([n] for n in sorted(GROUP.commands))], ids=lambda p: " ".join(p) or "fastsae"
)
def test_help_keeps_every_flag_whole_at_80_columns(path):
    cmd = GROUP.commands[path[0]] if path else GROUP
    r = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    for line in r.stdout.splitlines():
        assert len(line) <= 80, line
    flags = [o for p in cmd.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")]
    assert flags
    for flag in flags:
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", r.stdout), (flag, r.stdout)


@pytest.mark.parametrize(
    "text, value",
    [("1e6", 10**6), ("1_000_000", 10**6), ("1,000,000", 10**6), ("2.5e5", 250_000), ("256k", 256_000),
     ("1M", 10**6), ("1g", 10**9), ("512Ki", 524_288), ("2Mi", 2**21), (" 64 ", 64), ("0", 0), ("1.5k", 1500),
     (4096, 4096)],
)  # fmt: skip
def test_count_spellings(text, value):
    assert parse_count(text) == value and type(parse_count(text)) is int


@pytest.mark.parametrize(
    "text, needle",
    [("1.5", "not a whole number"), ("1.0001k", "not a whole number"), ("-3", "negative"), ("1,00", "not a number"),
     ("abc", "not a number"), ("", "not a number"), ("nan", "not a usable count"), ("inf", "not a usable count"),
     ("1e30", "not a usable count"), ("12,5", "not a number")],
)  # fmt: skip
def test_count_refusals(text, needle):
    with pytest.raises(ValueError, match=needle) as e:
        parse_count(text)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", CONFIGURED)
def test_every_count_option_takes_the_spellings_through_the_cli(name):
    values, args = required_args(name)
    cmd = GROUP.commands[name]
    for option in count_options(name):
        flag = f"--{option.replace('_', '-')}"
        cfg = module(name).to_config(cmd.make_context(name, [*args, flag, "2.5e3"]).params)
        assert getattr(cfg, option) == 2500, option
        for bad, needle in (("1.5", "is not a whole number"), ("-3", "is negative")):
            r = runner.invoke(app, [name, *args, flag, bad])
            assert r.exit_code == 2, (flag, r.output)
            assert f"Invalid value for '{flag}': '{bad}' {needle}" in r.stderr, r.stderr
            assert "Traceback" not in r.output


def test_train_reads_the_counts_it_was_given(tmp_path):
    # through the command itself: the config check quotes the numbers it parsed
    args = ["train", "--store", str(tmp_path), "--layer", "0", "--out", str(tmp_path / "o")]
    r = runner.invoke(app, [*args, "--tokens", "1e3", "--batch-size", "1,024"])
    assert r.exit_code == 2 and "--tokens (1000) is less than one batch (--batch-size 1024)" in r.stderr, (
        r.output
    )
    r = runner.invoke(app, [*args, "--expansion", "8,1.6e1", "--arch", "jumprelu", "--k", "2.5"])
    assert r.exit_code == 2 and "--k: '2.5' is not a whole number" in r.stderr, r.output
