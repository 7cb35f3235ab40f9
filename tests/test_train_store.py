"""Synthetic activation stores for the train tests (built with store.ShardWriter), and their own checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fastsae.store import ShardWriter, TokenType


def make_store(
    root: Path,
    *,
    d: int = 16,
    sequences: int = 120,
    seq_len: tuple[int, int] = (20, 60),
    shards: int = 2,
    layers: tuple[int, ...] = (3,),
    seed: int = 0,
    n_features: int = 64,
    dtype: str = "float32",
) -> Path:
    """A store whose activations are sparse sums of `n_features` random unit directions (+ small noise),
    so SAEs have something to learn. Every sequence starts with a SPECIAL token."""
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(n_features, d)).astype(np.float32)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    per_shard = -(-sequences // shards)
    first = 0
    for w in range(shards):
        n = min(per_shard, sequences - first)
        if n <= 0:
            break
        with ShardWriter(
            root,
            writer=0,
            seq=w,
            first_sequence=first,
            layers=list(layers),
            d_model=d,
            dtype=dtype,
            meta={"model": "synthetic", "identity": {"model": "synthetic"}},
        ) as wr:
            for i in range(n):
                t = int(rng.integers(*seq_len))
                active = rng.random((t, n_features)) < 4 / n_features
                coef = active * rng.exponential(2.0, size=(t, n_features))
                x = (coef @ dirs + 0.05 * rng.normal(size=(t, d))).astype(np.float32) + 1.0
                types = rng.integers(1, 5, size=t).astype(np.uint8)
                types[0] = TokenType.SPECIAL
                types[rng.random(t) < 0.1] = TokenType.SPECIAL
                wr.append(
                    token_ids=rng.integers(0, 1000, size=t).astype(np.int32),
                    token_types=types,
                    acts={L: x * (1 + L) for L in layers},
                    source=(0, first + i),
                )
        first += n
    return root


def test_synthetic_store_opens(tmp_path):
    from fastsae.store import open_store

    s = open_store(make_store(tmp_path / "s"))
    assert s.layers == [3] and s.d_model == 16 and s.num_sequences == 120


@pytest.fixture
def small_store(tmp_path):
    return make_store(tmp_path / "store")
