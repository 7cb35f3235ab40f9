"""HarvestConfig: every knob of `fastsae harvest`, one field per CLI flag.

The field help strings below ARE the CLI help (harvest/cli.py mirrors the fields 1:1 and a test
checks it). Validation that needs no model or file lives in __post_init__ (it only raises);
checks that need the model (layer range, chat template) happen in the runner before any work.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

from fastsae.errors import FastSAEError, UsageError
from fastsae.lm.embedded import DEFAULT_MODEL  # the embedded default's name lives with its fetcher
from fastsae.store.format import FP8_ROUNDINGS

# SmolLM2-135M has 30 decoder blocks. Block 9 (~1/3 depth) is past the token-level early layers,
# holds rich features, and costs only 10 of 30 blocks to harvest (capture stops after it).
DEFAULT_LAYERS = (9,)
MODEL_DTYPES = ("auto", "float32", "bfloat16", "float16")
# fp8: 8-bit float activations with one float32 scale per token (store/FORMAT.md)
DTYPES = (*MODEL_DTYPES[1:], "fp8_e4m3", "fp8_e5m2")
PACKINGS = ("conversation", "block")
ON_ERROR = ("skip", "fail")
ATTENTION = ("sdpa", "eager")
# A block shorter than this leaves its tokens almost no context to attend to: their activations would be
# those of a sequence's first positions only, not of text.
MIN_CONTEXT_SIZE = 8
# A forward budget below this is at most one short conversation per forward in disguise (plan_batches
# forwards a longer sequence alone); one conversation per forward is --sort-window 1.
MIN_BATCH_TOKENS = 64


class HarvestError(FastSAEError):
    """Base class of harvest's own errors (the CLI prints them as one line, exit code 2)."""


class HarvestConfigError(HarvestError, UsageError):
    """A bad harvest argument, detected before any work."""


def _help(text: str) -> dict:
    return {"help": text}


