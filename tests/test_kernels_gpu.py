"""kernels/ on a GPU: compiled Triton against the reference at realistic shapes, in fp32, bf16 and fp16.

Skipped without CUDA. tests/conftest.py defaults TRITON_INTERPRET=1 for the CPU tests, so run these with
    TRITON_INTERPRET=0 python -m pytest tests/test_kernels_gpu.py -m gpu
Tolerances: fp32 runs with torch's default matmul precision ("highest"), for which the kernels use
input_precision="ieee", so they are tight; a separate test covers TF32 ("high") with looser ones.
Mask flips (entries within rounding of θ) are expected at a tiny rate and are bounded, not forbidden.
"""

from __future__ import annotations

import pytest
import torch

from fastsae.kernels import jumprelu_encode, sae_decode
from fastsae.kernels.reference import jumprelu_encode_reference, sae_decode_reference
from tests.test_kernels import NAMES  # the outputs and gradients compared, in order

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.fixture(autouse=True)
def compiled_triton(monkeypatch):
    from fastsae.kernels import encode
    from fastsae.kernels.dispatch import is_interpreted

    if is_interpreted(encode._encode_fwd_kernel):
        pytest.skip("Triton was imported in interpreter mode: run with TRITON_INTERPRET=0")
    monkeypatch.setenv("FASTSAE_KERNELS", "triton")
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision("highest")


def make_sae(n, d_in, d_sae, *, l0, dtype, seed=0):
    """SAE parameters on CUDA with a per-feature θ giving about `l0` active features per token."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(n, d_in, device="cuda", generator=g)
    W_enc = torch.randn(d_in, d_sae, device="cuda", generator=g) / d_in**0.5
    b_enc = 0.1 * torch.randn(d_sae, device="cuda", generator=g)
    z = x @ W_enc + b_enc
    sample = z[:1024].float()
    k = min(max(round((1.0 - l0 / d_sae) * sample.shape[0]), 1), sample.shape[0])
    threshold = sample.kthvalue(k, dim=0).values.clamp_min(0.05)  # [d_sae]
    W_dec = torch.randn(d_sae, d_in, device="cuda", generator=g) / d_sae**0.5
    b_dec = 0.1 * torch.randn(d_in, device="cuda", generator=g)
    return [t.to(dtype).contiguous().requires_grad_() for t in (x, W_enc, b_enc, threshold, W_dec, b_dec)]


def run_sae(encode, decode, params, *, bandwidth, seed=1):
    x, W_enc, b_enc, threshold, W_dec, b_dec = params
    acts, l0 = encode(x, W_enc, b_enc, threshold, bandwidth)
    x_hat = decode(acts, W_dec, b_dec)
    g = torch.Generator(device="cuda").manual_seed(seed)
    outs = [acts, x_hat, l0]
    grads = [torch.randn(o.shape, device="cuda", generator=g).to(o.dtype) for o in outs]
    got = torch.autograd.grad(outs, params, grads)
    return [acts.detach(), l0.detach(), x_hat.detach(), *got]


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


def check(got, want, *, tol, theta_tol, max_flips):
    acts, want_acts = got[0].float(), want[0].float()
    flips = ((acts != 0) != (want_acts != 0)).float().mean().item()
    assert flips <= max_flips, f"mask flips {flips:.2e}"
    for name, a, b in zip(NAMES[2:], got[2:], want[2:], strict=True):
        err = rel_err(a, b)
        assert err < (theta_tol if name == "grad_threshold" else tol), f"{name}: relative error {err:.2e}"
    assert rel_err(got[1], want[1]) < tol


SHAPES = [(4096, 2048, 16384), (1000, 576, 4608), (333, 4096, 65536 // 2 + 5)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("l0", [50, 500])
@pytest.mark.parametrize("sparse", ["auto", "always", "never"])
def test_fp32_matches_reference(shape, l0, sparse, monkeypatch):
    monkeypatch.setenv("FASTSAE_KERNELS_SPARSE", sparse)
    params = make_sae(*shape, l0=l0, dtype=torch.float32)
    want = run_sae(jumprelu_encode_reference, sae_decode_reference, params, bandwidth=0.01)
    got = run_sae(jumprelu_encode, sae_decode, params, bandwidth=0.01)
    check(got, want, tol=1e-4, theta_tol=1e-3, max_flips=1e-5)
    assert torch.equal(got[1], (got[0] != 0).sum(-1).float())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("l0", [50, 500])
@pytest.mark.parametrize("sparse", ["auto", "always", "never"])
def test_half_matches_fp32_reference(dtype, l0, sparse, monkeypatch):
    monkeypatch.setenv("FASTSAE_KERNELS_SPARSE", sparse)
    params = make_sae(4096, 2048, 16384, l0=l0, dtype=dtype)
    ref = [p.detach().float().requires_grad_() for p in params]
    want = run_sae(jumprelu_encode_reference, sae_decode_reference, ref, bandwidth=0.05)
    got = run_sae(jumprelu_encode, sae_decode, params, bandwidth=0.05)
    check(got, want, tol=3e-2, theta_tol=0.2, max_flips=5e-3)
    for t in got:
        assert t.dtype == dtype


def test_tf32_when_torch_allows_it():
    torch.set_float32_matmul_precision("high")
    params = make_sae(4096, 2048, 16384, l0=100, dtype=torch.float32)
    want = run_sae(jumprelu_encode_reference, sae_decode_reference, params, bandwidth=0.05)
    got = run_sae(jumprelu_encode, sae_decode, params, bandwidth=0.05)
    check(got, want, tol=5e-3, theta_tol=0.1, max_flips=2e-3)


def test_deterministic():
    params = make_sae(2048, 1024, 8192, l0=64, dtype=torch.float32)
    a = run_sae(jumprelu_encode, sae_decode, params, bandwidth=0.05)
    b = run_sae(jumprelu_encode, sae_decode, params, bandwidth=0.05)
    for name, u, v in zip(NAMES, a, b, strict=True):
        if name not in ("grad_W_enc", "grad_x", "grad_W_dec", "grad_acts"):  # cuBLAS may split K differently
            assert torch.equal(u, v), name


def test_torch_path_on_cuda_matches(monkeypatch):
    monkeypatch.setenv("FASTSAE_KERNELS", "torch")
    params = make_sae(1024, 576, 4608, l0=50, dtype=torch.float32)
    want = run_sae(jumprelu_encode_reference, sae_decode_reference, params, bandwidth=0.05)
    got = run_sae(jumprelu_encode, sae_decode, params, bandwidth=0.05)
    check(got, want, tol=1e-4, theta_tol=1e-3, max_flips=1e-5)
