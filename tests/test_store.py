"""Store round trip and reads: dtypes and codecs, zero-copy memmaps, zarr-alone reads, doc starts, open errors,
read-only files, fingerprints, overhead, pickling. Writers, atomic commit and concurrency:
tests/test_store_commit.py."""

from __future__ import annotations

import os

import numpy as np
import pytest
import zarr

from fastsae.store import (
    SCHEMA_VERSION,
    ShardWriter,
    StoreError,
    StoreNotFoundError,
    TokenType,
    init_store,
    open_store,
    summarize_store,
    to_float32,
    verify_store,
)
from fastsae.store.dtypes import float32_to_bf16_bits
from tests._synthetic_store import (  # noqa: F401  (autouse fixture; other store tests import these from here)
    META,
    REPO,
    _no_fsync,
    expected_stored,
    to_schema_1,
    write_store,
)


@pytest.mark.parametrize("compression", [None, "zstd"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_round_trip(tmp_path, dtype, compression):
    lengths = [[1], [7, 300, 2, 33], [129]]
    truth = write_store(
        tmp_path, lengths, dtype=dtype, compression=compression, rows_per_chunk=32, zero_rows=True
    )
    s = open_store(tmp_path)
    assert (s.num_sequences, s.num_tokens) == (len(truth), sum(map(sum, lengths)))
    assert s.layers == [2, 5] and s.d_model == 24 and s.dtype == dtype
    assert s.meta["schema_version"] == SCHEMA_VERSION and s.meta["identity"] == META["identity"]
    assert [sh.first_sequence for sh in s.shards] == [0, 1, 5]
    lens = np.array([len(t["ids"]) for t in truth])
    np.testing.assert_array_equal(s.seq_offsets, np.concatenate([[0], np.cumsum(lens)]))
    for i, t in enumerate(truth):
        q = s.sequence(i)
        assert q.index == i and len(q) == len(t["ids"]) and q.source == t["source"]
        np.testing.assert_array_equal(q.token_ids, t["ids"])
        np.testing.assert_array_equal(q.token_types, t["types"])
        np.testing.assert_array_equal(q.doc_starts, [0])
        for L in (2, 5):
            raw = np.asarray(q.raw_acts(L))
            np.testing.assert_array_equal(raw, expected_stored(t["acts"][L], dtype))
            acts = q.acts(L)
            assert acts.shape == (len(t["ids"]), 24)
            np.testing.assert_array_equal(
                np.asarray(acts, np.float32), to_float32(expected_stored(t["acts"][L], dtype), dtype)
            )
    assert s.sequence(-1).index == len(truth) - 1
    with pytest.raises(IndexError):
        s.sequence(len(truth))
    assert verify_store(tmp_path)["sequences"] == len(truth)


def test_bf16_rounding_matches_torch_and_torch_input_is_bit_exact(tmp_path):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).standard_normal((50, 16)).astype(np.float32)
    x[0, :4] = [1.0 + 2**-8, 1.0 + 3 * 2**-8, -0.0, 3.3e38]  # ties to even, signed zero, near max
    np.testing.assert_array_equal(
        float32_to_bf16_bits(x), torch.from_numpy(x).bfloat16().view(torch.int16).numpy().view(np.uint16)
    )
    t = torch.from_numpy(x).bfloat16()
    x16 = torch.from_numpy(x).clamp(-6e4, 6e4).half()
    with ShardWriter(
        tmp_path, writer=0, seq=0, first_sequence=0, layers=[0, 1], d_model=16, dtype="bfloat16"
    ) as w:
        w.append(token_ids=np.arange(50), token_types=np.zeros(50), acts={0: t, 1: x16}, source=(0, 0))
    q = open_store(tmp_path).sequence(0)
    np.testing.assert_array_equal(q.raw_acts(0), t.view(torch.int16).numpy().view(np.uint16))
    np.testing.assert_array_equal(q.acts(0), t.float().numpy())
    np.testing.assert_array_equal(q.acts(1), x16.bfloat16().float().numpy())


@pytest.mark.parametrize(
    "T,rows_per_chunk", [(1, None), (1, 64), (63, 64), (64, 64), (200, 64), (1000, None), (5, 1)]
)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_zarr_alone_reads_what_the_reader_reads(tmp_path, T, rows_per_chunk, dtype):
    truth = write_store(
        tmp_path, [[T]], layers=(3,), d_model=40, dtype=dtype, rows_per_chunk=rows_per_chunk, zero_rows=True
    )
    shard = open_store(tmp_path).shards[0]
    raw = shard.raw_acts(3)
    assert isinstance(raw, np.memmap)
    arr = zarr.open_array(shard.path / "acts" / "layer_3", mode="r")  # plain zarr, nothing from fastsae
    assert arr.shape == (T, 40) and arr.attrs["fastsae_dtype"] == dtype
    np.testing.assert_array_equal(arr[:], raw)
    np.testing.assert_array_equal(arr[:], expected_stored(truth[0]["acts"][3], dtype))
    np.testing.assert_array_equal(zarr.open_array(shard.path / "token_ids", mode="r")[:], truth[0]["ids"])
    np.testing.assert_array_equal(zarr.open_array(shard.path / "offsets", mode="r")[:], [0, T])
    g = zarr.open_group(shard.path, mode="r")
    assert g.attrs["fastsae"]["num_tokens"] == T


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_zero_copy(tmp_path, dtype):
    write_store(tmp_path, [[10, 20]], dtype=dtype)
    s = open_store(tmp_path)
    shard, q = s.shards[0], s.sequence(1)
    assert isinstance(shard.raw_acts(2), np.memmap)
    assert np.shares_memory(q.raw_acts(2), shard.raw_acts(2))
    assert np.shares_memory(q.token_ids, shard.token_ids)
    if dtype == "bfloat16":
        assert q.acts(2).dtype == np.float32 and not np.shares_memory(q.acts(2), shard.raw_acts(2))
    else:
        assert np.shares_memory(q.acts(2), shard.raw_acts(2))
    rows = np.array([0, 3, 17, 29], dtype=np.int64)
    np.testing.assert_array_equal(shard.raw_acts(5)[rows], np.asarray(shard.raw_acts(5))[[0, 3, 17, 29]])


def test_compressed_fallback_supports_row_indexing(tmp_path):
    write_store(tmp_path, [[50, 70]], dtype="bfloat16", compression="zstd", rows_per_chunk=16)
    shard = open_store(tmp_path).shards[0]
    raw = shard.raw_acts(2)
    assert not isinstance(raw, np.memmap) and raw.shape == (120, 24)
    full = raw[0:120]
    np.testing.assert_array_equal(raw[np.array([1, 16, 17, 119])], full[[1, 16, 17, 119]])


def test_doc_starts_block_mode(tmp_path):
    with ShardWriter(tmp_path, writer=0, seq=0, first_sequence=0, layers=[0], d_model=4) as w:
        for k in range(3):
            w.append(
                token_ids=np.arange(16), token_types=np.full(16, TokenType.TEXT), acts={0: np.ones((16, 4))},
                source=(0, 10 * k), doc_starts=[3, 9], doc_sources=[(0, 10 * k + 1), (1, 10 * k + 2)],
            )  # fmt: skip
    s = open_store(tmp_path)
    q = s.sequence(2)
    np.testing.assert_array_equal(q.doc_starts, [3, 9])
    np.testing.assert_array_equal(q.doc_sources, [[0, 21], [1, 22]])
    np.testing.assert_array_equal(s.shards[0].doc_starts, [3, 9, 19, 25, 35, 41])


def test_open_errors(tmp_path):
    with pytest.raises(StoreNotFoundError) as e:
        open_store(tmp_path / "nope")
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, StoreError)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="store.json"):
        open_store(tmp_path / "empty")
    init_store(tmp_path / "fresh", meta={**META, "layers": [3], "d_model": 8, "dtype": "float16"})
    s = open_store(tmp_path / "fresh")
    assert (s.num_sequences, s.layers, s.d_model, s.dtype) == (0, [3], 8, "float16")


