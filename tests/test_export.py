"""save_sae / load_sae: SAELens v6 layout, exact round trip for every arch, clear errors."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from fastsae.errors import FastSAEError
from fastsae.saes import (
    Arch,
    SAEFormatError,
    SAENotFoundError,
    SAESpec,
    SparseAutoencoder,
    load_sae,
    read_sae_info,
    save_sae,
)

HOOK = "blocks.9.hook_resid_post"
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _trained_like(arch, *, log_threshold=False, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    spec = SAESpec(arch, 16, 64, k=4, log_threshold=log_threshold)
    sae = SparseAutoencoder(spec, dtype=dtype, generator=g)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1, generator=g)
        sae.b_dec.normal_(0, 0.5, generator=g)
        if arch == Arch.JUMPRELU:
            theta = torch.rand(64, generator=g) * 0.4 + 0.01
            (sae.log_threshold.copy_(theta.log()) if log_threshold else sae.threshold.copy_(theta))
    if arch == Arch.BATCHTOPK:
        sae.training_forward(torch.randn(32, 16, generator=g).to(dtype), sparsity_coef=0)
    return sae


CASES = [
    (Arch.STANDARD, False, torch.float32),
    (Arch.JUMPRELU, False, torch.float32),
    (Arch.JUMPRELU, True, torch.float32),
    (Arch.JUMPRELU, False, torch.bfloat16),
    (Arch.TOPK, False, torch.float32),
    (Arch.BATCHTOPK, False, torch.float32),
]


@pytest.mark.parametrize(("arch", "log_threshold", "dtype"), CASES)
def test_round_trip_is_exact(tmp_path, arch, log_threshold, dtype):
    sae = _trained_like(arch, log_threshold=log_threshold, dtype=dtype)
    save_sae(sae, tmp_path / "sae", hook_name=HOOK, model_name=MODEL, extra={"lr": 1e-4, "store": "abc"})
    back = load_sae(tmp_path / "sae")
    assert back.spec == sae.spec
    a, b = sae.state_dict(), back.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name
    x = torch.randn(20, 16).to(dtype)
    assert torch.equal(back.encode(x), sae.encode(x)) and torch.equal(back(x), sae(x))
    assert json.loads((tmp_path / "sae" / "fastsae.json").read_text())["extra"]["store"] == "abc"


@pytest.mark.parametrize("arch", list(Arch))
def test_saelens_cfg_and_weight_layout(tmp_path, arch):
    sae = _trained_like(arch)
    save_sae(sae, tmp_path, hook_name=HOOK, model_name=MODEL, extra={})
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == {"batchtopk": "jumprelu"}.get(arch.value, arch.value)
    assert (cfg["d_in"], cfg["d_sae"], cfg["dtype"]) == (16, 64, "float32")
    assert cfg["apply_b_dec_to_input"] is False and cfg["normalize_activations"] == "none"
    assert cfg["metadata"]["hook_name"] == HOOK and cfg["metadata"]["model_name"] == MODEL
    assert cfg["metadata"]["training_architecture"] == arch.value
    assert cfg["metadata"]["sae_lens_version"].startswith("6.")
    if arch == Arch.TOPK:
        assert cfg["k"] == 4 and cfg["rescale_acts_by_decoder_norm"] is False
    w = load_file(str(tmp_path / "sae_weights.safetensors"))
    expected = {"W_enc": (16, 64), "b_enc": (64,), "W_dec": (64, 16), "b_dec": (16,)}
    if cfg["architecture"] == "jumprelu":
        expected["threshold"] = (64,)
        torch.testing.assert_close(w["threshold"], sae.threshold.detach())
    assert {k: tuple(v.shape) for k, v in w.items()} == expected


def test_loads_a_plain_saelens_directory_with_b_dec_applied_to_input(tmp_path):
    """An SAELens-trained SAE (apply_b_dec_to_input true, no fastsae files) computes the same encode here."""
    g = torch.Generator().manual_seed(0)
    W_enc, b_enc = torch.randn(8, 32, generator=g), torch.randn(32, generator=g)
    W_dec, b_dec, theta = (
        torch.randn(32, 8, generator=g),
        torch.randn(8, generator=g),
        torch.rand(32, generator=g),
    )
    save_file(
        {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec, "threshold": theta},
        str(tmp_path / "sae_weights.safetensors"),
    )
    cfg = {
        "architecture": "jumprelu",
        "d_in": 8,
        "d_sae": 32,
        "dtype": "float32",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "metadata": {"hook_name": HOOK},
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    sae = load_sae(tmp_path)
    x = torch.randn(10, 8, generator=g)
    z = (x - b_dec) @ W_enc + b_enc
    torch.testing.assert_close(sae.encode(x), z.relu() * (z > theta))
    torch.testing.assert_close(sae.decode(sae.encode(x)), sae.encode(x) @ W_dec + b_dec)


def test_load_errors_are_clear(tmp_path):
    assert issubclass(SAENotFoundError, FastSAEError) and issubclass(SAEFormatError, FastSAEError)
    assert issubclass(SAEFormatError, ValueError)
    with pytest.raises(SAENotFoundError, match="not a directory"):
        load_sae(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="cfg.json is missing"):
        load_sae(tmp_path)
    save_sae(_trained_like(Arch.STANDARD), tmp_path, hook_name=HOOK, model_name=MODEL, extra={})
    (tmp_path / "fastsae.json").unlink()
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "architecture": "gated"}))
    with pytest.raises(SAEFormatError, match="architecture 'gated'"):
        load_sae(tmp_path)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("cfg.json", "cfg.json is not valid JSON"),
        ("fastsae.json", "fastsae.json is not valid JSON"),
        ("sae_weights.safetensors", "not a readable safetensors file"),
        ("fastsae_state.safetensors", "not a readable safetensors file"),
        ("threshold", "has no tensor 'threshold'"),
    ],
)
def test_damaged_folders_raise_one_format_error_naming_the_file(tmp_path, damage, message):
    save_sae(_trained_like(Arch.JUMPRELU), tmp_path, hook_name=HOOK, model_name=MODEL, extra={})
    if damage == "threshold":
        w = load_file(str(tmp_path / "sae_weights.safetensors"))
        del w["threshold"]
        save_file(w, str(tmp_path / "sae_weights.safetensors"))
    else:
        (tmp_path / damage).write_bytes((tmp_path / damage).read_bytes()[:20])  # torn
    with pytest.raises(SAEFormatError, match=message) as info:
        load_sae(tmp_path)
    assert "\n" not in str(info.value)


def test_read_sae_info_without_weights(tmp_path):
    sae = _trained_like(Arch.TOPK)
    save_sae(sae, tmp_path, hook_name=HOOK, model_name=MODEL, extra={"activation_scale": 0.5})
    info = read_sae_info(tmp_path)
    assert info.spec == sae.spec and (info.hook_name, info.model_name) == (HOOK, MODEL)
    assert info.extra == {"activation_scale": 0.5}
    (tmp_path / "fastsae.json").unlink()  # as an SAELens folder: the spec comes from cfg.json
    info = read_sae_info(tmp_path)
    assert (info.spec.arch, info.spec.d_in, info.spec.d_sae, info.spec.k) == (Arch.TOPK, 16, 64, 4)
    assert info.extra == {} and info.hook_name == HOOK
