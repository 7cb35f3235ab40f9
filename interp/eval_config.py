"""EvalConfig: every setting of `fastsae eval`, one frozen dataclass; the CLI flags mirror its fields.

Token-type groups of the breakdown (GROUPS): the store's TokenType values by name, plus "first" (the
conversation's first token) and "all". For the CE metrics a position belongs to the group of the token
it predicts; for the reconstruction metrics to the group of its own token.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from fastsae.errors import UsageError
from fastsae.store import TokenType
from fastsae.store.token_types import parse_token_types


class EvalConfigError(UsageError):
    """A flag of `fastsae eval` that makes no sense (the message names it)."""


def _help(text: str) -> dict:
    return {"help": text}


TYPE_NAMES = {t.name.lower(): t for t in TokenType}
# the order of the breakdown in every output: the assistant tokens first (what an instruct user cares about)
GROUPS = ("all", "assistant", "user", "system", "template", "special", "tool", "text", "first")
GROUP_LABELS = {"template": "role header"}


@dataclass(frozen=True)
class EvalConfig:
    sae: tuple[str, ...] = field(
        metadata=_help("SAE folders to evaluate: --sae A B C (or --sae A --sae B); all read one model.")
    )
    out: str = field(metadata=_help("Output folder: results.json, results.csv, results.md and the PNGs."))
    data: tuple[str, ...] = field(
        default=(),
        metadata=_help(
            "Chat data to evaluate on, in any format harvest --data reads; default: the held-out "
            "sequences recorded for the SAEs' training run."
        ),
    )
    limit: int | None = field(default=None, metadata=_help("Evaluate at most this many conversations."))
    model: str | None = field(
        default=None,
        metadata=_help("Model to splice into; default: the one the SAEs' store was harvested with."),
    )
    max_tokens: int | None = field(
        default=None, metadata=_help("Truncate each conversation to this many tokens (default: the store's).")
    )
    batch_tokens: int = field(default=4096, metadata=_help("Tokens per forward batch (padding included)."))
    splice_types: str = field(
        default="all",
        metadata=_help(
            "Splice the SAE only at positions of these token types (e.g. assistant,user or -special); "
            "the other positions stay clean."
        ),
    )
    with_error: bool = field(
        default=False, metadata=_help("Add the SAE's error back at spliced positions (a check: clean CE).")
    )
    saelens_compatible: bool = field(
        default=False,
        metadata=_help(
            "SAELens run_evals' conventions: positions whose input is bos/eos/pad are neither spliced nor "
            "scored; zero-ablation zeroes every position."
        ),
    )
    allow_overlap: bool = field(
        default=False,
        metadata=_help("Evaluate even on conversations an SAE was trained on (the results record how many)."),
    )
    compare: bool = field(
        default=False,
        metadata=_help("Also lay the SAEs out by arm (FAST vs BT(F) vs BT(P)), at equal L0 too."),
    )
    device: str = field(
        default="auto", metadata=_help("Torch device: auto (cuda if available, else cpu), cpu, cuda:0, ...")
    )
    progress: bool = field(default=True, metadata=_help("Show the progress bar."))

    def __post_init__(self) -> None:
        for name in ("sae", "data"):  # one path given as a string: a 1-tuple
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        if not self.sae:
            raise EvalConfigError("--sae: give at least one SAE folder")
        for name in ("limit", "max_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise EvalConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if self.batch_tokens < 1:
            raise EvalConfigError(f"--batch-tokens must be >= 1, got {self.batch_tokens}")
        parse_types(self.splice_types)

    def to_json(self) -> dict:
        d = asdict(self)
        d["sae"], d["data"] = list(self.sae), list(self.data)
        return d


def parse_types(spec: str) -> frozenset[int]:
    """ "all", "assistant,user", "-special" -> the TokenType values selected (only drops: all but those)."""
    try:
        return frozenset(int(t) for t in parse_token_types(spec, flag="--splice-types"))
    except ValueError as e:
        raise EvalConfigError(str(e)) from None
