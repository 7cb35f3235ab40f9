"""metrics.jsonl units: held-out lines can be put on the same scale as the training mse_loss (curves.png)."""

from __future__ import annotations

import json

import pytest

from fastsae.train.config import TrainConfig
from fastsae.train.metrics import heldout_mse_in_train_units, read_metrics
from fastsae.train.trainer import train_saes
from tests.test_train_store import make_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("metrics") / "store")


def test_heldout_mse_is_comparable_with_training_mse_under_normalized_activations(store, tmp_path):
    cfg = TrainConfig(
        store=str(store), layer=3, out=str(tmp_path / "o"), arch=("topk",), k=(4,), expansion=(2,),
        batch_size=64, tokens=64 * 60, lr=(1e-3,), buffer_tokens=1024, chunk_tokens=64, holdout=0.1,
        log_every=10, eval_every=30, checkpoint_every=0, progress=False, init_sample_tokens=512,
        normalize_activations=True,
    )  # fmt: skip
    (p,) = train_saes(cfg)
    scale = json.loads((p / "fastsae.json").read_text())["extra"]["activation_scale"]
    assert scale < 0.5  # the synthetic store's norms are well above √d: the units differ a lot
    recs = read_metrics(p / "metrics.jsonl")
    held = [r for r in recs if r["split"] == "heldout"]
    train = {r["step"]: r for r in recs if r["split"] == "train"}
    assert all(r["activation_scale"] == pytest.approx(scale) for r in held)
    last = held[-1]
    assert heldout_mse_in_train_units(last) == pytest.approx(last["d_in"] * scale**2)
    # same units: the held-out error is of the order of the training error (raw units would be 1/scale² off)
    ratio = last["mse"] * heldout_mse_in_train_units(last) / train[last["step"]]["mse_loss"]
    assert 0.5 < ratio < 2.0


def test_heldout_mse_factor_of_old_lines_without_a_scale():
    assert heldout_mse_in_train_units({"d_in": 16, "mse": 1.0}) == 16
