"""N-gram deduplication of samples (off by default; ``--dedup-ngram 20`` turns it on).

A sample is a duplicate if ANY of its token n-grams was seen in an earlier kept sample; only kept samples
record their n-grams. With ``token_types`` given, n-grams are taken over content tokens only (SYSTEM, USER,
ASSISTANT, TOOL, TEXT) with template and special tokens removed, because the template's own tokens repeat in
every conversation and would make everything a duplicate. A sample with fewer than ``n`` content tokens is
keyed by its whole content, so exact repeats of short conversations are caught too.

N-grams are hashed to 64 bits with a fixed polynomial hash and a splitmix64 finaliser (numpy, vectorised):
deterministic across runs and processes (no Python hash randomisation). Memory: one Python int per distinct
n-gram in a set (roughly 60-100 bytes each), i.e. about 1 GB per 10M harvested content tokens.
"""

from __future__ import annotations

import numpy as np

from fastsae.store.token_types import TokenType

CONTENT_TYPES = np.array(
    [TokenType.SYSTEM, TokenType.USER, TokenType.ASSISTANT, TokenType.TOOL, TokenType.TEXT], dtype=np.uint8
)

_BASE = np.uint64(0x100000001B3)  # FNV-64 prime: odd, so the polynomial hash is a bijection per position
_SHORT = np.uint64(0x9E3779B97F4A7C15)  # salts the key of samples shorter than n


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def ngram_hashes(token_ids, n: int) -> np.ndarray:
    """uint64 hashes of every n-gram of ``token_ids`` (one hash of the whole sequence if shorter than n)."""
    x = np.asarray(token_ids, dtype=np.int64).astype(np.uint64) + np.uint64(1)  # [T]
    if len(x) == 0:
        return np.zeros(0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        if len(x) < n:
            h = _SHORT + np.uint64(len(x))
            for v in x:
                h = h * _BASE + v
            return _splitmix64(np.array([h], dtype=np.uint64))
        count = len(x) - n + 1
        h = np.zeros(count, dtype=np.uint64)  # [T - n + 1]
        for j in range(n):
            h = h * _BASE + x[j : j + count]
        return _splitmix64(h)


class NgramDedup:
    """Drop a sample when any of its n-grams was already seen in a kept sample."""

    def __init__(self, n: int):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"dedup n-gram size must be an integer >= 1, not {n!r}")
        self.n = n
        self.seen: set[int] = set()
        self.kept = 0
        self.dropped = 0

    def is_duplicate(self, token_ids, token_types=None) -> bool:
        """True if the sample repeats an n-gram of an earlier kept sample; otherwise record its n-grams.

        ``token_types`` (same length as ``token_ids``): keep only content tokens before taking n-grams.
        A sample without any content token is never a duplicate.
        """
        ids = np.asarray(token_ids)
        if token_types is not None:
            types = np.asarray(token_types)
            if types.shape != ids.shape:
                raise ValueError(f"token_types shape {types.shape} != token_ids shape {ids.shape}")
            ids = ids[np.isin(types, CONTENT_TYPES)]
        hashes = ngram_hashes(ids, self.n).tolist()
        if not self.seen.isdisjoint(hashes):
            self.dropped += 1
            return True
        self.seen.update(hashes)
        self.kept += 1
        return False

    def summary(self) -> str:
        return f"dedup ({self.n}-grams): kept {self.kept:,}, dropped {self.dropped:,} duplicates"
