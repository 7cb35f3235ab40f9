"""summarize_store: what `fastsae inspect` reports, after the cheap checks."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np

from .checks import quick_check
from .errors import StoreCorruptError
from .format import DTYPES, SKIPPED_JSONL, STORE_JSON, list_partials
from .reader import open_store
from .token_types import NUM_TOKEN_TYPES, TokenType


def _skipped_counts(path: Path) -> dict[str, int] | None:
    if not path.exists():
        return None
    counts: Counter[str] = Counter()
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                reason = rec.get("reason", "unknown") if isinstance(rec, dict) else "unknown"
            except json.JSONDecodeError:
                reason = "unparseable"
            counts[str(reason)] += 1
    return dict(counts)


def summarize_store(root: str | os.PathLike, *, storage_options: dict | None = None) -> dict:
    """Model, layers, d_model, dtype, sequences, tokens, bytes, bytes/token, overhead ratio, token-type counts,
    data provenance, skipped counts (from skipped.jsonl, if present) and completeness. Validates first: the
    cheap checks (open_store's declared sizes, quick_check) and the writers' records; raises
    StoreCorruptError on damage (a store still being written is reported, not refused)."""
    s = open_store(root, storage_options=storage_options)
    warnings = quick_check(s)
    if s.completeness.damaged:
        raise StoreCorruptError(s.completeness.message)
    if s.completeness.state == "unknown":
        warnings.append(s.completeness.message)
    meta, identity = s.meta, s.meta.get("identity") or {}
    type_counts = np.zeros(256, dtype=np.int64)
    for sh in s.shards:
        t = sh.token_types
        for start in range(0, sh.num_tokens, 2**24):
            type_counts += np.bincount(np.asarray(t[start : start + 2**24]), minlength=256)
    nbytes = sum(sh.bytes() for sh in s.shards) + (s.path / STORE_JSON).stat().st_size
    per_token = nbytes / s.num_tokens if s.num_tokens else None
    payload = DTYPES[s.dtype][1] * s.d_model * len(s.layers) if s.dtype and s.d_model else None
    token_types = {tt.name: int(type_counts[tt]) for tt in TokenType}
    if type_counts[NUM_TOKEN_TYPES:].any():
        token_types["INVALID"] = int(type_counts[NUM_TOKEN_TYPES:].sum())
    model = meta.get("model") or identity.get("model") or identity.get("model_id")
    revision = meta.get("revision")
    if isinstance(model, dict):  # harvest writes {"name", "revision", "commit", ...}
        revision = revision or model.get("revision") or model.get("commit")
        model = model.get("name") or model.get("id")
    revision = revision or identity.get("revision")
    return {
        "path": s.url or str(s.path),
        "model": model,
        "revision": revision,
        "layers": s.layers,
        "d_model": s.d_model,
        "dtype": s.dtype,
        "shards": len(s.shards),
        "sequences": s.num_sequences,
        "tokens": s.num_tokens,
        "bytes": nbytes,
        "bytes_per_token": per_token,
        # bytes/token / (dtype bytes x d_model x layers): 1.0 = nothing but the activations
        "overhead_ratio": per_token / payload if per_token and payload else None,
        "token_types": token_types,
        "data": meta.get("data"),
        "skipped": _skipped_counts(s.path / SKIPPED_JSONL),
        "partial_shards": len(s.uncommitted) if s.url else len(list_partials(s.path)),
        "fingerprint": s.fingerprint,
        "complete": {"state": s.completeness.state, "message": s.completeness.message},
        "checksummed": all(sh.files for sh in s.shards),
        "warnings": warnings,
    }
