"""The special-token table (the paper's Table F.3), accumulated during the features pass.

Rows: each special/added token id of the store's tokenizer (positions of type SPECIAL), and each role
word of the template's headers (system, user, assistant: positions of type TEMPLATE whose id is the
word's token; a row per token when the word is several). Over a seeded subset of at most
`--special-sequences` of the sequences read: per row, the mean over the sequences holding that token
of each feature's per-sequence max activation at it; the top 5 features.

A sequence may be split between batches: the maxima of the last sequence of a batch stay pending until
the next batch (or the end) and are then added to the sums, so the table does not depend on the batch size.
"""

from __future__ import annotations

import numpy as np
import torch

from fastsae.atomic import write_atomic, write_json_atomic
from fastsae.store import TokenType

ROLE_WORDS = ("system", "user", "assistant")
TOP = 5
FILE_JSON, FILE_MD = "special_tokens.json", "special_tokens.md"


def table_rows(tokenizer) -> list[dict]:
    """A row per special id, and per token of each role word (SmolLM2's `assistant` is `ass` + `istant`:
    a row for each, `word` naming the word)."""
    from fastsae.lm import special_ids

    rows = [
        {"token": tokenizer.decode([int(i)]), "id": int(i), "kind": "special"} for i in special_ids(tokenizer)
    ]
    for word in ROLE_WORDS:
        for i in tokenizer.encode(word, add_special_tokens=False):
            if all(r["id"] != int(i) for r in rows):
                rows.append({"token": tokenizer.decode([int(i)]), "id": int(i), "kind": "role", "word": word})
    return rows


class SpecialTable:
    """Per-row sums over sequences of each feature's per-sequence max at the row's token."""

    def __init__(self, rows: list[dict], d_sae: int, table_seqs: np.ndarray, device):
        self.rows, self.F, self.device = rows, d_sae, device
        top_id = max([r["id"] for r in rows], default=0) + 1
        self.lut = {
            k: torch.full((top_id,), -1, dtype=torch.int64, device=device) for k in ("special", "role")
        }
        for slot, r in enumerate(rows):
            self.lut[r["kind"]][r["id"]] = slot
        self.table_seqs = torch.as_tensor(np.sort(table_seqs), dtype=torch.int64, device=device)
        S = len(rows)
        self.sums = torch.zeros((S, d_sae), dtype=torch.float64, device=device)
        self.n_seq = torch.zeros(S, dtype=torch.int64, device=device)
        self.n_pos = torch.zeros(S, dtype=torch.int64, device=device)
        self.pending: tuple[torch.Tensor, torch.Tensor] | None = None  # (keys, maxima) of an open sequence
        self.seen: set[int] = set()

    def slots(self, ids: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        n = len(self.lut["special"])
        safe = ids.clamp(0, n - 1)
        inside = (ids >= 0) & (ids < n)
        special = torch.where(inside & (types == int(TokenType.SPECIAL)), self.lut["special"][safe], -1)
        role = torch.where(inside & (types == int(TokenType.TEMPLATE)), self.lut["role"][safe], -1)
        return torch.maximum(special, role)

    def update(self, acts: torch.Tensor, seq: torch.Tensor, ids: torch.Tensor, types: torch.Tensor) -> None:
        if not self.rows or len(self.table_seqs) == 0:
            return
        slot = self.slots(ids, types)
        hit = (slot >= 0) & torch.isin(seq, self.table_seqs)
        self.seen.update(torch.unique(seq[torch.isin(seq, self.table_seqs)]).tolist())
        rows = hit.nonzero(as_tuple=True)[0]
        S = len(self.rows)
        if len(rows):
            self.n_pos += torch.bincount(slot[rows], minlength=S)
        keys = seq[rows] * S + slot[rows]
        vals = acts[rows].float()
        if self.pending is not None:
            keys, vals = torch.cat([self.pending[0], keys]), torch.cat([self.pending[1], vals])
            self.pending = None
        if len(keys) == 0:
            return
        uniq, inv = torch.unique(keys, return_inverse=True)
        maxima = torch.zeros((len(uniq), self.F), dtype=vals.dtype, device=vals.device)
        maxima.scatter_reduce_(0, inv[:, None].expand_as(vals), vals, "amax", include_self=True)
        last = seq[-1] if len(seq) else None
        open_ = (uniq // S) == last if last is not None else torch.zeros_like(uniq, dtype=torch.bool)
        if bool(open_.any()):
            self.pending = (uniq[open_], maxima[open_])
        self._add(uniq[~open_], maxima[~open_])

    def _add(self, keys: torch.Tensor, maxima: torch.Tensor) -> None:
        slot = keys % len(self.rows)
        self.sums.index_add_(0, slot, maxima.double())
        self.n_seq += torch.bincount(slot, minlength=len(self.rows))

    def finish(self) -> dict:
        if self.pending is not None:
            self._add(*self.pending)
            self.pending = None
        mean = self.sums / self.n_seq.clamp(min=1)[:, None].double()
        tokens = []
        for s, r in enumerate(self.rows):
            n = int(self.n_seq[s])
            if n == 0:
                continue
            k = min(TOP, self.F)
            val, feat = mean[s].topk(k)
            top = [{"feature": int(f), "value": float(v)} for f, v in zip(feat, val, strict=True) if v > 0]
            tokens.append({**r, "n_sequences": n, "n_positions": int(self.n_pos[s]), "top": top})
        return {"n_sequences": len(self.seen), "tokens": tokens}


def markdown(doc: dict) -> str:
    lines = [
        f"# Special tokens: top {TOP} features\n",
        f"Mean over the sequences holding the token (of {doc['n_sequences']} read) of each feature's "
        "per-sequence max activation at that token.\n",
        "| token | kind | id | sequences | positions | top features (feature: value) |",
        "|---|---|---|---|---|---|",
    ]
    for t in doc["tokens"]:
        top = ", ".join(f"{e['feature']}: {e['value']:.3g}" for e in t["top"]) or "none fire"
        token = t["token"].replace("|", "\\|").replace("\n", "\\n")
        lines.append(
            f"| `{token}` | {t['kind']} | {t['id']} | {t['n_sequences']} | {t['n_positions']} | {top} |"
        )
    return "\n".join(lines) + "\n"


def write_table(out, doc: dict) -> None:
    write_json_atomic(out / FILE_JSON, doc)
    write_atomic(out / FILE_MD, markdown(doc))
