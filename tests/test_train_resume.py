"""A training run stopped from outside resumes to the run it would have been. Kill -9 after a checkpoint:
rerunning the same command resumes and ends with the same weights (and metrics) as an uninterrupted run.
SIGTERM or SIGINT: the run checkpoints the step it is at and exits 143 or 130; the rerun redoes no step."""

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
from fastsae.train.checkpoint import load_checkpoint
from fastsae.train.config import TrainConfig
from fastsae.train.metrics import TIMING_KEYS, read_metrics
from fastsae.train.trainer import train_saes
from tests.test_train_checks import complete_store

ROOT = Path(__file__).resolve().parents[1]
SAES = ("jumprelu-x2-sc0.01", "topk-x2-k4")
STEPS = 60

# The entry point: the real CLI, with each step slowed down so that the kill lands mid-run, and (STEP_LOG) each
# step it trains appended to a file.
ENTRY = """
import os, sys, time, torch
torch.set_num_threads(1)
delay = float(os.environ.get("STEP_DELAY", "0"))
log = os.environ.get("STEP_LOG")
if delay or log:
    import fastsae.train.trainer as t
    real = t.SweepTrainer.train_step
    def slow(self, x):
        time.sleep(delay)
        if log:
            with open(log, "a") as f:
                f.write(f"{self.step}\\n")
        return real(self, x)
    t.SweepTrainer.train_step = slow
if os.environ.get("SIGNAL_LOG"):  # a file appears once the stop handler has run
    import fastsae.train.interrupt as i
    handle = i.StopSignals._handle
    def noted(self, signum, frame):
        handle(self, signum, frame)
        open(os.environ["SIGNAL_LOG"], "w").close()
    i.StopSignals._handle = noted
from fastsae.cli import app
app(sys.argv[1:], prog_name="fastsae")
"""


def cli_args(store: Path, out: Path) -> list[str]:
    return [
        "train", "--store", str(store), "--layer", "3", "--out", str(out), "--arch", "jumprelu,topk",
        "--expansion", "2", "--k", "4", "--tokens", str(64 * STEPS), "--batch-size", "64", "--lr", "1e-3",
        "--buffer-tokens", "1024", "--chunk-tokens", "64", "--holdout", "0.1", "--log-every", "5",
        "--eval-every", "20", "--checkpoint-every", "10", "--init-sample-tokens", "512", "--no-progress",
    ]  # fmt: skip


def reference_config(store: Path, out: Path) -> TrainConfig:
    """cli_args as a config: the uninterrupted run."""
    return TrainConfig(
        store=str(store), layer=3, out=str(out), arch=("jumprelu", "topk"), expansion=(2,), k=(4,),
        tokens=64 * STEPS, batch_size=64, lr=(1e-3,), buffer_tokens=1024, chunk_tokens=64, holdout=0.1, log_every=5,
        eval_every=20, checkpoint_every=10, init_sample_tokens=512, progress=False,
    )  # fmt: skip


def run_entry(args, *, delay=0.0, step_log: Path | None = None, signal_log: Path | None = None, **kw):
    env = {**os.environ, "STEP_DELAY": str(delay), "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT)}
    if step_log is not None:
        env["STEP_LOG"] = str(step_log)
    if signal_log is not None:
        env["SIGNAL_LOG"] = str(signal_log)
    return subprocess.Popen([sys.executable, "-c", ENTRY, *args], cwd=ROOT, env=env, **kw)


def steps_in(log: Path) -> list[int]:
    return [int(x) for x in log.read_text().split()] if log.exists() else []


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return complete_store(tmp_path_factory.mktemp("resume") / "store")


@pytest.fixture(scope="module")
def reference(store, tmp_path_factory):
    """The uninterrupted run, in this process, from the same flags."""
    out = tmp_path_factory.mktemp("reference") / "ref"
    train_saes(reference_config(store, out))
    return out


def assert_same_run(out: Path, ref: Path) -> None:
    """Same weights and the same metrics lines (timings aside) as the reference run."""
    for name in SAES:
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


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted(store, reference, tmp_path):
    out = tmp_path / "out"
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
    assert_same_run(out, reference)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_checkpoints_the_step_and_the_rerun_redoes_nothing(store, reference, tmp_path, sig):
    out, log = tmp_path / "out", tmp_path / "steps"
    victim = run_entry(cli_args(store, out), delay=0.1, step_log=log, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    # between two periodic checkpoints (10, 20) and two log steps: the signal's checkpoint is a step of its own
    while len(steps_in(log)) < 13 and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.02)
    assert victim.poll() is None, victim.communicate()[1][-2000:]
    os.kill(victim.pid, sig)
    _, err = victim.communicate(timeout=120)
    assert victim.returncode == 128 + sig, err[-2000:]
    assert "Traceback" not in err and "error:" not in err and "Aborted" not in err, err
    done = steps_in(log)
    assert done == list(range(len(done))) and 13 <= len(done) < STEPS
    stop = len(done)
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"{sig.name}: training stopped, checkpoint of step {stop} of {STEPS} written"), (
        line
    )
    assert load_checkpoint(out / "checkpoint.safetensors")["step"] == stop
    assert not json.loads((out / "run.json").read_text())["complete"]

    log.unlink()
    rerun = run_entry(cli_args(store, out), step_log=log, stderr=subprocess.PIPE, text=True)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err[-2000:]
    assert f"resuming {out} from step {stop} of {STEPS}" in err
    assert steps_in(log) == list(range(stop, STEPS))  # no step trained twice, none skipped
    assert not (out / "checkpoint.safetensors").exists()
    assert_same_run(out, reference)


@pytest.mark.slow
def test_a_second_signal_stops_at_once(store, tmp_path):
    # a user who does not want to wait for the checkpoint: the second SIGINT is a plain Ctrl-C (130, no checkpoint
    # of the step it lands on; the periodic ones stay)
    out, log, noted = tmp_path / "out", tmp_path / "steps", tmp_path / "signalled"
    victim = run_entry(
        cli_args(store, out), delay=2.0, step_log=log, signal_log=noted, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while len(steps_in(log)) < 2 and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.02)
    time.sleep(0.5)  # into the next step's 2 s sleep (a step is logged after its sleep, before its work)
    os.kill(victim.pid, signal.SIGINT)
    # the second only once the first was handled: two sent before Python runs its handler count as one
    while not noted.exists() and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.01)
    os.kill(victim.pid, signal.SIGINT)
    _, err = victim.communicate(timeout=120)
    assert victim.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "error:" not in err
    assert not (out / "checkpoint.safetensors").exists()  # before the first periodic checkpoint (step 10)
