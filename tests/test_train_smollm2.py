"""The default JumpReLU recipe on REAL activations: SmolLM2-135M-Instruct layer 9, harvested in the test by the
harvest stage (a few thousand tokens of the shipped demo chats), then a short `train` run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastsae.train.config import TrainConfig, resolve
from fastsae.train.metrics import read_metrics
from fastsae.train.trainer import train_saes

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
LOCAL_GGUF = Path("/tmp/smol/SmolLM2-135M-Instruct.Q4_1.gguf")  # a developer copy; CI fetches it
GGUF_ENV = "FASTSAE_SMOLLM2_GGUF"


def test_default_jumprelu_recipe_reaches_a_sensible_l0_on_smollm2(tmp_path):
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    if not env.get(GGUF_ENV) and LOCAL_GGUF.is_file():
        env[GGUF_ENV] = str(LOCAL_GGUF)
    store = tmp_path / "store"
    proc = subprocess.run(
        [sys.executable, "-m", "fastsae", "harvest", "--out", str(store), "--layers", "9", "--limit", "24",
         "--threads", "2", "--no-progress"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]

    # The default recipe (jumprelu, λ 0.01, bandwidth 0.05, θ0 0.01 stored directly, lr 7e-5 → 7e-6, warm-up/decay
    # as fractions of the run, geometric-median b_dec, clip 1.0), shortened: the paper's batch of 128 for 400
    # steps (the schedule scales with them), expansion 8, inputs normalised to E‖x‖ = √d.
    cfg = TrainConfig(
        store=str(store), layer=9, out=str(tmp_path / "sae"), expansion=(8,), batch_size=128, tokens=128 * 400,
        normalize_activations=True, holdout=0.05, log_every=50, eval_every=200, checkpoint_every=0,
        init_sample_tokens=2048, buffer_tokens=8192, progress=False,
    )  # fmt: skip
    resolved = resolve(cfg)
    assert (resolved.jumprelu_bandwidth, resolved.jumprelu_init_threshold, resolved.jumprelu_log_threshold) == (
        0.05, 0.01, False,
    )  # fmt: skip
    (folder,) = train_saes(cfg)
    held = [r for r in read_metrics(folder / "metrics.jsonl") if r["split"] == "heldout"]
    first, last = held[0], held[-1]
    d_sae = 576 * 8
    assert last["l0"] < 0.25 * d_sae, last
    assert last["l0"] < first["l0"]
    assert last["explained_variance"] > 0, last
    assert last["mse"] < first["mse"]
    extra = json.loads((folder / "fastsae.json").read_text())["extra"]
    assert extra["store"]["d_model"] == 576 and extra["activation_scale"] > 0

    # Spliced into the real model, on conversations the store never saw: a trained SAE recovers part
    # of the CE loss that ablating the layer loses, and never more than all of it.
    chats = (ROOT / "harvest" / "data" / "demo_chats.jsonl").read_text().splitlines()[-8:]
    fresh = tmp_path / "fresh.jsonl"
    fresh.write_text("\n".join(chats) + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "fastsae", "eval", "--sae", str(folder), "--data", str(fresh),
         "--out", str(tmp_path / "eval"), "--no-progress", "--device", "cpu"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((tmp_path / "eval" / "results.json").read_text())["saes"][0]["metrics"]["all"]
    assert m["ce_clean"] < m["ce_sae"] < min(m["ce_zero_abl"], m["ce_mean_abl"]), m
    assert 0 < m["ce_loss_recovered_mean"] <= 1 and 0 < m["ce_loss_recovered_zero"] <= 1, m
