"""FeaturesConfig: every setting of `fastsae features`, one frozen dataclass; the CLI flags mirror its fields."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from fastsae.errors import UsageError


class FeaturesConfigError(UsageError):
    """A flag of `fastsae features` that makes no sense (the message names it)."""


def _help(text: str) -> dict:
    return {"help": text}


@dataclass(frozen=True)
class FeaturesConfig:
    sae: str = field(metadata=_help("SAE folder (fastsae train's, or an SAELens one with --store)."))
    out: str = field(
        metadata=_help("Output folder: features.json, features.safetensors, special_tokens.json/.md.")
    )
    store: str | None = field(
        default=None,
        metadata=_help(
            "Store to read; default: the one the SAE was trained on. Another store must hold the "
            "SAE's layer, harvested from the same model."
        ),
    )
    sequences: int | None = field(
        default=None,
        metadata=_help(
            "Read a seeded sample of this many store sequences: the SAE's held-out ones first, then "
            "training ones if more are asked for (features.json counts both). Default: every held-out "
            "sequence of the SAE's run (every sequence of a store it was not trained on)."
        ),
    )
    seed: int = field(
        default=0, metadata=_help("Seed of the sample, the quantile reservoir and the table's subset.")
    )
    top_k: int = field(default=20, metadata=_help("Top activating contexts kept per feature."))
    window: int = field(default=16, metadata=_help("Tokens kept on each side of an activating token."))
    n_quantile: int = field(
        default=10, metadata=_help("Quantile-sampled contexts per feature, weakest to strongest.")
    )
    special_sequences: int = field(
        default=1000, metadata=_help("Sequences (of those read) the special-token table averages over.")
    )
    batch_tokens: int = field(default=4096, metadata=_help("Tokens per encode batch (across sequences)."))
    delphi: bool = field(
        default=False, metadata=_help("Also export every firing in delphi's latent-cache layout (delphi/).")
    )
    logits: bool = field(
        default=True,
        metadata=_help(
            "Compute each feature's logit view (the tokens its decoder direction raises and lowers most); "
            "it loads the store's model. --no-logits skips it."
        ),
    )
    model: str | None = field(
        default=None,
        metadata=_help(
            "Model whose unembedding the logit view uses; default: the one the store was harvested with."
        ),
    )
    device: str = field(
        default="auto", metadata=_help("Torch device: auto (cuda if available, else cpu), cpu, cuda:0, ...")
    )
    progress: bool = field(default=True, metadata=_help("Show the progress bar."))

    def __post_init__(self) -> None:
        for name in ("top_k", "batch_tokens", "n_quantile"):
            if getattr(self, name) < 1:
                raise FeaturesConfigError(
                    f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}"
                )
        if self.sequences is not None and self.sequences < 1:
            raise FeaturesConfigError(f"--sequences must be >= 1, got {self.sequences}")
        if self.window < 0:
            raise FeaturesConfigError(f"--window must be >= 0, got {self.window}")
        if self.special_sequences < 0:
            raise FeaturesConfigError(f"--special-sequences must be >= 0, got {self.special_sequences}")

    def to_json(self) -> dict:
        return asdict(self)
