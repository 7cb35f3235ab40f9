"""Kill -9 a training run after a checkpoint; rerunning the same command resumes and ends with the
same weights (and metrics) as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fastsae.saes import load_sae
from fastsae.train.metrics import TIMING_KEYS, read_metrics
from tests.test_train_store import make_store

ROOT = Path(__file__).resolve().parents[1]

# The entry point: the real CLI, with each step slowed down so that the kill lands mid-run.
ENTRY = """
import os, sys, time, torch
torch.set_num_threads(1)
delay = float(os.environ.get("STEP_DELAY", "0"))
if delay:
    import fastsae.train.trainer as t
    real = t.SweepTrainer.train_step
    def slow(self, x):
        time.sleep(delay)
        return real(self, x)
    t.SweepTrainer.train_step = slow
from fastsae.cli import app
app(sys.argv[1:], prog_name="fastsae")
"""


def cli_args(store: Path, out: Path) -> list[str]:
    return [
        "train", "--store", str(store), "--layer", "3", "--out", str(out), "--arch", "jumprelu,topk",
        "--expansion", "2", "--k", "4", "--tokens", str(64 * 60), "--batch-size", "64", "--lr", "1e-3",
        "--buffer-tokens", "1024", "--chunk-tokens", "64", "--holdout", "0.1", "--log-every", "5",
        "--eval-every", "20", "--checkpoint-every", "10", "--init-sample-tokens", "512", "--no-progress",
    ]  # fmt: skip


def run_entry(args, *, delay=0.0, **kw):
    env = {**os.environ, "STEP_DELAY": str(delay), "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", ENTRY, *args], cwd=ROOT, env=env, **kw)


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted(tmp_path):
    store = make_store(tmp_path / "store")
    ref, out = tmp_path / "ref", tmp_path / "out"
    ckpt = out / "checkpoint.safetensors"

    victim = run_entry(cli_args(store, out), delay=0.1, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not ckpt.exists() and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.05)
    assert ckpt.exists(), "no checkpoint appeared"
    time.sleep(1.2)  # well past the checkpoint, before the end (60 steps x 0.1 s)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not json.loads((out / "run.json").read_text())["complete"]

    resumed = run_entry(cli_args(store, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resuming" in err and "from step 0 " not in err

    # the uninterrupted reference, in this process, from the same flags
    from fastsae.train.config import TrainConfig
    from fastsae.train.trainer import train_saes

    train_saes(TrainConfig(
        store=str(store), layer=3, out=str(ref), arch=("jumprelu", "topk"), expansion=(2,), k=(4,), tokens=64 * 60,
        batch_size=64, lr=(1e-3,), buffer_tokens=1024, chunk_tokens=64, holdout=0.1, log_every=5, eval_every=20,
        checkpoint_every=10, init_sample_tokens=512, progress=False,
    ))  # fmt: skip

    for name in ("jumprelu-x2-sc0.01", "topk-x2-k4"):
        a, b = load_sae(out / name), load_sae(ref / name)
        for key, t in a.state_dict().items():
            torch.testing.assert_close(t, b.state_dict()[key], rtol=1e-5, atol=1e-6, msg=f"{name}.{key}")
        got, want = read_metrics(out / name / "metrics.jsonl"), read_metrics(ref / name / "metrics.jsonl")
        assert [(r["split"], r["step"]) for r in got] == [(r["split"], r["step"]) for r in want]
        for g, w in zip(got, want, strict=True):
            assert g.keys() == w.keys()
            for key in g.keys() - set(TIMING_KEYS):
                if isinstance(w[key], (int, float)):
                    assert g[key] == pytest.approx(w[key], rel=1e-5, abs=1e-7), (name, g["step"], key)
                else:  # labels such as "split": approx() takes numbers only (pytest 9 refuses the rest)
                    assert g[key] == w[key], (name, g["step"], key)