@dataclass(frozen=True)
class HarvestConfig:
    out: str = field(
        metadata=_help("Output store directory (created; an existing one with the same config is resumed).")
    )
    model: str = field(
        default=DEFAULT_MODEL,
        metadata=_help(
            "Model: a hub name, a local folder, a .gguf file, or the embedded default "
            f"'{DEFAULT_MODEL}' (fetched once into $FASTSAE_CACHE or ~/.cache/fastsae)."
        ),
    )
    data: tuple[str, ...] = field(
        default=(),
        metadata=_help(
            "Input data (repeatable, mixed): a hub dataset NAME[:CONFIG][@SPLIT] (split 'train' by default), or a "
            "local .jsonl/.json/.parquet file (optionally .gz) of chats (messages, conversation, ShareGPT "
            "conversations, history) or {'text'} rows; .txt files (block mode) split into documents on blank "
            "lines. Default: the shipped demo chats (harvest/data/demo_chats.jsonl)."
        ),
    )
    layers: tuple[int, ...] = field(
        default=DEFAULT_LAYERS,
        metadata=_help(
            "Residual-stream layers to store, comma separated: layer L = output of decoder block L (0-based) "
            "= HF hidden_states[L+1] (for the last block: its output before the final norm). The forward stops "
            "after the deepest one. Default 9 (of SmolLM2's 30)."
        ),
    )
    max_tokens: int = field(default=8192, metadata=_help("Truncate each conversation to this many tokens."))
    dtype: str = field(
        default="bfloat16",
        metadata=_help(
            "Stored activation dtype: float32, bfloat16, float16, fp8_e4m3, fp8_e5m2 (8-bit floats, one "
            "float32 scale per token: about half of bfloat16's bytes)."
        ),
    )
    fp8_rounding: str = field(
        default="stochastic",
        metadata=_help(
            "fp8 dtypes: stochastic (unbiased, each value to a neighbouring fp8 value, keyed by its place in "
            "the store: reproducible on any device) or nearest (round to nearest even: smaller error per token)."
        ),
    )
    packing: str = field(
        default="conversation",
        metadata=_help(
            "conversation: each conversation alone (FAST). block: concatenate token streams and cut fixed "
            "--context-size blocks (block-training baseline; plain text accepted)."
        ),
    )
    context_size: int = field(
        default=2048,
        metadata=_help(f"Block length in tokens for --packing block (at least {MIN_CONTEXT_SIZE})."),
    )
    batch_tokens: int = field(
        default=0,
        metadata=_help(
            "Token budget per forward pass (rows x padded length; length-sorted, right-padded batches): 0 = auto "
            f"(16384), else at least {MIN_BATCH_TOKENS}, and in block mode at least --context-size. A sequence "
            "longer than the budget is forwarded alone; --sort-window 1 forwards one conversation at a time."
        ),
    )
    shard_tokens: int = field(
        default=1 << 20,
        metadata=_help(
            "Tokens per committed shard: a shard is committed once it holds this many (plus at most one "
            "conversation or block, never split). A crash loses the open shard and the forwarded windows "
            "not yet written."
        ),
    )
    dedup_ngram: int = field(
        default=0,
        metadata=_help(
            "Drop a conversation if any of its content-token n-grams of this size was already seen (0 = off)."
        ),
    )
    limit: int | None = field(
        default=None,
        metadata=_help("Use at most this many usable records (over all --data together; omit for all)."),
    )
    on_error: str = field(default="skip", metadata=_help("Bad input records: skip (counted) or fail."))
    device: str = field(
        default="auto", metadata=_help("Torch device: auto (cuda if available, else cpu), cpu, cuda:0, ...")
    )
    model_dtype: str = field(
        default="auto",
        metadata=_help(
            "dtype of the forward pass: auto (float32 on CPU, bfloat16 on GPU), float32, bfloat16, float16."
        ),
    )
    revision: str | None = field(default=None, metadata=_help("Model revision (hub branch, tag or commit)."))
    writer: int = field(
        default=0,
        metadata=_help(
            "This writer's id (0-based) when several processes fill one --out without torchrun (under "
            "torchrun each rank is a writer)."
        ),
    )
    num_writers: int = field(
        default=1,
        metadata=_help(
            "Number of writers filling one --out; writer w harvests the w-th contiguous slice (whole sort "
            "windows, balanced by tokens; the store equals a one-writer harvest)."
        ),
    )
    sort_window: int = field(
        default=512,
        metadata=_help(
            "Sort conversations by length within windows of this many to reduce padding (stored in input order)."
        ),
    )
    threads: int = field(
        default=0,
        metadata=_help(
            "CPU threads for torch (0 = the cores this process may use; more are clamped to them)."
        ),
    )
    attn_implementation: str = field(
        default="sdpa", metadata=_help("Attention implementation: sdpa or eager.")
    )
    progress: bool = field(default=True, metadata=_help("Show a progress bar."))

    def __post_init__(self) -> None:
        def bad(msg: str) -> HarvestConfigError:
            return HarvestConfigError(msg)

        if self.dtype not in DTYPES:
            raise bad(f"unknown --dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        if self.model_dtype not in MODEL_DTYPES:
            raise bad(f"unknown --model-dtype {self.model_dtype!r}; choose one of {', '.join(MODEL_DTYPES)}")
        if self.fp8_rounding not in FP8_ROUNDINGS:
            raise bad(f"unknown --fp8-rounding {self.fp8_rounding!r}; choose one of {', '.join(FP8_ROUNDINGS)}")
        if self.packing not in PACKINGS:
            raise bad(f"unknown --packing {self.packing!r}; choose one of {', '.join(PACKINGS)}")
        if self.on_error not in ON_ERROR:
            raise bad(f"unknown --on-error {self.on_error!r}; choose skip or fail")
        if not self.layers:
            raise bad("--layers is empty; give at least one layer, e.g. --layers 9")
        if any(layer < 0 for layer in self.layers) or len(set(self.layers)) != len(self.layers):
            raise bad(f"--layers must be distinct non-negative integers, got {list(self.layers)}")
        if list(self.layers) != sorted(self.layers):
            raise bad(f"--layers must be ascending, got {list(self.layers)}")
        for name in ("max_tokens", "shard_tokens", "sort_window", "num_writers"):
            if getattr(self, name) < 1:
                raise bad(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.dedup_ngram < 0 or self.threads < 0 or self.batch_tokens < 0:
            raise bad("--dedup-ngram, --threads and --batch-tokens must be >= 0")
        if self.limit is not None and self.limit < 1:
            raise bad(f"--limit must be >= 1 (omit it to use every record), got {self.limit}")
        if self.context_size < MIN_CONTEXT_SIZE:
            raise bad(
                f"--context-size must be >= {MIN_CONTEXT_SIZE}, got {self.context_size}: shorter blocks leave "
                "their tokens almost no context"
            )
        if self.batch_tokens and self.packing == "block" and self.batch_tokens < self.context_size:
            raise bad(
                f"--batch-tokens must be 0 (auto) or >= --context-size {self.context_size} in block mode (a "
                f"forward holds whole blocks), got {self.batch_tokens}"
            )
        if 0 < self.batch_tokens < MIN_BATCH_TOKENS:
            raise bad(
                f"--batch-tokens must be 0 (auto) or >= {MIN_BATCH_TOKENS}, got {self.batch_tokens}: a budget "
                "this small forwards one conversation at a time anyway; for that use --sort-window 1"
            )
        if not 0 <= self.writer < self.num_writers:
            raise bad(
                f"--writer {self.writer} is outside 0..{self.num_writers - 1} (--num-writers {self.num_writers})"
            )
        if self.attn_implementation not in ATTENTION:
            raise bad(f"unknown --attn-implementation {self.attn_implementation!r}; choose sdpa or eager")

    def batch_budget(self, device: str) -> int:
        """--batch-tokens, with 0 resolved for `device`."""
        if self.batch_tokens:
            return self.batch_tokens
        return 16384  # measured on CPU and sized for a GPU; `device` kept for a per-device rule

    def asdict(self) -> dict:
        return dataclasses.asdict(self)


def parse_layers(text: str) -> tuple[int, ...]:
    """'4,9,14' -> (4, 9, 14); another order is accepted and sorted, with a logged note (the store records
    the sorted order, in store.json's "layers" and config); a clear error for anything else."""
    try:
        layers = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise HarvestConfigError(f"--layers must be comma-separated integers, got {text!r}") from None
    ordered = tuple(sorted(layers))
    if ordered != layers and len(set(layers)) == len(layers):
        logging.getLogger(__name__).info(
            "note: --layers %s: stored in ascending order, %s (the order store.json records)",
            text, ",".join(map(str, ordered)),
        )  # fmt: skip
    return ordered
