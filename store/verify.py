"""Integrity check (verify_store) and summary (summarize_store) of a store. (skeleton; full checks follow)"""

from __future__ import annotations

import os
from pathlib import Path

from .reader import open_store


def verify_store(root: str | os.PathLike) -> dict:
    s = open_store(Path(root))
    return {
        "path": str(s.path),
        "shards": len(s.shards),
        "sequences": s.num_sequences,
        "tokens": s.num_tokens,
        "warnings": [],
    }


def summarize_store(root: str | os.PathLike) -> dict:
    s = open_store(Path(root))
    return {
        "path": str(s.path),
        "layers": s.layers,
        "d_model": s.d_model,
        "dtype": s.dtype,
        "sequences": s.num_sequences,
        "tokens": s.num_tokens,
    }
