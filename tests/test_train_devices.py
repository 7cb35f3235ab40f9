"""Training on each device: an in-process crash and rerun resume to the same weights (CPU always, CUDA when there
is one), and a CUDA sweep of every architecture agrees with the same sweep on CPU (GPU only)."""

from __future__ import annotations

import math

import pytest
import torch

import fastsae.train.trainer as trainer_mod
from fastsae.saes import load_sae
from fastsae.train.config import TrainConfig
from fastsae.train.metrics import read_metrics
from fastsae.train.trainer import train_saes
from tests.test_train_store import make_store
from tests.test_train_sweep import SMALL as SWEEP_SMALL

needs_cuda = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]
ARCHS = dict(arch=("jumprelu", "standard", "topk", "batchtopk"), expansion=(2,), k=(4,))
# the sweep tests' small run, with a checkpoint (step 6) to resume from and metrics lines on both sides of it
SMALL = {**SWEEP_SMALL, "tokens": 64 * 16, "log_every": 4, "eval_every": 8, "checkpoint_every": 6}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("devices") / "store")


def cfg(store, out, **kw) -> TrainConfig:
    return TrainConfig(store=str(store), out=str(out), **{**SMALL, **ARCHS, **kw})


class Crash(Exception):
    pass


@pytest.mark.parametrize("device", DEVICES)
def test_crash_and_rerun_resume_to_the_weights_of_an_uninterrupted_run(store, tmp_path, monkeypatch, device):
    ref = train_saes(cfg(store, tmp_path / "ref", device=device))
    real = trainer_mod.SweepTrainer.train_step

    def crashing(self, x):
        if self.step == 9:  # after the checkpoint of step 6, before the one of step 12
            raise Crash
        return real(self, x)

    monkeypatch.setattr(trainer_mod.SweepTrainer, "train_step", crashing)
    with pytest.raises(Crash):
        train_saes(cfg(store, tmp_path / "out", device=device))
    steps = []

    def counting(self, x):
        steps.append(self.step)
        return real(self, x)

    monkeypatch.setattr(trainer_mod.SweepTrainer, "train_step", counting)
    out = train_saes(cfg(store, tmp_path / "out", device=device))
    assert steps == list(range(6, 16))  # resumed from the checkpoint of step 6, not from scratch
    assert [p.name for p in out] == [p.name for p in ref]
    for a, b in zip(ref, out, strict=True):
        sa, sb = load_sae(a).state_dict(), load_sae(b).state_dict()
        for name, t in sa.items():
            torch.testing.assert_close(sb[name], t, rtol=1e-5, atol=1e-6, msg=f"{a.name} {name}")
        # the lines written after the checkpoint were dropped and written again, once: the same lines as the reference
        lines = [(r["split"], r["step"]) for r in read_metrics(b / "metrics.jsonl")]
        assert lines == [(r["split"], r["step"]) for r in read_metrics(a / "metrics.jsonl")]
        assert len(lines) == len(set(lines))


@pytest.mark.parametrize("_", [pytest.param(None, marks=needs_cuda)])
def test_cuda_sweep_agrees_with_the_cpu_sweep(store, tmp_path, _):
    """Same seed, same batches: every architecture trained on CUDA (Triton kernels, TF32 matmuls) ends near the
    CPU run (torch path, exact fp32): held-out MSE and L0 within 10%, and it learned."""
    gpu = train_saes(cfg(store, tmp_path / "cuda", device="cuda"))
    cpu = train_saes(cfg(store, tmp_path / "cpu", device="cpu"))
    for g, c in zip(gpu, cpu, strict=True):
        hg = [r for r in read_metrics(g / "metrics.jsonl") if r["split"] == "heldout"]
        hc = [r for r in read_metrics(c / "metrics.jsonl") if r["split"] == "heldout"]
        assert hg[-1]["mse"] < hg[0]["mse"], g.name
        for key in ("mse", "l0"):
            assert math.isfinite(hg[-1][key]), (g.name, key)
            assert math.isclose(hg[-1][key], hc[-1][key], rel_tol=0.1), (
                g.name,
                key,
                hg[-1][key],
                hc[-1][key],
            )
        sae = load_sae(g)  # loads on CPU whatever it was trained on
        assert sae.W_enc.device.type == "cpu"
