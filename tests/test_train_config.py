"""TrainConfig, recipes, sweep expansion, schedules (no store, no training).
The CLI's flags against the config fields: tests/test_cli_options.py."""

from __future__ import annotations

import dataclasses
import math

import pytest

from fastsae.train.config import (
    TrainConfig,
    TrainConfigError,
    resolve,
    sweep_points,
    total_steps,
)
from fastsae.train.schedule import Schedule, lr_factor, sparsity_factor


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"store": "s", "layer": 9, "out": "o", **kw})


def test_paper_recipe_is_appendix_c():
    c = resolve(cfg(recipe="paper"))
    assert (c.batch_size, c.tokens, total_steps(c)) == (128, 40_960_000, 320_000)
    assert (c.lr, c.lr_end_ratio, c.adam_beta1, c.adam_beta2, c.seed, c.grad_clip) == (
        (7e-5,),
        0.1,
        0.9,
        0.999,
        42,
        1.0,
    )
    assert (c.lr_warmup_steps, c.lr_decay_steps, c.sparsity_warmup_steps) == (16_000, 64_000, 10_000)
    assert (c.jumprelu_bandwidth, c.jumprelu_init_threshold, c.jumprelu_log_threshold) == (0.001, 0.001, True)
    assert (c.dead_feature_threshold, c.dead_feature_window, c.feature_sampling_window) == (1e-8, 1000, 2000)
    assert c.b_dec_init.value == "geometric_median" and c.normalize_activations is False
    sc = {
        p.arch: p.sparsity_coef
        for p in sweep_points(resolve(cfg(recipe="paper", arch=("jumprelu", "standard"))))
    }
    assert sc == {"jumprelu": 0.01, "standard": 5.0}


def test_default_recipe_scales_schedule_to_the_run():
    c = resolve(cfg())
    assert (c.batch_size, total_steps(c)) == (4096, 10_000)
    assert (c.lr_warmup_steps, c.lr_decay_steps) == (500, 2000)  # 5% and 20%
    assert (c.jumprelu_bandwidth, c.jumprelu_init_threshold, c.jumprelu_log_threshold) == (0.05, 0.01, False)


def test_explicit_flags_win_over_the_recipe():
    c = resolve(cfg(recipe="paper", batch_size=256, lr=(1e-4,), lr_warmup_steps=7, jumprelu_bandwidth=0.1))
    assert (c.batch_size, c.lr, c.lr_warmup_steps, c.jumprelu_bandwidth) == (256, (1e-4,), 7, 0.1)
    assert c.lr_decay_steps == round(0.2 * 160_000) and c.jumprelu_init_threshold == 0.001


@pytest.mark.parametrize(
    "step, want",
    [
        (0, 7e-5 / 16_000),
        (15_999, 7e-5),
        (16_000, 7e-5),
        (256_000, 7e-5),
        (288_000, 3.85e-5),
        (320_000, 7e-6),
    ],
)
def test_paper_lr_schedule(step, want):
    s = Schedule.from_config(resolve(cfg(recipe="paper")))
    assert math.isclose(s.lr(step, 7e-5), want, rel_tol=1e-9)


@pytest.mark.parametrize(
    "step, want", [(0, 7e-5 / 500), (500, 7e-5), (8_000, 7e-5), (9_000, 3.85e-5), (10_000, 7e-6)]
)
def test_default_lr_schedule(step, want):
    s = Schedule.from_config(resolve(cfg()))
    assert math.isclose(s.lr(step, 7e-5), want, rel_tol=1e-9)


def test_lr_schedule_is_monotone_in_each_phase():
    f = [lr_factor(t, total_steps=100, warmup_steps=10, decay_steps=30, end_ratio=0.1) for t in range(101)]
    assert all(a < b for a, b in zip(f[:9], f[1:10], strict=True))
    assert all(v == 1.0 for v in f[9:71])
    assert all(a > b for a, b in zip(f[70:100], f[71:101], strict=True)) and math.isclose(f[100], 0.1)


def test_sparsity_warmup():
    s = Schedule.from_config(resolve(cfg(recipe="paper")))
    assert math.isclose(s.sparsity_coef(0, 0.01), 0.01 / 10_000)
    assert math.isclose(s.sparsity_coef(4_999, 0.01), 0.005)
    assert s.sparsity_coef(9_999, 5.0) == 5.0 and s.sparsity_coef(300_000, 5.0) == 5.0
    assert sparsity_factor(0, warmup_steps=0) == 1.0
    assert resolve(cfg()).sparsity_warmup_steps == 312  # 3.125% of 10,000


