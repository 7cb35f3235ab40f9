"""End-to-end training on synthetic stores: sweeps, one read per batch, outputs, metrics, NaN detection."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch

import fastsae.train.trainer as trainer_mod
from fastsae.saes import HeldOut, heldout_metrics, load_sae
from fastsae.train.config import TrainConfig, TrainConfigError
from fastsae.train.metrics import TIMING_KEYS, read_metrics
from fastsae.train.trainer import NonFiniteError, train_saes
from tests.test_train_store import make_store

SMALL = dict(
    layer=3,
    batch_size=64,
    tokens=64 * 40,
    lr=(1e-3,),
    buffer_tokens=1024,
    chunk_tokens=64,
    holdout=0.1,
    log_every=10,
    eval_every=20,
    checkpoint_every=10,
    progress=False,
    init_sample_tokens=512,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("train") / "store")


def small_cfg(store, out, **kw) -> TrainConfig:
    return TrainConfig(store=str(store), out=str(out), **{**SMALL, **kw})


class CountingReaders:
    """Wraps make_reader: counts next() per reader it creates."""

    def __init__(self, monkeypatch, inject_nan_at: int | None = None):
        self.counts: list[list[int]] = []  # [batch_size, calls]
        original = trainer_mod.make_reader
        outer = self

        def make(plan, *, batch_size, device, **kw):
            reader = original(plan, batch_size=batch_size, device=device, **kw)
            entry = [batch_size, 0]
            outer.counts.append(entry)
            real_next = type(reader).__next__

            class Counted(type(reader)):
                def __next__(self):
                    x = real_next(self)
                    entry[1] += 1
                    if (
                        inject_nan_at is not None
                        and batch_size == plan.cfg.batch_size
                        and entry[1] == inject_nan_at + 1
                    ):
                        x = x.clone()
                        x[3, 2] = float("nan")
                    return x

            reader.__class__ = Counted
            return reader

        monkeypatch.setattr(trainer_mod, "make_reader", make)


def test_sweep_trains_every_combination_in_one_pass(store, tmp_path, monkeypatch):
    counting = CountingReaders(monkeypatch)
    cfg = small_cfg(
        store,
        tmp_path / "sweep",
        arch=("jumprelu", "standard", "topk"),
        expansion=(2, 4),
        sparsity_coef=(0.003, 0.01),
        k=(4,),
    )
    paths = train_saes(cfg)
    names = sorted(p.name for p in paths)
    assert names == sorted(
        [f"{a}-x{e}-sc{s}" for a in ("jumprelu", "standard") for e in (2, 4) for s in (0.003, 0.01)]
        + ["topk-x2-k4", "topk-x4-k4"]
    )
    # one read per step for all 10 SAEs (the other reader is the one-batch init sample)
    train_reads = [calls for bs, calls in counting.counts if bs == 64]
    assert train_reads == [40]
    run = json.loads((tmp_path / "sweep" / "run.json").read_text())
    assert run["complete"] and len(run["saes"]) == 10
    assert not (tmp_path / "sweep" / "checkpoint.safetensors").exists()
    for p in paths:
        sae = load_sae(p)
        assert sae.d_in == 16 and sae.d_sae in (32, 64)
        for f in ("cfg.json", "sae_weights.safetensors", "fastsae.json", "metrics.jsonl", "curves.png"):
            assert (p / f).is_file(), f
        extra = json.loads((p / "fastsae.json").read_text())["extra"]
        assert extra["config"]["arch"] == ["jumprelu", "standard", "topk"]
        assert extra["store"]["fingerprint"] and extra["store"]["path"] == str(store.resolve())
        recs = read_metrics(p / "metrics.jsonl")
        held = [r for r in recs if r["split"] == "heldout"]
        train = [r for r in recs if r["split"] == "train"]
        assert [r["step"] for r in held] == [0, 20, 40] and [r["step"] for r in train] == [10, 20, 30, 40]
        for key in ("mse", "mse_st", "log2_mse", "log2_mse_st", "explained_variance", "l0", "dead_frac"):
            assert math.isfinite(held[-1][key]), key
        assert math.isclose(held[-1]["log2_mse"], math.log2(held[-1]["mse"]))
        for key in ("loss", "mse_loss", "sparsity_loss", "l0", "lr", "dead_frac"):
            assert key in train[-1]
        assert all(0 <= r["data_wait_frac"] <= 1 for r in train)
        assert held[-1]["mse"] < held[0]["mse"]  # it learned something


def test_an_sae_trained_in_a_sweep_equals_it_trained_alone(store, tmp_path):
    train_saes(
        small_cfg(
            store, tmp_path / "sweep", arch=("jumprelu", "topk"), expansion=(2,), k=(4,), tokens=64 * 12
        )
    )
    train_saes(small_cfg(store, tmp_path / "solo", arch=("jumprelu",), expansion=(2,), tokens=64 * 12))
    a, b = (
        load_sae(tmp_path / "sweep" / "jumprelu-x2-sc0.01"),
        load_sae(tmp_path / "solo" / "jumprelu-x2-sc0.01"),
    )
    for name, t in a.state_dict().items():
        assert torch.equal(t, b.state_dict()[name]), name


def test_saes_stepped_on_parallel_threads_equal_the_sequential_sweep(store, tmp_path, monkeypatch):
    """--sae-workers 3: the SAEs of a sweep step concurrently (each on its own thread) and end bit-identical
    to the same sweep stepped one after another (both with one intra-op thread, as the suite runs)."""
    from concurrent import futures

    used = []
    real_map = futures.ThreadPoolExecutor.map
    monkeypatch.setattr(
        futures.ThreadPoolExecutor, "map", lambda self, *a, **k: used.append(1) or real_map(self, *a, **k)
    )
    kw = dict(arch=("jumprelu", "standard", "topk", "batchtopk"), expansion=(2,), k=(4,), tokens=64 * 12)
    train_saes(small_cfg(store, tmp_path / "seq", sae_workers=1, **kw))
    assert not used
    train_saes(small_cfg(store, tmp_path / "par", sae_workers=3, **kw))
    assert len(used) == 12  # one map per step
    for name in ("jumprelu-x2-sc0.01", "standard-x2-sc5", "topk-x2-k4", "batchtopk-x2-k4"):
        a, b = load_sae(tmp_path / "seq" / name), load_sae(tmp_path / "par" / name)
        for key, t in a.state_dict().items():
            assert torch.equal(t, b.state_dict()[key]), (name, key)
        ra, rb = (
            [
                {k: v for k, v in r.items() if k not in TIMING_KEYS}
                for r in read_metrics(tmp_path / run / name / "metrics.jsonl")
                if r["split"] == "train"
            ]
            for run in ("seq", "par")
        )
        assert ra == rb


def test_a_slow_reader_shows_in_data_wait_frac(store, tmp_path, monkeypatch):
    """A reader that takes 30 ms a batch, feeding a tiny SAE: the loop mostly waits, and the train lines say so."""
    original = trainer_mod.make_reader

    def slow_reader(plan, *, batch_size, device, **kw):
        reader = original(plan, batch_size=batch_size, device=device, **kw)
        real_next = type(reader).__next__

        class Slow(type(reader)):
            def __next__(self):
                time.sleep(0.03)
                return real_next(self)

        reader.__class__ = Slow
        return reader

    monkeypatch.setattr(trainer_mod, "make_reader", slow_reader)
    (p,) = train_saes(small_cfg(store, tmp_path / "slow", expansion=(2,), tokens=64 * 20, eval_every=0))
    train = [r for r in read_metrics(p / "metrics.jsonl") if r["split"] == "train"]
    assert train and all(r["data_wait_frac"] > 0.5 for r in train), [r["data_wait_frac"] for r in train]


def test_rerun_of_a_finished_run_does_nothing_and_other_config_is_refused(store, tmp_path):
    out = tmp_path / "o"
    train_saes(small_cfg(store, out, expansion=(2,), tokens=64 * 5, eval_every=0, checkpoint_every=0))
    before = (out / "jumprelu-x2-sc0.01" / "sae_weights.safetensors").stat().st_mtime_ns
    train_saes(small_cfg(store, out, expansion=(2,), tokens=64 * 5, eval_every=0, checkpoint_every=0))
    assert (out / "jumprelu-x2-sc0.01" / "sae_weights.safetensors").stat().st_mtime_ns == before
    with pytest.raises(TrainConfigError, match="holds another config"):
        train_saes(small_cfg(store, out, expansion=(4,), tokens=64 * 5))


def test_normalize_activations_is_folded_into_saved_weights(store, tmp_path):
    (p,) = train_saes(
        small_cfg(store, tmp_path / "n", expansion=(2,), normalize_activations=True, tokens=64 * 10)
    )
    extra = json.loads((p / "fastsae.json").read_text())["extra"]
    assert extra["activation_scale"] != 1.0
    last = [r for r in read_metrics(p / "metrics.jsonl") if r["split"] == "heldout"][-1]
    sae = load_sae(p)  # takes raw activations: its held-out MSE equals the one logged in training
    from fastsae.store import open_store
    from fastsae.train.reader import ActivationReader

    reader = ActivationReader(
        open_store(store), layer=3, batch_size=64, holdout=0.1, seed=42, buffer_tokens=1024, chunk_tokens=64
    )
    held = HeldOut.from_sequences(
        ((h.acts, h.token_types) for h in reader.iter_holdout(max_tokens=65536)), device="cpu"
    )
    reader.close()
    assert math.isclose(heldout_metrics(sae, held)["mse"], last["mse"], rel_tol=1e-4)


def test_nan_in_a_batch_is_reported_with_its_step_and_the_checkpoint_before_stays(
    store, tmp_path, monkeypatch
):
    CountingReaders(monkeypatch, inject_nan_at=13)
    out = tmp_path / "nan"
    with pytest.raises(NonFiniteError, match="step 13"):
        train_saes(small_cfg(store, out, expansion=(2,), checkpoint_every=10, log_every=5))
    from fastsae.train.checkpoint import load_checkpoint

    state = load_checkpoint(out / "checkpoint.safetensors")
    assert state["step"] == 10
    assert all(torch.isfinite(t).all() for t in state["saes"][0].values())
    assert not (out / "jumprelu-x2-sc0.01" / "cfg.json").exists()


def test_nan_loss_names_the_sae(store, tmp_path, monkeypatch):
    from fastsae.saes import SparseAutoencoder

    real = SparseAutoencoder.training_forward
    calls = {"n": 0}

    def poisoned(self, x, *, sparsity_coef):
        out = real(self, x, sparsity_coef=sparsity_coef)
        if self.spec.arch.value == "standard":
            calls["n"] += 1
            if calls["n"] == 4:  # step 3
                out.loss = out.loss * float("inf")
        return out

    monkeypatch.setattr(SparseAutoencoder, "training_forward", poisoned)
    with pytest.raises(NonFiniteError, match=r"step 3 in SAE standard-x2-sc5"):
        train_saes(small_cfg(store, tmp_path / "inf", arch=("jumprelu", "standard"), expansion=(2,)))


class _Identityish(torch.nn.Module):
    """encode = x, decode = x + offset: a known per-token error."""

    def __init__(self, offset):
        super().__init__()
        self.offset = offset

    def encode(self, x):
        return x

    def decode(self, a):
        return a + self.offset


def test_heldout_mse_uses_the_papers_averaging():
    # two sequences of 1 and 3 tokens, d = 2; error per token = mean_d (offset_t)^2 via a token-wise offset
    x = [np.zeros((1, 2), np.float32), np.ones((3, 2), np.float32)]
    types = [np.array([0], np.uint8), np.array([0, 4, 4], np.uint8)]
    held = HeldOut.from_sequences(zip(x, types, strict=True), device="cpu")
    offset = torch.tensor([[2.0, 2.0], [1.0, 1.0], [0.0, 0.0], [0.0, 2.0]])  # per-token err: 4, 1, 0, 2
    m = heldout_metrics(_Identityish(offset), held, chunk=4)
    seq_means = [4.0, (1 + 0 + 2) / 3]
    assert math.isclose(m["mse"], sum(seq_means) / 2)  # not the token mean 7/4
    assert math.isclose(m["mse_st"], (4.0 + 1.0) / 2)  # special tokens: t0 of seq 0, t0 of seq 1
    assert math.isclose(m["log2_mse"], math.log2(m["mse"]))
    xs = torch.cat([torch.as_tensor(a) for a in x])
    total_var = float(((xs - xs.mean(0)) ** 2).sum())
    assert math.isclose(m["explained_variance"], 1 - (4 + 1 + 0 + 2) * 2 / total_var)
    assert m["l0"] == 1.5  # nonzero entries of x per token: 0, 2, 2, 2
