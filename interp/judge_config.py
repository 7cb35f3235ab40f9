"""JudgeConfig: every setting of `fastsae judge`, one frozen dataclass; the CLI flags mirror its fields."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from fastsae.errors import UsageError


class JudgeConfigError(UsageError):
    """A flag of `fastsae judge` that makes no sense (the message names it)."""


def _help(text: str) -> dict:
    return {"help": text}


@dataclass(frozen=True)
class JudgeConfig:
    folder: str = field(
        metadata=_help(
            "The features folder (`fastsae features --out`); the judge's files are written into it."
        )
    )
    endpoint: str = field(
        metadata=_help("OpenAI-compatible chat-completions base URL, e.g. http://localhost:8000/v1.")
    )
    model: str = field(metadata=_help("Model name the endpoint serves, e.g. gpt-4o-2024-11-20."))
    features: int = field(
        default=128, metadata=_help("Judge a seeded random sample of this many live features.")
    )
    seed: int = field(default=0, metadata=_help("Seed of the feature sample and of the detection mixes."))
    detection: int = field(
        default=10,
        metadata=_help(
            "Held-out activating contexts per feature shown to the detection scorer, with as many "
            "non-activating ones; 0: no detection."
        ),
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata=_help("Environment variable holding the API key (unset: no key, for local servers)."),
    )
    concurrency: int = field(default=8, metadata=_help("Requests in flight at once."))
    timeout: float = field(default=60.0, metadata=_help("Seconds to wait for one answer before retrying."))
    max_retries: int = field(
        default=4, metadata=_help("Retries of one request on 429, 5xx, timeouts (with backoff).")
    )
    max_failures: int = field(
        default=8, metadata=_help("Stop after this many failed requests in a row (what was scored is kept).")
    )
    parse_retries: int = field(
        default=2, metadata=_help("Re-ask this many times when an answer cannot be parsed.")
    )
    progress: bool = field(default=True, metadata=_help("Show the progress bar."))

    def __post_init__(self) -> None:
        for name in ("features", "concurrency", "max_failures"):
            if getattr(self, name) < 1:
                raise JudgeConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("detection", "max_retries", "parse_retries"):
            if getattr(self, name) < 0:
                raise JudgeConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if not self.timeout > 0:
            raise JudgeConfigError(f"--timeout must be > 0 seconds, got {self.timeout}")

    def to_json(self) -> dict:
        return asdict(self)