def test_sweep_is_a_cartesian_product_with_a_per_arch_sparsity_axis():
    c = resolve(
        cfg(arch=("jumprelu", "standard", "topk"), expansion=(8, 16), sparsity_coef=(0.003, 0.01), k=(32, 64))
    )
    names = [p.name for p in sweep_points(c)]
    assert len(names) == 2 * 2 + 2 * 2 + 2 * 2 == len(set(names))
    assert "jumprelu-x16-sc0.01" in names and "standard-x8-sc0.003" in names and "topk-x16-k32" in names
    lr_sweep = sweep_points(resolve(cfg(lr=(1e-4, 3e-4))))
    assert [p.name for p in lr_sweep] == ["jumprelu-x16-sc0.01-lr0.0001", "jumprelu-x16-sc0.01-lr0.0003"]
    assert [p.name for p in sweep_points(resolve(cfg(arch=("jumprelu", "standard"))))] == [
        "jumprelu-x16-sc0.01",
        "standard-x16-sc5",
    ]


@pytest.mark.parametrize(
    "kw, needle",
    [
        ({"arch": ("relu",)}, "unknown --arch"),
        ({"expansion": (0,)}, "--expansion"),
        ({"sparsity_coef": (-1.0,)}, "--sparsity-coef"),
        ({"arch": ("topk",), "sparsity_coef": (0.01,)}, "makes no sense for topk"),
        ({"k": (32,)}, "--k only applies"),
        ({"lr": (0.0,)}, "--lr"),
        ({"expansion": (8, 8)}, "twice"),
        ({"tokens": 10, "batch_size": 128}, "less than one batch"),
        ({"holdout": 1.0}, "--holdout"),
    ],
)
def test_bad_config_values_raise_one_line(kw, needle):
    with pytest.raises(TrainConfigError) as e:
        resolve(cfg(**kw))
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, ValueError)


def test_warmup_plus_decay_longer_than_run_is_refused():
    with pytest.raises(TrainConfigError, match="exceed"):
        resolve(cfg(tokens=4096 * 10, lr_warmup_steps=8, lr_decay_steps=8))


def test_swept_values_that_would_share_a_folder_are_refused():
    c = resolve(cfg(lr=(1e-4, 1.0000001e-4)))  # distinct values, same 6-digit name
    with pytest.raises(TrainConfigError, match="share the folder jumprelu-x16-sc0.01-lr0.0001"):
        sweep_points(c)


def test_auxk_dead_latents_follow_the_dead_feature_window():
    from fastsae.train.config import TrainConfig, resolve, sweep_points
    from fastsae.train.run import make_spec

    cfg = resolve(
        TrainConfig(store="s", layer=0, out="o", arch=("topk",), k=(8,), batch_size=256, dead_feature_window=50,
                    aux_k_coef=0.5)
    )  # fmt: skip
    (point,) = sweep_points(cfg)
    spec = make_spec(point, cfg, 16)
    assert spec.dead_tokens == 50 * 256 and spec.aux_k_coef == 0.5
    with pytest.raises(ValueError, match="aux-k-coef"):
        resolve(dataclasses.replace(cfg, aux_k_coef=-1.0))


def test_reuse_host_memory_is_operational_and_applies_on_glibc():
    """The allocator setting changes how a run is operated, not what it computes (a rerun may flip it)."""
    import platform

    from fastsae.train.config import OPERATIONAL_FIELDS
    from fastsae.train.host_memory import reuse_freed_host_memory

    assert "reuse_host_memory" in OPERATIONAL_FIELDS
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert reuse_freed_host_memory() is True
        assert reuse_freed_host_memory() is True  # idempotent


def test_the_arch_list_is_the_saes_own():
    # config keeps the names (the CLI imports no torch); they must be exactly the architectures saes builds
    from fastsae.saes.sae import Arch
    from fastsae.train.config import ARCHS, K_ARCHS, SPARSITY_ARCHS

    assert ARCHS == tuple(a.value for a in Arch)
    assert sorted(SPARSITY_ARCHS + K_ARCHS) == sorted(ARCHS) and not set(SPARSITY_ARCHS) & set(K_ARCHS)
