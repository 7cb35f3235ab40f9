"""The evaluation set: whole conversations (token ids + types), and the SAEs' training sequences.

Two sources:
- the held-out sequences of the SAEs' training run, read from their store (token ids and types as
  harvested; the model reruns them). Several SAEs of one run share them; SAEs with different held-out
  splits of one store are evaluated on the sequences held out for all of them;
- fresh chat data (--data), tokenised here with the model's chat template and truncated as harvest does.

Either way, every evaluated sequence is hashed (sha256 of its int32 token ids) and compared with the
hashes of each SAE's training sequences (the store's sequences its run did not hold out): an overlap is
refused unless --allow-overlap, and then recorded.

The held-out split is train's: both call fastsae.store.split.holdout_indices, a pure function of the
store's sequence count, the run's seed and holdout fraction.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

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


# --- fresh chat data --------------------------------------------------------------------------------------
ROLE_ALIASES = {
    "system": "system", "developer": "system", "user": "user", "human": "user", "assistant": "assistant",
    "gpt": "assistant", "bot": "assistant", "model": "assistant", "tool": "tool",
}  # fmt: skip


def _messages(rec) -> list[dict] | None:
    """A record's conversation as [{role, content}], or None when it holds none (the common schemas)."""
    turns = rec if isinstance(rec, list) else None
    if isinstance(rec, dict):
        for key in ("messages", "conversation", "conversations"):
            if isinstance(rec.get(key), list):
                turns = rec[key]
                break
    if not turns:
        return None
    out = []
    for t in turns:
        if not isinstance(t, dict):
            return None
        role = ROLE_ALIASES.get(str(t.get("role", t.get("from", ""))).lower())
        content = t.get("content", t.get("value"))
        if isinstance(content, list):  # text parts
            content = "\n".join(
                str(p.get("text", p.get("value", ""))) for p in content if isinstance(p, dict)
            )
        if role is None or not isinstance(content, str):
            return None
        out.append({"role": role, "content": content})
    return out


def _records(path: Path):
    if not path.is_file():
        raise EvalSetError(f"--data {path}: no such file")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise EvalSetError(f"--data {path}: not valid JSON ({e})") from None
        yield from enumerate(doc if isinstance(doc, list) else [doc])
        return
    for row, line in enumerate(text.splitlines()):
        if line.strip():
            try:
                yield row, json.loads(line)
            except json.JSONDecodeError:
                yield row, None


def data_set(paths, tokenizer, *, max_tokens: int, limit: int | None) -> tuple[EvalSet, dict]:
    """Conversations of the --data files, tokenised one at a time with the chat template; -> (set, skipped)."""
    from fastsae.lm import TemplateRejectedError, tokenize_conversation

    seqs: list[EvalSequence] = []
    skipped = {"not_a_conversation": 0, "template_rejected": 0}
    for spec in paths:
        path = Path(spec)
        if path.suffix not in (".jsonl", ".json"):
            raise EvalSetError(f"--data {spec}: eval reads .jsonl and .json chat files")
        for row, rec in _records(path):
            if limit is not None and len(seqs) >= limit:
                break
            messages = _messages(rec)
            if not messages:
                skipped["not_a_conversation"] += 1
                continue
            try:
                ids, types = tokenize_conversation(tokenizer, messages, max_tokens=max_tokens)
            except TemplateRejectedError:
                skipped["template_rejected"] += 1
                continue
            if len(ids):
                seqs.append(EvalSequence(ids, types, f"{path.name}:{row}"))
    return EvalSet(seqs, "data", {"data": [str(p) for p in paths], "skipped": skipped}), skipped


def count_overlap(evalset: EvalSet, hashes: set[str]) -> int:
    return sum(1 for s in evalset.sequences if s.digest in hashes)
