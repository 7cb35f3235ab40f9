"""Training under real torchrun (2 gloo ranks on CPU): a 4-SAE sweep spread over the ranks equals the sweep in
one process bitwise; one SAE trained data-parallel equals it within float tolerance; a run stopped by SIGTERM
resumes across the ranks from its one checkpoint; only rank 0 writes into --out and prints."""

from __future__ import annotations

import dataclasses
import signal
import time
from pathlib import Path

import pytest
import torch

from fastsae.lm.distributed import Ranks
from fastsae.saes import load_sae
from fastsae.train.config import TrainConfig, TrainConfigError
from fastsae.train.metrics import TIMING_KEYS, read_metrics
from fastsae.train.parallel import Parallel
from fastsae.train.trainer import train_saes
from tests._torchrun import popen, torchrun
from tests.test_train_store import make_store

SMALL = dict(layer=3, batch_size=64, buffer_tokens=1024, chunk_tokens=64, holdout=0.1, log_every=5,
             eval_every=10, init_sample_tokens=512, lr=(1e-3,), progress=False)  # fmt: skip
SWEEP = dict(arch=("topk",), expansion=(2,), k=(2, 3, 4, 6), tokens=64 * 20)
NAMES = [f"topk-x2-k{k}" for k in SWEEP["k"]]


def _flags(kw: dict) -> list[str]:
    out = []
    for key, value in kw.items():
        flag = f"--{key.replace('_', '-')}"
        if isinstance(value, bool):
            out.append(flag if value else f"--no-{key.replace('_', '-')}")
        else:
            out += [flag, ",".join(map(str, value)) if isinstance(value, tuple) else str(value)]
    return out


def _args(store: Path, out: Path, **kw) -> list[str]:
    return ["train", "--store", str(store), "--out", str(out), "--device", "cpu", *_flags({**SMALL, **kw})]


def _same(a: Path, b: Path, names: list[str], exact: bool) -> None:
    for name in names:
        x, y = load_sae(a / name).state_dict(), load_sae(b / name).state_dict()
        for key, t in x.items():
            if exact:
                assert torch.equal(t, y[key]), (name, key)
            else:
                torch.testing.assert_close(t, y[key], rtol=1e-4, atol=1e-5, msg=f"{name} {key}")


def _lines(path: Path) -> list[dict]:
    """Every metrics line (train, features, held-out), timings left out."""
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_metrics(path)]


def test_the_mode_and_who_trains_what():
    cfg = TrainConfig(store="s", layer=3, out="o", batch_size=64)
    one = Parallel.plan(cfg, 3, Ranks())
    assert (one.local, one.sweep, one.data) == ([0, 1, 2], False, False)  # one process: every SAE, no comms
    two = [Parallel.plan(cfg, 5, Ranks(rank=r, world_size=2)) for r in (0, 1)]
    assert [p.mode for p in two] == ["sweep", "sweep"] and [p.local for p in two] == [[0, 1], [2, 3, 4]]
    data = Parallel.plan(cfg, 1, Ranks(rank=1, world_size=2))
    assert data.mode == "data" and data.local == [0]
    assert data.part == (1, 2) and one.part == two[1].part == (0, 1)  # the reader's part of each batch
    with pytest.raises(TrainConfigError, match="leaves a rank without one"):
        Parallel.plan(dataclasses.replace(cfg, parallel="sweep"), 1, Ranks(world_size=2))
    with pytest.raises(TrainConfigError, match="does not split evenly"):
        Parallel.plan(dataclasses.replace(cfg, batch_size=63), 1, Ranks(world_size=2))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("dist") / "store")


@pytest.fixture(scope="module")
def one_sweep(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "sweep"
    train_saes(TrainConfig(store=str(store), out=str(out), **SMALL, **SWEEP))
    return out


@pytest.mark.slow  # torchrun with 2 ranks, each importing torch
def test_a_sweep_over_two_ranks_equals_one_process_bitwise(store, one_sweep, tmp_path):
    out = tmp_path / "two"
    r = torchrun(2, *_args(store, out, **SWEEP, parallel="sweep"))
    assert r.returncode == 0, r.stderr[-4000:]
    assert "sweep-parallel over 2 ranks (2+2 SAEs)" in r.stderr
    assert r.stderr.count("saved ") == 4  # rank 0's lines only
    _same(one_sweep, out, NAMES, exact=True)
    for name in NAMES:  # rank 0 wrote every SAE's metrics, the same lines
        assert _lines(out / name / "metrics.jsonl") == _lines(one_sweep / name / "metrics.jsonl")


@pytest.mark.slow
def test_one_sae_data_parallel_equals_one_process_within_tolerance(store, tmp_path):
    kw = dict(arch=("topk",), expansion=(2,), k=(4,), tokens=64 * 20)
    train_saes(TrainConfig(store=str(store), out=str(tmp_path / "one"), **SMALL, **kw))
    r = torchrun(2, *_args(store, tmp_path / "two", **kw))  # auto: 1 SAE on 2 ranks is data-parallel
    assert r.returncode == 0, r.stderr[-4000:]
    assert "data-parallel over 2 ranks" in r.stderr
    _same(tmp_path / "one", tmp_path / "two", ["topk-x2-k4"], exact=False)


@pytest.mark.slow
def test_a_stopped_sweep_resumes_across_ranks(store, tmp_path):
    long = {**SWEEP, "tokens": 64 * 240}  # long enough to be stopped well before its end
    train_saes(TrainConfig(store=str(store), out=str(tmp_path / "one"), **SMALL, **long))
    out, args = (
        tmp_path / "two",
        _args(store, tmp_path / "two", **long, parallel="sweep", checkpoint_every=10),
    )
    proc = popen(2, *args)
    try:
        deadline = time.monotonic() + 300
        while not (out / "checkpoint.safetensors").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)  # torchrun passes it to both ranks: they stop at the same step
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0 and "training stopped" in err, err[-3000:]
    r = torchrun(2, *args)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "resuming" in r.stderr
    _same(tmp_path / "one", out, NAMES, exact=True)
