"""What the commands' options share: help text and default taken from the config field, whole-number counts.

Stage CLIs (harvest/cli.py, train/cli.py, ...) import this; it imports nothing of ours, so it sits below
them the way errors.py does. A command declares each option explicitly, with
`F.option(name)` (help = the field's doc; `F.count(name)` for whole-number counts) and
`= F.default(name)`, and tests/test_cli_options.py checks every option of every
command against its config field.
"""

from __future__ import annotations

import dataclasses
import re
from decimal import Decimal, InvalidOperation

import typer

# Decimal suffixes (256k, 40M, 1G) and binary ones (512Ki = 524,288), case-insensitive.
_SCALE = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 2**10, "mi": 2**20, "gi": 2**30}
_SUFFIX = re.compile(r"(.*?\d\.?)\s*(ki|mi|gi|k|m|g|t)", re.IGNORECASE)
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?")
_MAX_DIGITS = 18  # no count of ours comes near 1e18; a bigger one is a typo, not a request
SPELLINGS = "e.g. 1000000, 1_000_000, 1,000,000, 1e6, 2.5e5, 256k, 1M or 512Ki"


class ConfigFields:
    """A config dataclass's fields, read by a command's option declarations."""

    def __init__(self, config: type):
        self.config = config
        self.by_name = {f.name: f for f in dataclasses.fields(config)}

    def help(self, name: str) -> str:
        return self.by_name[name].metadata["help"]

    def default(self, name: str):
        f = self.by_name[name]
        if f.default is not dataclasses.MISSING:
            return f.default
        if f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        raise KeyError(f"{self.config.__name__}.{name} has no default: its option is required")

    def option(self, name: str, **kw):
        """typer.Option whose help is the field's doc."""
        return typer.Option(help=self.help(name), **kw)

    def count(self, name: str, **kw):
        """typer.Option for a whole-number count (1e6, 256k, ... accepted), help from the field."""
        return typer.Option(help=self.help(name), parser=count, **kw)


def parse_count(text: str | int) -> int:
    """A non-negative whole number in any usual spelling (see SPELLINGS); ValueError naming the text."""
    if isinstance(text, int) and not isinstance(text, bool):  # a default, already a number
        value = Decimal(text)
    else:
        body = str(text).strip()
        scale = 1
        if m := _SUFFIX.fullmatch(body):
            body, scale = m.group(1), _SCALE[m.group(2).lower()]
        if _THOUSANDS.fullmatch(body):
            body = body.replace(",", "")
        try:
            value = Decimal(body) * scale
        except InvalidOperation:
            raise ValueError(f"{text!r} is not a number; write a whole number, {SPELLINGS}") from None
        if not value.is_finite() or value.adjusted() >= _MAX_DIGITS:
            raise ValueError(f"{text!r} is not a usable count (at most 1e{_MAX_DIGITS})")
    if value != value.to_integral_value():
        raise ValueError(f"{text!r} is not a whole number")
    if value < 0:
        raise ValueError(f"{text!r} is negative; a count is 0 or more")
    return int(value)


def count(text: str | int) -> int:
    """typer `parser=` for count options: parse_count, refused as a usage error naming the flag."""
    try:
        return parse_count(text)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
