"""Store round trip, zero-copy reads, zarr-alone reads, atomic commit, concurrency, identity checks, overhead."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import zarr

from fastsae.store import (
    SCHEMA_VERSION,
    ShardWriter,
    StoreCorruptError,
    StoreError,
    StoreMismatchError,
    StoreNotFoundError,
    TokenType,
    clean_partial,
    init_store,
    open_store,
    summarize_store,
    to_float32,
    verify_store,
)
from fastsae.store.dtypes import float32_to_bf16_bits
from fastsae.store.errors import StoreExistsError, StoreWriteError

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


def test_abandoned_writer_and_clean_partial(tmp_path, real_fsync):
    write_store(tmp_path, [[5, 6]])
    w = ShardWriter(tmp_path, writer=1, seq=0, first_sequence=2, layers=[2, 5], d_model=24, meta=META)
    w.append(
        token_ids=np.arange(3),
        token_types=np.ones(3),
        acts={2: np.ones((3, 24)), 5: np.ones((3, 24))},
        source=(0, 0),
    )
    del w  # a writer that dies before commit
    s = open_store(tmp_path)
    assert s.num_sequences == 2 and [sh.name for sh in s.shards] == ["shard-00000-000000.zarr"]
    report = verify_store(tmp_path)
    assert report["warnings"] and ".partial-shard-00001-000000.zarr" in report["warnings"][0]
    removed = clean_partial(tmp_path)
    assert [p.name for p in removed] == [".partial-shard-00001-000000.zarr"]
    assert not [w for w in verify_store(tmp_path)["warnings"] if "partial" in w]


def test_kill_9_mid_write_leaves_only_partial(tmp_path):
    write_store(tmp_path, [[5]])
    script = textwrap.dedent(f"""
        import os, signal, numpy as np
        from fastsae.store import ShardWriter
        w = ShardWriter({str(tmp_path)!r}, writer=7, seq=0, first_sequence=1, layers=[2, 5], d_model=24)
        for i in range(5):
            w.append(token_ids=np.arange(9), token_types=np.ones(9), acts={{2: np.ones((9, 24)), 5: np.ones((9, 24))}},
                     source=(0, i))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert open_store(tmp_path).num_sequences == 1
    assert [p.name for p in clean_partial(tmp_path)] == [".partial-shard-00007-000000.zarr"]
    assert sorted(os.listdir(tmp_path)) == ["shard-00000-000000.zarr", "store.json"]


def test_context_manager_aborts_on_exception(tmp_path):
    with (
        pytest.raises(RuntimeError),
        ShardWriter(tmp_path, writer=0, seq=0, first_sequence=0, layers=[0], d_model=4) as w,
    ):
        w.append(token_ids=np.arange(2), token_types=np.ones(2), acts={0: np.ones((2, 4))}, source=(0, 0))
        raise RuntimeError("boom")
    assert sorted(os.listdir(tmp_path)) == ["store.json"]


def test_two_writers_one_directory(tmp_path, real_fsync):
    init_store(tmp_path, meta=META)
    kw = dict(layers=[1], d_model=8, meta=META)
    a = ShardWriter(tmp_path, writer=0, seq=0, first_sequence=0, **kw)
    b = ShardWriter(tmp_path, writer=1, seq=0, first_sequence=4, **kw)
    for i in range(4):  # interleaved appends
        for w, base in ((a, 0), (b, 4)):
            T = 3 + i
            w.append(token_ids=np.full(T, base + i), token_types=np.ones(T), acts={1: np.full((T, 8), base + i, np.float32)},
                     source=(0, base + i))  # fmt: skip
    b.commit()
    with pytest.raises(StoreCorruptError, match="missing"):
        open_store(tmp_path)  # sequences 0..3 not committed yet
    a.commit()
    s = open_store(tmp_path)
    assert [sh.name for sh in s.shards] == ["shard-00000-000000.zarr", "shard-00001-000000.zarr"]
    for i in range(8):
        q = s.sequence(i)
        assert q.source == (0, i) and (q.token_ids == i).all() and (q.acts(1) == i).all()
    with pytest.raises(StoreExistsError):
        ShardWriter(tmp_path, writer=1, seq=0, first_sequence=8, **kw)


def test_overlapping_shards_are_detected(tmp_path):
    write_store(tmp_path, [[3, 3]], writer=0)
    write_store(tmp_path, [[3, 3]], writer=1, first_sequence=1)
    with pytest.raises(
        StoreCorruptError, match="shard-00000-000000.zarr and shard-00001-000000.zarr overlap"
    ):
        open_store(tmp_path)


