"""SteerConfig: every setting of `fastsae steer`, one frozen dataclass; the CLI flags mirror its fields.

The spellings the flags take are parsed here, each bad one a SteerConfigError naming the flag:
- --feature: `1234`, `1234:40,99:-10` (per-feature coefficients), `top:<|im_start|>`, `top2:user` (the
  first / second feature of that token in the features artifact's special-token table), or a mix.
- --alpha: a comma list of numbers, the sweep; each α multiplies every feature's coefficient (1 when a
  feature has none). Default: `0,1` when every feature carries its own coefficient, else `0,10,25,50`.
- --positions: all, or a comma list of special, header, system, user, assistant, tool, generated.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

from fastsae.errors import UsageError
from fastsae.store import TokenType


class SteerConfigError(UsageError):
    """A flag of `fastsae steer` that makes no sense (the message names it)."""


def _help(text: str) -> dict:
    return {"help": text}


METHODS = ("add", "clamp")
# --positions names -> the prompt's token types (TEMPLATE: the role headers the chat template writes)
POSITION_TYPES = {
    "special": TokenType.SPECIAL, "header": TokenType.TEMPLATE, "system": TokenType.SYSTEM,
    "user": TokenType.USER, "assistant": TokenType.ASSISTANT, "tool": TokenType.TOOL,
}  # fmt: skip
GENERATED = "generated"
DEFAULT_SWEEP = (0.0, 10.0, 25.0, 50.0)


@dataclass(frozen=True)
class SteerConfig:
    sae: str = field(metadata=_help("SAE folder whose decoder directions steer (its layer is where)."))
    feature: str = field(
        metadata=_help(
            "Features to steer: 1234, 1234:40,99:-10 (own coefficients), top:<|im_start|> or top2:user "
            "(the top / second feature of that token in --features-from's special-token table)."
        )
    )
    out: str = field(metadata=_help("Output folder: steer.md, steer.jsonl, steer.json and steer.png."))
    alpha: str | None = field(
        default=None,
        metadata=_help(
            "The sweep: comma-separated α; each multiplies every feature's coefficient (1 if none given). "
            "Default 0,1 when every feature has a coefficient, else 0,10,25,50."
        ),
    )
    method: str = field(
        default="add",
        metadata=_help(
            "add: x + α·W_dec[k] after the SAE's block. clamp: set feature k's activation to α, the "
            "SAE's error kept: x + (α − f_k(x))·W_dec[k]."
        ),
    )
    positions: str = field(
        default="all",
        metadata=_help(
            "Where to steer: all, or a comma list of special, header, system, user, assistant (the "
            "prompt's tokens by type) and generated (every new token)."
        ),
    )
    prompts: tuple[str, ...] = field(
        default=(),
        metadata=_help(
            "Prompt files, any format harvest reads (each conversation up to its last user turn); "
            "default: the questions fastsae ships."
        ),
    )
    limit: int | None = field(default=None, metadata=_help("Use at most this many prompts."))
    features_from: str | None = field(
        default=None, metadata=_help("Features folder (`fastsae features`) that top:<token> reads.")
    )
    model: str | None = field(
        default=None,
        metadata=_help("Model to steer; default: the one the SAE's store was harvested with."),
    )
    max_new_tokens: int = field(default=64, metadata=_help("Tokens to generate per response at most."))
    temperature: float = field(
        default=0.0, metadata=_help("0: greedy decoding (the default); above 0: seeded sampling.")
    )
    top_p: float = field(default=1.0, metadata=_help("Nucleus sampling's p (with --temperature > 0)."))
    seed: int = field(default=0, metadata=_help("Seed of the sampling (each batch is seeded from it)."))
    batch_size: int = field(default=16, metadata=_help("Responses generated together (prompts × α)."))
    judge: bool = field(
        default=False,
        metadata=_help(
            "Score each response 0-2 for instruction relevance and fluency with an OpenAI-compatible "
            "judge (as fastsae judge)."
        ),
    )
    judge_endpoint: str | None = field(
        default=None,
        metadata=_help("The judge's OpenAI-compatible base URL (e.g. http://localhost:8000/v1)."),
    )
    judge_model: str | None = field(default=None, metadata=_help("The judge's model name at that endpoint."))
    judge_api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata=_help("Environment variable holding the judge's API key (unset: none is sent)."),
    )
    device: str = field(
        default="auto", metadata=_help("Torch device: auto (cuda if available, else cpu), cpu, cuda:0, ...")
    )
    progress: bool = field(default=True, metadata=_help("Show the progress bar."))

    def __post_init__(self) -> None:
        value = self.prompts
        object.__setattr__(self, "prompts", (value,) if isinstance(value, str) else tuple(value))
        if self.method not in METHODS:
            raise SteerConfigError(f"--method {self.method!r}: choose {' or '.join(METHODS)}")
        parse_positions(self.positions)
        if self.alpha is not None:
            parse_alphas(self.alpha)
        for name in ("limit", "max_new_tokens", "batch_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise SteerConfigError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise SteerConfigError(f"--temperature must be a number >= 0, got {self.temperature}")
        if not (0 < self.top_p <= 1):
            raise SteerConfigError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.judge and not (self.judge_endpoint and self.judge_model):
            raise SteerConfigError("--judge needs --judge-endpoint and --judge-model")

    def to_json(self) -> dict:
        d = asdict(self)
        d["prompts"] = list(self.prompts)
        return d


def _number(text: str, flag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SteerConfigError(f"{flag}: {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise SteerConfigError(f"{flag}: {text.strip()!r} is not a finite number")
    return value


def parse_alphas(text: str) -> tuple[float, ...]:
    """ "0,10,25" -> (0.0, 10.0, 25.0), duplicates dropped, order kept."""
    items = [s for s in str(text).split(",") if s.strip()]
    if not items:
        raise SteerConfigError(f"--alpha {text!r}: give at least one number, e.g. 0,10,25,50")
    return tuple(dict.fromkeys(_number(s, "--alpha") for s in items))


def parse_positions(text: str) -> tuple[frozenset[int], bool]:
    """-> (prompt token types to steer, steer generated tokens too)."""
    names = [s.strip().lower() for s in str(text).split(",") if s.strip()]
    valid = ", ".join(["all", *POSITION_TYPES, GENERATED])
    if not names:
        raise SteerConfigError(f"--positions {text!r} is empty; valid: {valid}")
    types: set[int] = set()
    generated = False
    for name in names:
        if name == "all":
            types |= {int(t) for t in TokenType}
            generated = True
        elif name == GENERATED:
            generated = True
        elif name in POSITION_TYPES:
            types.add(int(POSITION_TYPES[name]))
        else:
            raise SteerConfigError(f"--positions: unknown kind {name!r}; valid: {valid}")
    return frozenset(types), generated


@dataclass(frozen=True)
class FeatureSpec:
    """One item of --feature: an id, or the rank-th top feature of a token; coefficient None if not given."""

    text: str
    index: int | None = None
    token: str | None = None
    rank: int = 1
    coef: float | None = None


_TOP = re.compile(r"top(\d*):(.+)", re.DOTALL)


def _split_items(text: str) -> list[str]:
    """Split on commas that start a new item (a digit or `top` follows), so `top:,` stays one token."""
    parts = re.split(r",(?=\s*(?:-?\d|top\d*:))", text)
    return [p.strip() for p in parts if p.strip()]


def parse_features(text: str) -> list[FeatureSpec]:
    """--feature's items; the coefficient after the last ':' when it is a number."""
    items = _split_items(str(text))
    if not items:
        raise SteerConfigError("--feature: give a feature id (1234) or top:<token>")
    out = []
    for item in items:
        body, coef = item, None
        head, sep, tail = item.rpartition(":")
        if sep and head and not (head.startswith("top") and ":" not in head):
            try:
                coef, body = _number(tail, f"--feature {item!r}"), head.strip()
            except SteerConfigError:
                if not item.startswith("top"):  # a token may hold ':'; an id's coefficient is a number
                    raise
        if m := _TOP.fullmatch(body):
            rank = int(m.group(1) or 1)
            if rank < 1:
                raise SteerConfigError(f"--feature {item!r}: top0 is not a rank; top, top2, top3, ...")
            out.append(FeatureSpec(item, token=m.group(2), rank=rank, coef=coef))
        elif re.fullmatch(r"\d+", body):
            out.append(FeatureSpec(item, index=int(body), coef=coef))
        else:
            raise SteerConfigError(
                f"--feature {item!r}: expected a feature id (1234), id:coefficient (1234:40) or top:<token>"
            )
    return out


def default_alphas(features: list[FeatureSpec]) -> tuple[float, ...]:
    return (0.0, 1.0) if all(f.coef is not None for f in features) else DEFAULT_SWEEP
