"""Two writers never destroy each other's work: a writer that starts while another has a shard open leaves it
alone (real processes), commit refuses a shard that lost files, open_store refuses a shard lacking a file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fastsae.cli import app
from fastsae.store import ShardWriter, StoreCorruptError, clean_partial, open_store
from tests.test_store import _no_fsync, write_store  # noqa: F401  (autouse fixture)

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

# Writer `w` of `n` writes its slice of 16 deterministic sequences in shards of 4, as harvest does: it first
# removes leftovers (clean_partial), then fills shards. After `pause` appends it prints "paused" and waits
# for a line on stdin, so the test can start the other writer while this one has a shard open.
WRITER = textwrap.dedent("""
    import sys, numpy as np
    from fastsae.store import ShardWriter, clean_partial, init_store
    root, writer, n, pause = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    clean_partial(root)
    meta = init_store(root, meta={"identity": {"model": "m"}})
    lo, hi = writer * 16 // n, (writer + 1) * 16 // n
    appended = 0
    for seq, first in enumerate(range(lo, hi, 4)):
        with ShardWriter(root, writer=writer, seq=seq, first_sequence=first, layers=[0, 3], d_model=8,
                         dtype="bfloat16", meta=meta) as w:
            for i in range(first, min(first + 4, hi)):
                if appended == pause:
                    print("paused", flush=True)
                    sys.stdin.readline()
                T = 3 + i * 7 % 11
                rng = np.random.default_rng(i)
                w.append(token_ids=(np.arange(T) + 31 * i) % 500, token_types=np.full(T, 4), source=(0, i),
                         acts={L: rng.standard_normal((T, 8)).astype(np.float32) * (L + 1) for L in (0, 3)})
                appended += 1
""")


def _writer(root: Path, writer: int, n: int, pause: int = -1) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), str(writer), str(n), str(pause)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _finish(proc: subprocess.Popen) -> None:
    out, err = proc.communicate("go\n", timeout=120)
    assert proc.returncode == 0, err[-2000:]


def assert_same_sequences(a: Path, b: Path) -> None:
    sa, sb = open_store(a), open_store(b)
    assert (sa.num_sequences, sa.num_tokens) == (sb.num_sequences, sb.num_tokens)
    for i in range(sa.num_sequences):
        x, y = sa.sequence(i), sb.sequence(i)
        assert x.source == y.source
        np.testing.assert_array_equal(x.token_ids, y.token_ids)
        np.testing.assert_array_equal(x.token_types, y.token_types)
        for layer in sa.layers:
            np.testing.assert_array_equal(x.raw_acts(layer), y.raw_acts(layer))


@pytest.mark.parametrize("pause", [0, 2, 5])  # appends writer 0 has made: shard just opened, half full, 2nd
def test_writer_started_while_another_has_a_shard_open(tmp_path, pause):
    ref, two = tmp_path / "one", tmp_path / "two"
    _finish(_writer(ref, 0, 1))
    first = _writer(two, 0, 2, pause)
    assert first.stdout.readline().strip() == "paused", first.stderr.read()[-2000:]
    partial = two / f".partial-shard-00000-{pause // 4:06d}.zarr"
    assert partial.is_dir()
    _finish(_writer(two, 1, 2))  # starts (and cleans) while writer 0 is alive with its shard open
    assert partial.is_dir(), "the second writer removed a live writer's partial shard"
    _finish(first)
    r = runner.invoke(app, ["verify", str(two)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in two.iterdir() if p.name.startswith(".")) == []  # no partial, no lock left
    assert_same_sequences(ref, two)


def test_dead_writers_leftovers_are_removed(tmp_path):
    proc = _writer(tmp_path, 0, 2, pause=2)
    assert proc.stdout.readline().strip() == "paused"
    proc.kill()  # SIGKILL with a shard open: its lock goes with it
    proc.wait()
    assert [p.name for p in clean_partial(tmp_path)] == [".partial-shard-00000-000000.zarr"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.json"]


def test_same_writer_id_in_two_processes_is_refused(tmp_path, monkeypatch):
    from fastsae.store import StoreBusyError, locking  # (here: the test module imports before the fix too)

    proc = _writer(tmp_path, 0, 1, pause=1)
    assert proc.stdout.readline().strip() == "paused"
    monkeypatch.setattr(locking, "LOCK_WAIT_SECONDS", 0.2)
    try:
        with pytest.raises(StoreBusyError, match="writer 0 is in use by another live process"):
            ShardWriter(tmp_path, writer=0, seq=5, first_sequence=20, layers=[0, 3], d_model=8)
    finally:
        _finish(proc)


def test_commit_refuses_a_shard_that_lost_files(tmp_path):
    w = ShardWriter(tmp_path, writer=0, seq=0, first_sequence=0, layers=[1], d_model=4)
    w.append(token_ids=np.arange(3), token_types=np.ones(3), acts={1: np.ones((3, 4))}, source=(0, 0))
    shutil.rmtree(w.partial_path)  # what the old clean_partial of another writer did
    with pytest.raises(OSError, match="removed or replaced by another process"):
        w.commit()
    assert not (tmp_path / "shard-00000-000000.zarr").exists() and not w.partial_path.exists()
    w = ShardWriter(tmp_path, writer=0, seq=0, first_sequence=0, layers=[1], d_model=4)
    w.append(token_ids=np.arange(3), token_types=np.ones(3), acts={1: np.ones((3, 4))}, source=(0, 0))
    os.unlink(w.partial_path / "acts" / "layer_1" / "c" / "0" / "0")  # the file alone
    with pytest.raises(OSError, match="lost a file: acts/layer_1/c/0/0"):
        w.commit()
    assert sorted(os.listdir(tmp_path)) == ["store.json"]


@pytest.mark.parametrize("rel", ["acts/layer_2/c/0/0", "token_types/c/0", "offsets/zarr.json"])
def test_open_store_refuses_a_shard_lacking_a_file(tmp_path, rel):
    write_store(tmp_path, [[5, 6], [7]])
    os.unlink(tmp_path / "shard-00000-000001.zarr" / rel)
    with pytest.raises(StoreCorruptError, match=f"shard-00000-000001.zarr.* {rel.split('/')[0]}.*missing"):
        open_store(tmp_path)
    r = runner.invoke(app, ["inspect", str(tmp_path)])
    assert r.exit_code == 2 and "shard-00000-000001.zarr" in r.stderr and "missing" in r.stderr, r.output