def test_init_store_identity(tmp_path):
    stored = init_store(tmp_path, meta=META)
    assert stored["identity"] == META["identity"] and stored["schema_version"] == SCHEMA_VERSION
    assert init_store(tmp_path, meta={**META, "note": "other non-identity meta is fine"})["data"] == ["demo"]
    other = {"identity": {**META["identity"], "revision": "r1", "extra": 1}}
    with pytest.raises(StoreMismatchError) as e:
        init_store(tmp_path, meta=other)
    assert (
        e.value.keys == ["extra", "revision"]
        and "revision" in str(e.value)
        and isinstance(e.value, ValueError)
    )
    with pytest.raises(StoreMismatchError):
        ShardWriter(tmp_path, writer=0, seq=0, first_sequence=0, layers=[0], d_model=4, meta=other)


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


def test_writer_rejects_bad_input(tmp_path):
    w = ShardWriter(tmp_path, writer=0, seq=0, first_sequence=0, layers=[0], d_model=4, dtype="bfloat16")
    ok = dict(token_ids=np.arange(2), token_types=np.ones(2), source=(0, 0))
    bad_acts = [np.full((2, 4), np.nan), np.full((2, 4), np.inf), np.ones((2, 5)), np.ones((2, 4), np.int32)]
    for acts in bad_acts:
        with pytest.raises(StoreWriteError):
            w.append(acts={0: acts}, **ok)
    with pytest.raises(StoreWriteError, match="layers"):
        w.append(acts={1: np.ones((2, 4))}, **ok)
    with pytest.raises(StoreWriteError, match="token_types"):
        w.append(token_ids=np.arange(2), token_types=[0, 9], acts={0: np.ones((2, 4))}, source=(0, 0))
    with pytest.raises(StoreWriteError, match="token_ids"):
        w.append(
            token_ids=np.array([0.5, 1.0]), token_types=np.ones(2), acts={0: np.ones((2, 4))}, source=(0, 0)
        )
    with pytest.raises(StoreWriteError, match="non-negative"):
        w.append(acts={0: np.ones((2, 4))}, **{**ok, "source": (-1, 0)})
    with pytest.raises(StoreWriteError, match="nothing to commit"):
        w.commit()
    assert not (tmp_path / "shard-00000-000000.zarr").exists()


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


def test_two_processes_fill_one_directory_concurrently(tmp_path):
    """Two OS processes race on init_store and write interleaved shards into one directory."""
    script = textwrap.dedent("""
        import sys, numpy as np
        from fastsae.store import ShardWriter, init_store
        root, writer = sys.argv[1], int(sys.argv[2])
        meta = init_store(root, meta={"identity": {"model": "m"}, "by": writer})
        for seq in range(3):
            first = 2 * (2 * seq + writer)  # writers alternate blocks of 2 sequences
            with ShardWriter(root, writer=writer, seq=seq, first_sequence=first, layers=[0], d_model=16, meta=meta) as w:
                for k in range(2):
                    T = 5 + first + k
                    w.append(token_ids=np.full(T, first + k), token_types=np.ones(T),
                             acts={0: np.full((T, 16), first + k, np.float32)}, source=(writer, first + k))
    """)
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(w)], cwd=REPO) for w in (0, 1)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    s = open_store(tmp_path)
    assert s.num_sequences == 12 and len(s.shards) == 6 and s.meta["by"] in (0, 1)
    for i in range(12):
        q = s.sequence(i)
        assert len(q) == 5 + i and (q.acts(0) == i).all() and q.source[1] == i
    assert not [w for w in verify_store(tmp_path)["warnings"] if "partial" in w]


def test_failed_write_leaves_no_partial(tmp_path, monkeypatch):
    from fastsae.store.writer import ShardWriter as SW

    with pytest.raises(OSError, match="disk full"):
        with SW(tmp_path, writer=0, seq=0, first_sequence=0, layers=[0], d_model=4) as w:
            w.append(token_ids=np.arange(2), token_types=np.ones(2), acts={0: np.ones((2, 4))}, source=(0, 0))

            def fail(*a, **k):
                raise OSError("disk full")

            monkeypatch.setattr(w, "_write_rows", fail)
            try:
                w.append(
                    token_ids=np.arange(2), token_types=np.ones(2), acts={0: np.ones((2, 4))}, source=(0, 1)
                )
            finally:
                with pytest.raises(StoreWriteError, match="failed"):
                    w.commit()
    assert sorted(os.listdir(tmp_path)) == ["store.json"]
