"""Flags of `fastsae train` that make no sense are refused in one line before anything is allocated or written,
and a run that diverges is stopped naming the step and the likely cause. Through the real CLI."""

from __future__ import annotations

import dataclasses
import resource

import pytest
import torch
from typer.testing import CliRunner

from fastsae.cli import app
from fastsae.train.config import TrainConfig
from fastsae.train.guards import DIVERGENCE_FACTOR
from fastsae.train.metrics import read_metrics
from fastsae.train.resources import memory_needed
from fastsae.train.run import plan_run
from tests.test_train_checks import base, complete_store, one_line_error

needs_cuda = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return complete_store(tmp_path_factory.mktemp("flags") / "store")


@pytest.fixture(scope="module")
def wide_store(tmp_path_factory):
    """d_in 576, as SmolLM2's residual stream: --expansion 100000 asks for 57.6M latents."""
    return complete_store(tmp_path_factory.mktemp("wide") / "store", d=576, sequences=16, seq_len=(20, 40))


def invoke(*args: str):
    return CliRunner().invoke(app, ["train", *args])


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--holdout", "0.99"], "--holdout must be in [0, 0.5], got 0.99"),
        (["--eval-tokens", "0"], "--eval-tokens must be ≥ 1, got 0"),
        (["--init-sample-tokens", "1"], "--init-sample-tokens 1 is too few"),
        (["--init-sample-tokens", "31"], "at least 2 × d_in = 32"),
        (["--buffer-tokens", "1"], "--buffer-tokens must be ≥ 2"),
        (["--device", "foo"], "device 'foo' is not a torch device"),
    ],
)
def test_nonsense_flags_are_refused_in_one_line(store, tmp_path, extra, needle):
    line = one_line_error(invoke(*base(store, tmp_path / "o", *extra)))
    assert needle in line, line
    assert not (tmp_path / "o").exists()


def test_the_bounds_stated_are_the_bounds_kept(store, tmp_path):
    # the smallest values the messages allow are accepted
    for extra in (["--holdout", "0.5"], ["--init-sample-tokens", "32"], ["--buffer-tokens", "2"], ["--eval-tokens", "1"]):  # fmt: skip
        r = invoke(*base(store, tmp_path / extra[0], *extra, "--tokens", "128"))
        assert r.exit_code == 0, (extra, r.stderr)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_one_line(store, tmp_path):
    line = one_line_error(invoke(*base(store, tmp_path / "o", "--device", "cuda")))
    assert "no CUDA device" in line and "--device cpu" in line
    assert not (tmp_path / "o").exists()


def test_an_sae_too_big_for_memory_is_refused_with_the_estimate(wide_store, tmp_path):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    line = one_line_error(invoke(*base(wide_store, tmp_path / "o", "--expansion", "100000", "--init-sample-tokens", "1152")))  # fmt: skip
    assert "d_sae 57,600,000" in line and "GB of memory on cpu" in line and "GB is available" in line, line
    assert "--expansion" in line
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    assert grown < 2**30  # refused before allocating: the weights alone would be 132 GB
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("_", [pytest.param(None, marks=needs_cuda)])
def test_an_sae_too_big_for_the_gpu_is_refused_with_its_free_memory(wide_store, tmp_path, _):
    args = base(wide_store, tmp_path / "o", "--expansion", "100000", "--init-sample-tokens", "1152", "--device", "cuda")  # fmt: skip
    line = one_line_error(invoke(*args))
    assert "GB of memory on cuda" in line and "GB is available" in line, line


def test_the_memory_estimate_grows_with_the_sweep(store, tmp_path):
    cfg = TrainConfig(
        store=str(store), layer=3, out=str(tmp_path / "o"), expansion=(2,), tokens=640, batch_size=64
    )
    one = plan_run(cfg)
    bigger = plan_run(dataclasses.replace(cfg, expansion=(2, 8)))
    wider = plan_run(dataclasses.replace(cfg, expansion=(8,), batch_size=128, tokens=1280))
    m = [memory_needed(p, workers=1, host=True) for p in (one, bigger, wider)]
    assert m[0] < m[1] and m[0] < m[2]
    # every SAE holds its weights, gradients and Adam's two moments at least: 16 bytes a parameter
    assert m[0] >= 16 * sum(p.numel() for p in _sae(one).parameters())


def _sae(plan):
    from fastsae.saes import SparseAutoencoder

    return SparseAutoencoder(plan.specs[0])


@pytest.mark.parametrize("arch", ["jumprelu", "topk"])
def test_a_diverging_run_is_stopped_naming_the_step_and_the_learning_rate(store, tmp_path, arch):
    out = tmp_path / "o"
    extra = ["--arch", arch, "--lr", "1e9", "--log-every", "5", "--checkpoint-every", "5", "--tokens", "6400"]
    line = one_line_error(
        invoke(*base(store, out, *extra, *(["--k", "4"] if arch == "topk" else []))), code=1
    )
    assert "training diverged at step" in line and "learning rate (--lr 1e+09" in line, line
    assert f"over {DIVERGENCE_FACTOR:,.0f} × its initial" in line
    step = int(line.split("diverged at step ")[1].split()[0])
    assert step < 5  # stopped at the first check, not trained on for the run's 100 steps
    assert not (out / "checkpoint.safetensors").exists()  # no checkpoint of a diverged state
    (sae_dir,) = [p for p in out.iterdir() if p.is_dir()]
    recs = read_metrics(sae_dir / "metrics.jsonl")
    assert recs and all(
        r["split"] == "heldout" and r["step"] == 0 for r in recs
    )  # the initial evaluation only


def test_a_sane_learning_rate_stays_far_from_the_bound(store, tmp_path):
    r = invoke(*base(store, tmp_path / "o", "--lr", "1e-2", "--tokens", "3200", "--log-every", "1"))
    assert r.exit_code == 0, r.stderr
    (sae_dir,) = [p for p in (tmp_path / "o").iterdir() if p.is_dir()]
    mse = [x["mse_loss"] for x in read_metrics(sae_dir / "metrics.jsonl") if x["split"] == "train"]
    assert max(mse) < 10 * mse[0]  # a learning run: its MSE never nears DIVERGENCE_FACTOR × the initial one
