"""Harvest under real torchrun (2 gloo ranks on CPU): each rank writes its own shards of one store that equals
a one-process harvest byte for byte, in sequence order; a rank killed mid-harvest loses nothing committed,
and a rerun resumes every rank."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from fastsae.harvest.config import HarvestConfig, HarvestConfigError
from fastsae.harvest.runner import _rank_config, run_harvest
from fastsae.harvest.slicing import slice_bounds
from fastsae.lm.distributed import Ranks
from fastsae.store import open_store
from tests._torchrun import popen, torchrun
from tests.test_harvest_store import env, write_chats  # noqa: F401  (module fixture)

FLAGS = dict(layers="1,2", dtype="float32", batch_tokens=256, sort_window=6, shard_tokens=600, threads=1)


def _args(env, out: Path, data: Path) -> list[str]:  # noqa: F811
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in FLAGS.items()]
    return ["harvest", "--out", str(out), "--model", str(env["models"]["llama"]), "--data", str(data),
            "--device", "cpu", "--no-progress", *flags]  # fmt: skip


def _one_process(env, out: Path, data: Path) -> Path:  # noqa: F811
    kw = {k: v for k, v in FLAGS.items() if k != "layers"}
    run_harvest(HarvestConfig(out=str(out), model=str(env["models"]["llama"]), data=(str(data),), layers=(1, 2),
                              device="cpu", progress=False, **kw))  # fmt: skip
    return out


def _arrays(path: Path) -> dict[str, bytes]:
    """Everything a sequence holds, concatenated in sequence order, as bytes."""
    s = open_store(path, allow_incomplete=False)
    seqs = [s.sequence(i) for i in range(s.num_sequences)]
    out = {name: b"".join(getattr(q, name).tobytes() for q in seqs) for name in ("token_ids", "token_types")}
    out["sources"] = json.dumps([list(map(int, q.source)) for q in seqs]).encode()
    for layer in s.layers:
        out[f"acts{layer}"] = b"".join(np.ascontiguousarray(q.acts(layer)).tobytes() for q in seqs)
    return out


@pytest.fixture(scope="module")
def chats(env):  # noqa: F811
    return write_chats(env["root"] / "dist.jsonl", n=80, seed=5)


@pytest.fixture(scope="module")
def reference(env, chats, tmp_path_factory):  # noqa: F811
    return _arrays(_one_process(env, tmp_path_factory.mktemp("one") / "s", chats))


def test_slices_are_whole_windows_balanced_by_tokens():
    cfg = HarvestConfig(out="x", sort_window=3)
    lengths = [10, 10, 10, 50, 50, 50, 5, 5, 5, 1]  # windows [0,3) [3,6) [6,9) [9,10)
    assert slice_bounds(lengths, 1, cfg, 10**9) == [(0, 10)]
    assert slice_bounds(lengths, 2, cfg, 10**9) == [(0, 3), (3, 10)]
    assert slice_bounds(lengths, 3, cfg, 10**9) == [(0, 3), (3, 6), (6, 10)]
    assert slice_bounds(lengths, 2, cfg, 25) == [(0, 4), (4, 10)]  # a window also closes at 25 tokens
    bounds = slice_bounds([3] * 4, 8, cfg, 10**9)  # fewer windows than writers: some harvest nothing
    assert bounds[0][0] == 0 and bounds[-1][1] == 4 and all(a <= b for a, b in bounds)
    assert all(bounds[i][1] == bounds[i + 1][0] for i in range(7))


def test_under_torchrun_each_rank_is_a_writer():
    cfg = HarvestConfig(out="x", progress=True)
    assert _rank_config(cfg, Ranks()) is cfg
    mine = _rank_config(cfg, Ranks(rank=1, world_size=3))
    assert (mine.writer, mine.num_writers, mine.progress) == (1, 3, False)  # rank 0 alone shows progress
    with pytest.raises(HarvestConfigError, match="under torchrun each rank is a writer"):
        _rank_config(dataclasses.replace(cfg, num_writers=2), Ranks(world_size=2))


@pytest.mark.slow  # torchrun with 2 ranks, each importing torch and transformers
def test_two_ranks_equal_one_process_byte_for_byte(env, chats, reference, tmp_path):  # noqa: F811
    out = tmp_path / "two"
    r = torchrun(2, *_args(env, out, chats))
    assert r.returncode == 0, r.stderr[-4000:]
    assert r.stdout.count("harvested") == 1 and "harvested 80 sequences" in r.stdout, (
        r.stdout
    )  # rank 0's line
    s = open_store(out, allow_incomplete=False)
    assert s.completeness.num_writers == 2
    assert {sh.name.split("-")[1] for sh in s.shards} == {"00000", "00001"}  # each rank its own shards
    assert _arrays(out) == reference
    assert (out / "skipped.jsonl").read_text().count("\n") == 2  # the whole stream's (written once, rank 0)


@pytest.mark.slow
def test_a_killed_rank_loses_nothing_committed_and_a_rerun_resumes_every_rank(
    env,  # noqa: F811
    chats,
    reference,
    tmp_path,
):
    out = tmp_path / "two"
    proc = popen(2, *_args(env, out, chats))
    try:
        deadline = time.monotonic() + 300
        while not (out / "shard-00001-000000.zarr").is_dir():  # rank 1 committed its first shard
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.005)
        record = json.loads((out / "writer-00001.json").read_text())
        assert record["state"] == "running"
        os.kill(record["pid"], signal.SIGKILL)
        proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    committed = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.zarr")}
    assert "shard-00001-000000.zarr" in committed
    r = torchrun(2, *_args(env, out, chats))
    assert r.returncode == 0, r.stderr[-4000:]
    assert "resumed after" in r.stdout
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.zarr")}
    assert {k: after[k] for k in committed} == committed  # nothing committed was redone
    assert _arrays(out) == reference


def test_num_writers_without_torchrun_equal_one_process(env, chats, reference, tmp_path):  # noqa: F811
    kw = {k: v for k, v in FLAGS.items() if k != "layers"}
    cfg = HarvestConfig(out=str(tmp_path / "w"), model=str(env["models"]["llama"]), data=(str(chats),),
                        layers=(1, 2), device="cpu", progress=False, num_writers=2, **kw)  # fmt: skip
    for w in (1, 0):
        run_harvest(dataclasses.replace(cfg, writer=w))
    assert _arrays(tmp_path / "w") == reference
