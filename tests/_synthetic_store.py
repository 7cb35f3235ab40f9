"""A synthetic store written through ShardWriter, with the ground truth of every sequence, and what the store
tests share: its meta, a schema-1 rewrite, the fsync switch. tests/test_store.py re-exports these (the other
store tests import them from there)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fastsae.store import ShardWriter, TokenType, init_store
from fastsae.store.dtypes import float32_to_bf16_bits

REPO = Path(__file__).resolve().parents[1]
META = {"identity": {"model": "synthetic/tiny", "revision": "r0", "template_hash": "abc"}, "data": ["demo"]}


@pytest.fixture
def real_fsync():
    """Requested by the tests that keep fsync on (durability is their point)."""


@pytest.fixture(autouse=True)
def _no_fsync(request, monkeypatch):
    """fsync costs ~5 ms per file on CI disks and a shard has ~40; most tests do not need durability."""
    if "real_fsync" not in request.fixturenames:
        monkeypatch.setattr(os, "fsync", lambda fd: None)


def expected_stored(x: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "float32":
        return x.astype(np.float32)
    if dtype == "float16":
        return x.astype(np.float16)
    return float32_to_bf16_bits(x)


def write_store(
    root: Path,
    lengths_per_shard: list[list[int]],
    *,
    layers=(2, 5),
    d_model=24,
    dtype="float32",
    seed=0,
    zero_rows=False,
    writer=0,
    first_sequence=0,
    **kw,
) -> list[dict]:
    """Writes shards through ShardWriter; returns the per-sequence ground truth in harvest order."""
    rng = np.random.default_rng(seed)
    init_store(root, meta=META)
    truth, first = [], first_sequence
    for seq, lengths in enumerate(lengths_per_shard):
        with ShardWriter(
            root, writer=writer, seq=seq, first_sequence=first, layers=list(layers), d_model=d_model,
            dtype=dtype, meta=META, **kw,
        ) as w:  # fmt: skip
            for T in lengths:
                x = {L: rng.standard_normal((T, d_model)).astype(np.float32) * (L + 1) for L in layers}
                if zero_rows:
                    for L in layers:
                        x[L][: T // 2] = 0.0
                ids = rng.integers(0, 50_000, T).astype(np.int32)
                types = rng.integers(0, len(TokenType), T).astype(np.uint8)
                src = (int(rng.integers(0, 3)), int(rng.integers(0, 1000)))
                w.append(token_ids=ids, token_types=types, acts=x, source=src)
                truth.append({"ids": ids, "types": types, "acts": x, "source": src})
        first += len(lengths)
    return truth


def to_schema_1(root: Path) -> None:
    """Turns a store into what a schema-1 fastsae wrote: no file manifest or attribute crc in the shards, no
    writer records, schema_version 1 (the only differences between the two schemas)."""
    import json

    for shard in root.glob("shard-*.zarr"):
        path = shard / "zarr.json"
        group = json.loads(path.read_text())
        info = group["attributes"]["fastsae"]
        info.pop("files", None), info.pop("meta_crc32c", None)
        info["schema_version"] = 1
        path.write_text(json.dumps(group, indent=2))
    meta = json.loads((root / "store.json").read_text())
    meta["schema_version"] = 1
    (root / "store.json").write_text(json.dumps(meta, indent=2))
    for record in root.glob("writer-*.json"):
        record.unlink()
