"""metrics.jsonl units and what is shown of them: every MSE in one unit (MSE_UNIT), on the terminal line and on
curves.png, with enough held-out points and tick labels that do not overlap."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest

from fastsae.train.config import TrainConfig, resolve
from fastsae.train.metrics import (
    MSE_UNIT,
    curves_figure,
    heldout_mse_in_train_units,
    heldout_summary,
    read_metrics,
)
from fastsae.train.trainer import train_saes
from tests.test_train_store import make_store

SMALL = dict(
    layer=3, arch=("topk",), k=(4,), expansion=(2,), batch_size=64, tokens=64 * 60, lr=(1e-3,),
    buffer_tokens=1024, chunk_tokens=64, holdout=0.1, log_every=10, checkpoint_every=0, progress=False,
    init_sample_tokens=512, normalize_activations=True,
)  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("metrics") / "store")


@pytest.fixture(scope="module")
def run(store, tmp_path_factory):
    """A normalised run at the default eval cadence: its SAE folder and its metrics lines."""
    (p,) = train_saes(TrainConfig(store=str(store), out=str(tmp_path_factory.mktemp("run") / "o"), **SMALL))
    return p, read_metrics(p / "metrics.jsonl")


def test_train_and_heldout_mse_share_one_unit_under_normalized_activations(run):
    p, recs = run
    scale = json.loads((p / "fastsae.json").read_text())["extra"]["activation_scale"]
    assert scale < 0.5  # the synthetic store's norms are well above √d: the units differ a lot
    held = [r for r in recs if r["split"] == "heldout"]
    train = {r["step"]: r for r in recs if r["split"] == "train"}
    assert all(r["activation_scale"] == pytest.approx(scale) for r in held)
    last = held[-1]
    assert last["d_sae"] == 2 * last["d_in"]
    assert heldout_mse_in_train_units(last) == pytest.approx(last["d_in"] * scale**2)
    for r in train.values():  # the train lines' mse is the objective's Σ_d term brought to the held-out unit
        assert r["mse"] == pytest.approx(r["mse_loss"] / heldout_mse_in_train_units(last))
    # same units: the held-out error is of the order of the training error (raw units would be 1/scale² off)
    assert 0.5 < last["mse"] / train[last["step"]]["mse"] < 2.0


def test_default_eval_cadence_gives_a_short_run_ten_heldout_points(run):
    _, recs = run
    steps = [r["step"] for r in recs if r["split"] == "heldout"]
    assert steps == sorted(set(steps)) and steps[0] == 0 and steps[-1] == 60 and len(steps) >= 10


def test_default_eval_cadence_is_a_tenth_of_the_run_up_to_1000_steps():
    base = TrainConfig(store="s", layer=0, out="o")
    assert resolve(dataclasses.replace(base, tokens=4096 * 50)).eval_every == 5
    assert resolve(dataclasses.replace(base, tokens=4096)).eval_every == 1
    assert resolve(dataclasses.replace(base, recipe="paper")).eval_every == 1000  # 320,000 steps
    assert resolve(dataclasses.replace(base, tokens=4096 * 50, eval_every=0)).eval_every == 0  # explicit wins


def test_heldout_summary_names_the_unit_and_l0_of_d_sae(run):
    _, recs = run
    last = [r for r in recs if r["split"] == "heldout"][-1]
    line = heldout_summary(last)
    assert MSE_UNIT in line and f"MSE {last['mse']:.4g}" in line
    assert f"explained variance {last['explained_variance']:.3f}" in line
    assert f"of {last['d_sae']:,} latents" in line and f"{last['sequences']:,} sequences" in line


def test_curves_plot_every_metric_in_the_one_unit(run):
    _, recs = run
    fig = curves_figure(recs, title="t")
    by_title = {ax.get_title(): ax for ax in fig.axes}
    assert {"MSE", "MSE_st (special tokens)", "explained variance", "training loss"} <= set(by_title)
    assert MSE_UNIT in fig._suptitle.get_text()
    lines = {ln.get_label(): ln for ln in by_title["MSE"].get_lines()}
    train = [r for r in recs if r["split"] == "train"]
    held = [r for r in recs if r["split"] == "heldout"]
    assert list(lines["train batches"].get_ydata()) == pytest.approx([r["mse"] for r in train])
    assert list(lines["held-out"].get_ydata()) == pytest.approx([r["mse"] for r in held])
    (ev,) = by_title["explained variance"].get_lines()
    assert list(ev.get_ydata()) == pytest.approx([r["explained_variance"] for r in held])


def test_curves_of_lines_without_a_train_mse_convert_mse_loss():
    held = {"split": "heldout", "step": 0, "tokens": 0, "mse": 2.0, "d_in": 4, "activation_scale": 0.5}
    train = {"split": "train", "step": 1, "tokens": 8, "loss": 3.0, "mse_loss": 2.0, "l0": 1.0, "dead_frac": 0}  # fmt: skip
    fig = curves_figure([held, train])
    ax = next(ax for ax in fig.axes if ax.get_title() == "MSE")
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert list(lines["train batches"].get_ydata()) == [2.0]  # 2.0 / (4 · 0.5²)


def _records(lo: float, hi: float, n: int = 40) -> list[dict]:
    """Metrics lines whose losses and MSEs fall from hi to lo."""
    recs = []
    for i in range(n):
        v = hi * (lo / hi) ** (i / (n - 1))
        recs.append({"split": "train", "step": i, "tokens": 4096 * i, "loss": 3 * v, "mse": v, "mse_loss": v,
                     "l0": 60 - i / 10, "dead_frac": 0.01 * i / n})  # fmt: skip
        if i % 4 == 0 or i == n - 1:
            recs.append({"split": "heldout", "step": i, "tokens": 4096 * i, "mse": 1.1 * v, "mse_st": 0.2 * v,
                         "explained_variance": 1 - v / hi, "l0": 60.0, "dead_frac": 0.0, "d_in": 576,
                         "d_sae": 4608, "activation_scale": 0.2, "sequences": 55})  # fmt: skip
    return recs


@pytest.mark.parametrize("lo, hi", [(2.4, 4.8), (1.0, 30.0), (0.3, 250.0), (1e-3, 40.0), (5.0, 5.2)])
def test_curves_tick_labels_do_not_overlap(lo, hi):
    fig = curves_figure(_records(lo, hi), title="x")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            a, b = sorted(axis.get_view_interval())
            boxes = [
                t.label1.get_window_extent(renderer)
                for t in axis.get_major_ticks() + axis.get_minor_ticks()
                if t.label1.get_visible() and t.label1.get_text() and a <= t.get_loc() <= b
            ]
            assert len(boxes) >= 2, (ax.get_title(), lo, hi)
            for p, q in itertools.combinations(boxes, 2):
                assert not p.overlaps(q), (ax.get_title(), axis.axis_name, lo, hi)


def test_heldout_mse_factor_of_old_lines_without_a_scale():
    assert heldout_mse_in_train_units({"d_in": 16, "mse": 1.0}) == 16