def test_read_only_files(tmp_path):
    write_store(tmp_path, [[4, 5]], dtype="bfloat16")
    for dirpath, _, files in os.walk(tmp_path):
        for f in files:
            os.chmod(os.path.join(dirpath, f), 0o444)
    s = open_store(tmp_path)
    assert s.sequence(1).acts(5).shape == (5, 24)
    assert verify_store(tmp_path)["ok"] and len(s.fingerprint) == 64


def test_fingerprint_changes_with_shards(tmp_path):
    write_store(tmp_path, [[4]])
    f1 = open_store(tmp_path).fingerprint
    assert open_store(tmp_path).fingerprint == f1
    write_store(tmp_path, [[4]], writer=1, first_sequence=1)
    assert open_store(tmp_path).fingerprint != f1


def test_bytes_per_token_overhead_realistic_shard(tmp_path):
    """d=576, 50k tokens, bf16, one layer, conversations of realistic lengths: overhead <= 2%."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(50, 1500, 200)
    lengths = lengths[np.cumsum(lengths) <= 50_000]
    lengths = [*lengths.tolist(), 50_000 - int(lengths.sum())]
    big_meta = {**META, "config": {f"option_{i}": "x" * 40 for i in range(50)}}
    init_store(tmp_path, meta=big_meta)
    with ShardWriter(
        tmp_path, writer=0, seq=0, first_sequence=0, layers=[9], d_model=576, dtype="bfloat16", meta=big_meta
    ) as w:
        for T in lengths:
            w.append(token_ids=np.zeros(T, np.int32), token_types=np.ones(T, np.uint8),
                     acts={9: rng.standard_normal((T, 576), dtype=np.float32)}, source=(0, 0))  # fmt: skip
    info = summarize_store(tmp_path)
    assert info["tokens"] == 50_000
    assert info["bytes_per_token"] == pytest.approx(info["bytes"] / 50_000)
    assert 1.0 < info["overhead_ratio"] <= 1.02, info


def test_format_md_zarr_alone_snippet_runs(tmp_path, monkeypatch):
    """The 'Reading with zarr alone' example of store/FORMAT.md works on a store we wrote."""
    truth = write_store(tmp_path / "my_store", [[5, 6], [7]], layers=(4,), dtype="bfloat16")
    text = (REPO / "store" / "FORMAT.md").read_text()
    code = text.split("## Reading with zarr alone")[1].split("```python")[1].split("```")[0]
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(code, scope)
    np.testing.assert_array_equal(scope["ids"], truth[0]["ids"])
    np.testing.assert_array_equal(
        to_float32(scope["acts"], "bfloat16"),
        to_float32(float32_to_bf16_bits(truth[0]["acts"][4]), "bfloat16"),
    )


def test_store_pickles_without_copying_activations(tmp_path):
    import pickle

    write_store(tmp_path, [[300, 200]], d_model=64)
    s = open_store(tmp_path)
    s.sequence(1).acts(2)  # opens memmaps
    blob = pickle.dumps(s)
    assert len(blob) < 20_000
    s2 = pickle.loads(blob)
    np.testing.assert_array_equal(s2.sequence(1).acts(2), s.sequence(1).acts(2))
