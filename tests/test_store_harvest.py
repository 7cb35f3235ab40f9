"""The store through real `fastsae harvest` runs: two writer processes, one started while the other has a shard
open, give a store `fastsae verify` passes and that equals a one-writer store; a harvest records its totals,
so a lost shard or an unfinished writer is named by verify, inspect and open_store."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fastsae import store as fstore
from fastsae.cli import app
from fastsae.harvest.runner import run_harvest
from fastsae.store import StoreCorruptError, open_store
from tests.test_harvest_store import cfg_for, env, write_chats  # noqa: F401  (module fixture)
from tests.test_store import to_schema_1

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _harvest_args(env, out: Path, data: Path, **flags) -> list[str]:  # noqa: F811
    args = ["harvest", "--out", str(out), "--model", str(env["models"]["llama"]), "--data", str(data),
            "--layers", "1,2", "--dtype", "float32", "--batch-tokens", "256", "--sort-window", "8",
            "--device", "cpu", "--no-progress"]  # fmt: skip
    return args + [f"--{k.replace('_', '-')}={v}" for k, v in flags.items()]


def _wait_for(predicate, timeout: float = 180.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


@pytest.fixture(scope="module")
def many_chats(env):  # noqa: F811
    return write_chats(env["root"] / "many.jsonl", n=96, seed=3)


@pytest.mark.slow  # 2 harvest processes per case, each importing torch
@pytest.mark.parametrize("stop", ["partial_created", "first_rows_written", "no_stop"])
def test_harvest_writer_started_while_another_has_a_shard_open(env, many_chats, tmp_path, stop):  # noqa: F811
    ref = cfg_for(env, tmp_path / "one", data=(str(many_chats),), batch_tokens=256, sort_window=8)
    run_harvest(ref)
    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "fastsae"]
    w0 = subprocess.Popen([*cmd, *_harvest_args(env, two, many_chats, writer=0, num_writers=2)], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    partial = two / ".partial-shard-00000-000000.zarr"
    acts = partial / "acts" / "layer_1" / "c" / "0" / "0"
    try:
        _wait_for(partial.is_dir, what="writer 0's first partial shard")
        if stop == "first_rows_written":
            _wait_for(lambda: acts.exists() and acts.stat().st_size > 0, what="rows in writer 0's shard")
        if stop != "no_stop":
            os.kill(w0.pid, signal.SIGSTOP)  # alive, holding its open shard, while writer 1 runs whole
        w1 = subprocess.run([*cmd, *_harvest_args(env, two, many_chats, writer=1, num_writers=2)], cwd=REPO,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
        assert w1.returncode == 0, w1.stderr[-3000:]
        if stop != "no_stop":
            assert partial.is_dir(), "writer 1 removed writer 0's live partial shard"
    finally:
        os.kill(w0.pid, signal.SIGCONT)
    _, err = w0.communicate(timeout=600)
    assert w0.returncode == 0, err[-3000:]
    r = runner.invoke(app, ["verify", str(two)])
    assert r.exit_code == 0 and "completeness: complete" in r.stdout, r.output
    a, b = open_store(ref.out, allow_incomplete=False), open_store(two, allow_incomplete=False)
    assert a.num_sequences == b.num_sequences == 96 and a.num_tokens == b.num_tokens
    assert {sh.name.split("-")[1] for sh in b.shards} == {"00000", "00001"}
    for i in range(a.num_sequences):
        x, y = a.sequence(i), b.sequence(i)
        np.testing.assert_array_equal(x.token_ids, y.token_ids)
        np.testing.assert_array_equal(x.token_types, y.token_types)
        np.testing.assert_allclose(x.acts(2), y.acts(2), atol=1e-4)  # other batches: float rounding only


@pytest.fixture(scope="module")
def harvested(env, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("complete") / "s"
    run_harvest(cfg_for(env, out, shard_tokens=600, sort_window=4))
    assert len(open_store(out).shards) >= 3
    return out


@pytest.fixture
def store(harvested, tmp_path):
    shutil.copytree(harvested, tmp_path / "s")
    return tmp_path / "s"


def test_finished_harvest_is_complete(store):
    r = runner.invoke(app, ["verify", str(store)])
    assert r.exit_code == 0 and "completeness: complete" in r.stdout, r.output
    r = runner.invoke(app, ["inspect", str(store)])
    assert r.exit_code == 0 and "complete:       complete (complete: 1 writer recorded" in r.stdout, r.output
    c = open_store(store, allow_incomplete=False).completeness
    assert c.ok and c.sequences == 24 and c.shards == len(open_store(store).shards)


def test_deleted_last_shard_is_named(store):
    last = open_store(store).shards[-1].name
    shutil.rmtree(store / last)
    for cmd in ("verify", "inspect"):
        r = runner.invoke(app, [cmd, str(store)])
        assert r.exit_code == 2, r.output
        assert f"shard {last} is missing" in r.stderr and "Traceback" not in r.output, r.output
    with pytest.raises(fstore.StoreIncompleteError, match=f"shard {last} is missing") as e:
        open_store(store, allow_incomplete=False)
    assert e.value.missing == [last]
    shorter = open_store(store)  # the default, and what --allow-incomplete asks for: the shorter store
    assert shorter.num_sequences < 24 and not shorter.completeness.ok and shorter.completeness.damaged


def test_deleted_middle_shard_is_named(store):
    middle = open_store(store).shards[1].name
    shutil.rmtree(store / middle)
    with pytest.raises(StoreCorruptError, match=f"shard {middle} is missing"):
        open_store(store, allow_incomplete=True)  # a gap: never readable
    r = runner.invoke(app, ["verify", str(store)])
    assert r.exit_code == 2 and f"shard {middle} is missing" in r.stderr.splitlines()[0], r.output


def test_stopped_harvest_is_named_until_rerun(env, tmp_path):  # noqa: F811
    cfg = cfg_for(env, tmp_path / "s", shard_tokens=600)

    def stop(index: int) -> None:
        if index == 15:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_harvest(cfg, on_sequence_stored=stop)
    r = runner.invoke(app, ["verify", str(cfg.out)])
    assert r.exit_code == 2 and "writer 0 of 1 has not finished" in r.stderr, r.output
    r = runner.invoke(app, ["inspect", str(cfg.out)])  # a store being written is reported, not refused
    assert r.exit_code == 0 and "complete:       incomplete" in r.stdout, r.output
    with pytest.raises(fstore.StoreIncompleteError, match="writer 0 of 1 has not finished") as e:
        open_store(cfg.out, allow_incomplete=False)
    assert e.value.unfinished == [0]
    run_harvest(cfg)
    assert open_store(cfg.out, allow_incomplete=False).num_sequences == 24


def test_each_writer_records_its_totals(env, tmp_path):  # noqa: F811
    cfg = cfg_for(env, tmp_path / "s", num_writers=2, writer=1)
    run_harvest(cfg)
    c = fstore.store_completeness(cfg.out)
    assert c.state == "incomplete" and c.unfinished == (0,) and "writer 0 of 2 has not started" in c.message
    run_harvest(dataclasses.replace(cfg, writer=0))
    c = fstore.store_completeness(cfg.out)
    assert c.ok and c.num_writers == 2 and c.sequences == 24
    fstore.begin_writer(
        cfg.out, writer=0, num_writers=2
    )  # a rerun of writer 0 has started: being written again
    assert fstore.store_completeness(cfg.out).unfinished == (0,)


def test_schema_1_store_has_unknown_completeness_and_still_reads(store):
    to_schema_1(store)
    s = open_store(store, allow_incomplete=False)
    assert s.completeness.state == "unknown" and s.num_sequences == 24
    r = runner.invoke(app, ["verify", str(store)])
    assert r.exit_code == 0 and "completeness: unknown" in r.stdout, r.output
    assert "completeness unknown" in r.stderr and "before schema 2" in r.stderr
    r = runner.invoke(app, ["inspect", str(store)])
    assert r.exit_code == 0 and "complete:       unknown" in r.stdout, r.output
