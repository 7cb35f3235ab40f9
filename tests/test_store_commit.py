"""Store writers: atomic commit, abandoned and killed writers, partial directories, concurrent writers and
processes, the identity check, bad input. Round trip and reads: tests/test_store.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fastsae.store import (
    SCHEMA_VERSION,
    ShardWriter,
    StoreCorruptError,
    StoreMismatchError,
    clean_partial,
    init_store,
    open_store,
    verify_store,
)
from fastsae.store.errors import StoreExistsError, StoreWriteError
from tests._synthetic_store import META, REPO, _no_fsync, real_fsync, write_store  # noqa: F401  (fixtures by name)


@pytest.mark.usefixtures("real_fsync")
def test_abandoned_writer_and_clean_partial(tmp_path):
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


@pytest.mark.usefixtures("real_fsync")
def test_two_writers_one_directory(tmp_path):
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
