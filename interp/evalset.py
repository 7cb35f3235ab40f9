"""The evaluation set: whole conversations (token ids + types), and the SAEs' training sequences.

Two sources:
- the held-out sequences of the SAEs' training run, read from their store (token ids and types as
  harvested; the model reruns them). Several SAEs of one run share them; SAEs with different held-out
  splits of one store are evaluated on the sequences held out for all of them;
- fresh chat data (--data) in any format harvest reads (fastsae.chats: same schemas, skip rules and errors),
  tokenised here with the model's chat template and truncated as harvest does.

Either way, every evaluated sequence is hashed (sha256 of its int32 token ids) and compared with the
hashes of each SAE's training sequences (the store's sequences its run did not hold out): an overlap is
refused unless --allow-overlap, and then recorded.

The held-out split is train's: both call fastsae.store.split.holdout_indices, a pure function of the
store's sequence count, the run's seed and holdout fraction.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from fastsae.errors import InputError
from fastsae.store.split import holdout_indices


class EvalSetError(InputError):
    """An evaluation set that cannot be used (empty, unreadable, overlapping training data)."""


@dataclass
class EvalSequence:
    token_ids: np.ndarray  # [T] int32
    token_types: np.ndarray  # [T] uint8
    source: str  # "store:<index>" or "<file>:<row>"

    @property
    def digest(self) -> str:
        return content_hash(self.token_ids)


@dataclass
class EvalSet:
    sequences: list[EvalSequence]
    kind: str  # "heldout" | "data"
    description: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def num_tokens(self) -> int:
        return int(sum(len(s.token_ids) for s in self.sequences))


def content_hash(token_ids) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(token_ids, dtype=np.int32)).tobytes()).hexdigest()


def run_holdout(extra: dict, num_sequences: int) -> np.ndarray:
    """The held-out indices a `fastsae train` SAE folder's recorded config implies."""
    cfg = extra.get("config") or {}
    return holdout_indices(num_sequences, int(cfg.get("seed", 42)), fraction=float(cfg.get("holdout") or 0.0))


def training_hashes(store, holdout: np.ndarray) -> set[str]:
    """Content hashes of every sequence of `store` outside `holdout` (what the run trained on)."""
    held = set(int(i) for i in holdout)
    out: set[str] = set()
    for shard in store.shards:
        ids, offsets = np.asarray(shard.token_ids), np.asarray(shard.offsets, np.int64)
        for j in range(shard.num_sequences):
            if shard.first_sequence + j not in held:
                out.add(content_hash(ids[offsets[j] : offsets[j + 1]]))
    return out


def heldout_set(store, holdouts: list[np.ndarray], *, limit: int | None, max_tokens: int | None) -> EvalSet:
    """The sequences held out by every run in `holdouts` (store order), at most `limit` of them."""
    common = holdouts[0]
    for h in holdouts[1:]:
        common = np.intersect1d(common, h)
    if limit is not None:
        common = common[:limit]
    seqs = []
    for i in common:
        s = store.sequence(int(i))
        ids, types = np.asarray(s.token_ids, np.int32), np.asarray(s.token_types, np.uint8)
        if max_tokens is not None:
            ids, types = ids[:max_tokens], types[:max_tokens]
        seqs.append(EvalSequence(ids, types, f"store:{int(i)}"))
    desc = {"store": str(store.path), "sequences": [int(i) for i in common]}
    return EvalSet(seqs, "heldout", desc)


# --- fresh chat data: read by fastsae.chats, so every format, schema and skip rule of harvest's --data ---
def check_data(specs) -> None:
    """Before the model loads: the --data specs are readable and hold a conversation (one line if not)."""
    from fastsae.chats import NothingUsableError, read_conversations

    if not specs:
        return
    conversations = read_conversations(specs)  # a missing file, an unsupported format: raised here
    try:
        next(conversations, None)  # reads up to the first usable conversation only
    except NothingUsableError as e:
        raise EvalSetError(f"empty evaluation set: {e}") from None
    finally:
        conversations.close()


def data_set(specs, tokenizer, *, max_tokens: int, limit: int | None) -> tuple[EvalSet, dict]:
    """Conversations of the --data specs, tokenised one at a time with the chat template and truncated as
    harvest does; at most `limit` sequences. -> (set, {reason: rows skipped})."""
    from fastsae.chats import NothingUsableError, SkipLog, read_conversations
    from fastsae.lm import TemplateRejectedError, tokenize_conversation

    seqs: list[EvalSequence] = []
    skip_log = SkipLog()
    conversations = read_conversations(specs, skip_log=skip_log)  # a bad spec raises here, before any work
    try:
        for conv in conversations:
            if limit is not None and len(seqs) >= limit:
                break
            try:
                ids, types = tokenize_conversation(tokenizer, list(conv.messages), max_tokens=max_tokens)
            except TemplateRejectedError as e:  # skipped as harvest skips it
                skip_log.record(conv.dataset, conv.row, e.reason, e.detail)
                continue
            if len(ids) == 0:
                skip_log.record(conv.dataset, conv.row, "empty_tokens", "no tokens after templating")
                continue
            seqs.append(EvalSequence(np.asarray(ids, np.int32), np.asarray(types, np.uint8), conv.source))
    except NothingUsableError as e:
        raise EvalSetError(f"empty evaluation set: {e}") from None
    finally:
        conversations.close()
    skipped = skip_log.counts()
    return EvalSet(seqs, "data", {"data": [str(p) for p in specs], "skipped": skipped}), skipped


def count_overlap(evalset: EvalSet, hashes: set[str]) -> int:
    return sum(1 for s in evalset.sequences if s.digest in hashes)
