"""DashboardConfig: every setting of `fastsae dashboard`, one frozen dataclass; the CLI flags mirror it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from fastsae.errors import UsageError


class DashboardConfigError(UsageError):
    """A flag of `fastsae dashboard` that makes no sense (the message names it)."""


def _help(text: str) -> dict:
    return {"help": text}


@dataclass(frozen=True)
class DashboardConfig:
    feats: str = field(
        metadata=_help("Features folder written by `fastsae features` (features.json, features.safetensors).")
    )
    out: str | None = field(default=None, metadata=_help("HTML file to write; default: FEATS/index.html."))
    max_features: int | None = field(
        default=None,
        metadata=_help(
            "Put at most this many features in the page: the judged ones first, then the live ones by id "
            "(default: every feature, dead ones included)."
        ),
    )
    store: str | None = field(
        default=None,
        metadata=_help("Store whose tokenizer decodes the tokens; default: the one features.json records."),
    )

    def __post_init__(self) -> None:
        if self.max_features is not None and self.max_features < 1:
            raise DashboardConfigError(f"--max-features must be >= 1, got {self.max_features}")

    @property
    def out_path(self) -> Path:
        return Path(self.out) if self.out else Path(self.feats) / "index.html"

    def to_json(self) -> dict:
        return asdict(self)
