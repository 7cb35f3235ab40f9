"""kernels/: both backends against the reference and against plain autograd, on CPU.

The Triton path runs under TRITON_INTERPRET=1 (tests/conftest.py sets it before imports); the backend and the
sparse/dense choice are forced per test through FASTSAE_KERNELS and FASTSAE_KERNELS_SPARSE (read at call time).
Shapes are small and odd (not multiples of the block sizes) because the interpreter is slow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from fastsae import kernels
from fastsae.kernels import jumprelu_encode, sae_decode
from fastsae.kernels.dispatch import interpreting
from fastsae.kernels.reference import jumprelu_encode_reference, sae_decode_reference

KERNELS_DIR = Path(kernels.__file__).resolve().parent


@pytest.fixture(params=["torch", "triton"])
def backend(request, monkeypatch):
    if request.param == "triton" and not interpreting():
        pytest.skip("Triton on CPU tensors needs TRITON_INTERPRET=1 (GPU runs: tests/test_kernels_gpu.py)")
    monkeypatch.setenv("FASTSAE_KERNELS", request.param)
    return request.param


def make_sae(n, d_in, d_sae, *, density, seed=0, dtype=torch.float32):
    """x, W_enc, b_enc, threshold, W_dec, b_dec with about `density` of z above θ (z ~ N(0, 1))."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g)
    W_enc = torch.randn(d_in, d_sae, generator=g) / d_in**0.5
    b_enc = 0.1 * torch.randn(d_sae, generator=g)
    base = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1.0 - density)).item()
    threshold = (base * (0.9 + 0.2 * torch.rand(d_sae, generator=g))).clamp_min(0.05)
    W_dec = torch.randn(d_sae, d_in, generator=g) / d_sae**0.5
    b_dec = 0.1 * torch.randn(d_in, generator=g)
    return [t.to(dtype).requires_grad_() for t in (x, W_enc, b_enc, threshold, W_dec, b_dec)]


def run_sae(encode, decode, params, *, bandwidth, seed=1, use_acts=True, use_l0=True):
    """Forward both ops, backward random upstream grads; returns outputs then every gradient."""
    x, W_enc, b_enc, threshold, W_dec, b_dec = params
    acts, l0 = encode(x, W_enc, b_enc, threshold, bandwidth)
    x_hat = decode(acts, W_dec, b_dec)
    g = torch.Generator().manual_seed(seed)
    outs, grads = [], []
    if use_acts:
        outs += [acts, x_hat]
        grads += [torch.randn(acts.shape, generator=g).to(acts.dtype), torch.randn(x_hat.shape, generator=g)]
    if use_l0:
        outs.append(l0)
        grads.append(torch.randn(l0.shape, generator=g).to(l0.dtype))
    ins = list(params) if use_acts else list(params[:4])
    got = torch.autograd.grad([o for o in outs], ins, [gr.to(o.dtype) for o, gr in zip(outs, grads, strict=True)],
                              allow_unused=True)  # fmt: skip
    return [acts.detach(), l0.detach(), x_hat.detach(), *got]


def assert_close_all(got, want, names, *, rtol=1e-5, atol_rel=1e-5):
    for name, a, b in zip(names, got, want, strict=True):
        if b is None:
            assert a is None or not a.abs().any(), name
            continue
        assert a is not None, name
        scale = max(b.abs().max().item(), 1.0) if b.numel() else 1.0
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol_rel * scale, msg=lambda m, n=name: f"{n}: {m}")


NAMES = [
    "acts",
    "l0",
    "x_hat",
    "grad_x",
    "grad_W_enc",
    "grad_b_enc",
    "grad_threshold",
    "grad_W_dec",
    "grad_b_dec",
]

SHAPES = [  # (N, d_in, d_sae): odd sizes, several tiles, d_sae up to 8x d_in where cheap
    (1, 48, 96),
    (37, 48, 384),
    (70, 64, 130),
    (20, 576, 1152),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("density", [0.03, 0.4], ids=["sparse", "dense"])
def test_matches_reference(backend, shape, density, monkeypatch):
    params = make_sae(*shape, density=density, seed=shape[0])
    want = run_sae(jumprelu_encode_reference, sae_decode_reference, params, bandwidth=0.1)
    got = run_sae(jumprelu_encode, sae_decode, params, bandwidth=0.1)
    assert_close_all(got, want, NAMES)
    acts = got[0]
    assert (acts != 0).float().mean().item() == pytest.approx(density, abs=0.15)


@pytest.mark.parametrize("shape", [(37, 48, 384), (70, 64, 130)], ids=lambda s: "x".join(map(str, s)))
def test_sparse_and_dense_paths_agree(backend, sparse_mode, shape):
    """Both the gather path and the dense path, forced, on the same batch."""
    params = make_sae(*shape, density=0.05, seed=3)
    want = run_sae(jumprelu_encode_reference, sae_decode_reference, params, bandwidth=0.2)
    got = run_sae(jumprelu_encode, sae_decode, params, bandwidth=0.2)
    assert_close_all(got, want, NAMES)


def test_plain_autograd_gradients(backend):
    """Where plain autograd applies (everything but θ), it agrees with the custom backward."""
    x, W_enc, b_enc, threshold, W_dec, b_dec = params = make_sae(37, 48, 384, density=0.1, seed=5)
    acts, _ = jumprelu_encode(x, W_enc, b_enc, threshold, bandwidth=0.05)
    x_hat = sae_decode(acts, W_dec, b_dec)
    (x_hat.square().sum() + acts.sum()).backward()
    got = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    z = x @ W_enc + b_enc
    acts_plain = z * (z > threshold).detach()
    ((acts_plain @ W_dec + b_dec).square().sum() + acts_plain.sum()).backward()
    for name, a, p in zip(["x", "W_enc", "b_enc", "W_dec", "b_dec"], got[:3] + got[4:], params[:3] + params[4:],
                          strict=True):  # fmt: skip
        torch.testing.assert_close(
            a, p.grad, rtol=1e-5, atol=1e-5 * max(p.grad.abs().max().item(), 1.0), msg=name
        )
    torch.testing.assert_close(acts.detach(), acts_plain.detach(), rtol=1e-6, atol=1e-6)


def band_problem(eps, deltas, d_sae=40, n=24, d_in=48):
    """z = θ + δ exactly (dyadic values, two exact products per entry): δ cycles over `deltas`."""
    k = len(deltas)
    assert k + 1 <= d_in
    x = torch.zeros(n, d_in)
    x[torch.arange(n), torch.arange(n) % k] = 1.0
    x[:, k] = 1.0
    theta = 0.5 + torch.arange(d_sae, dtype=torch.float32) / 64
    W_enc = torch.zeros(d_in, d_sae)
    dt = torch.tensor(deltas, dtype=torch.float32)
    for r in range(k):
        W_enc[r] = dt[(r + torch.arange(d_sae)) % k]
    W_enc[k] = theta
    b_enc = torch.zeros(d_sae)
    delta = dt[(torch.arange(n)[:, None] % k + torch.arange(d_sae)[None, :]) % k]  # [n, d_sae]
    return x, W_enc, b_enc, theta, delta


@pytest.mark.parametrize("eps", [2.0**-6, 0.001])
def test_threshold_band_edges(backend, eps):
    """z exactly at θ, at θ ± ε/2 (outside the open band), just inside, and farther out."""
    h = eps / 2
    tiny = 2.0**-20
    deltas = [0.0, h, -h, h - tiny, -h + tiny, h + tiny, -h - tiny, h / 2, -h / 2, 4 * h, -4 * h]
    x, W_enc, b_enc, theta, delta = band_problem(eps, deltas)
    z = theta + delta
    assert torch.equal(x @ W_enc + b_enc, z)  # the construction is exact
    params = [t.clone().requires_grad_() for t in (x, W_enc, b_enc, theta)]
    acts, l0 = jumprelu_encode(*params, bandwidth=eps)
    assert torch.equal(acts, torch.where(z > theta, z, 0.0))
    assert torch.equal(l0, (z > theta).sum(-1).float())
    g_acts = torch.randn(acts.shape, generator=torch.Generator().manual_seed(0))
    g_l0 = torch.randn(l0.shape, generator=torch.Generator().manual_seed(1))
    grad_theta = torch.autograd.grad([acts, l0], params[3], [g_acts, g_l0])[0]
    band = ((z - theta).abs() < torch.tensor(h, dtype=torch.float32)).float()
    assert band[:, 0].sum() > 0 and (band == 0).any()
    want = -(band * (theta * g_acts + g_l0[:, None])).sum(0) / eps
    torch.testing.assert_close(grad_theta, want, rtol=1e-6, atol=1e-6 * want.abs().max().item())
    if eps == 2.0**-6:  # dyadic: z - θ == δ exactly, so entries at exactly θ ± ε/2 are outside the open band
        assert not band[delta.abs() >= h].any() and band[delta.abs() < h].all()
    want_ref = torch.autograd.grad(
        jumprelu_encode_reference(*params, bandwidth=eps), params[3], [g_acts, g_l0]
    )[0]
    torch.testing.assert_close(grad_theta, want_ref, rtol=1e-6, atol=1e-6 * want.abs().max().item())


@pytest.mark.parametrize("use", ["acts_only", "l0_only"])
def test_one_output_used(backend, use):
    params = make_sae(37, 48, 200, density=0.1, seed=7)
    kw = {"use_acts": use == "acts_only", "use_l0": use == "l0_only"}
    want = run_sae(jumprelu_encode_reference, sae_decode_reference, params, bandwidth=0.1, **kw)
    got = run_sae(jumprelu_encode, sae_decode, params, bandwidth=0.1, **kw)
    names = NAMES if kw["use_acts"] else NAMES[:3] + NAMES[3:7]
    assert_close_all(got, want, names)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs(backend, dtype):
    """Small 16-bit check (the interpreter upcasts after load); the real 16-bit tests need a GPU."""
    params = make_sae(37, 64, 130, density=0.1, seed=9, dtype=dtype)
    ref_params = [p.detach().float().requires_grad_() for p in params]
    got = run_sae(jumprelu_encode, sae_decode, params, bandwidth=0.1)
    want = run_sae(jumprelu_encode_reference, sae_decode_reference, ref_params, bandwidth=0.1)
    acts, want_acts = got[0].float(), want[0]
    agree = (acts != 0) == (want_acts != 0)
    assert agree.float().mean() > 0.99  # only entries within rounding of θ may differ
    tol = 2e-2
    torch.testing.assert_close(acts[agree], want_acts[agree], rtol=tol, atol=tol)
    for name, a, b in zip(NAMES[2:], got[2:], want[2:], strict=True):
        if name in ("grad_threshold",):
            continue  # band membership flips with rounding; covered in fp32
        err = (a.float() - b).norm() / b.norm().clamp_min(1e-6)
        assert err < 0.15, (name, err.item())  # dominated by the ~1% of mask flips near θ
        assert a.dtype == dtype


def test_compact_saved_state(backend):
    """The encoder keeps no full-size z for the backward: at most acts (its own output) is [N, d_sae]."""
    x, W_enc, b_enc, threshold, *_ = make_sae(37, 48, 384, density=0.1, seed=11)
    acts, _ = jumprelu_encode(x, W_enc, b_enc, threshold, bandwidth=0.1)
    saved = acts.grad_fn.saved_tensors
    full = [t for t in saved if t.numel() == acts.numel()]
    if backend == "triton":
        assert not full  # two bitmasks of N x ceil(d_sae/32) int32 words instead
        assert sum(t.numel() for t in saved if t.dtype == torch.int32) == 2 * 37 * 12
    else:
        assert len(full) == 1 and full[0].data_ptr() == acts.data_ptr()


def test_decode_path_choice(backend, monkeypatch):
    monkeypatch.setenv("FASTSAE_KERNELS_SPARSE", "auto")
    acts = torch.zeros(16, 512)
    acts[torch.arange(16), torch.arange(16) * 7] = 1.0
    W_dec, b_dec = torch.randn(512, 48, requires_grad=True), torch.zeros(48, requires_grad=True)
    x_hat = sae_decode(acts.requires_grad_(), W_dec, b_dec)
    assert x_hat.grad_fn.sparse  # 1/512 dense: gather over the active rows of W_dec
    torch.testing.assert_close(x_hat, acts @ W_dec + b_dec)
    x_hat = sae_decode(torch.rand(16, 512, requires_grad=True), W_dec, b_dec)
    assert not x_hat.grad_fn.sparse


def test_dispatch_is_decided_per_call(monkeypatch):
    if not interpreting():
        pytest.skip("needs TRITON_INTERPRET=1")
    x, W_enc, b_enc, threshold, W_dec, b_dec = make_sae(5, 48, 96, density=0.1)
    monkeypatch.delenv("FASTSAE_KERNELS", raising=False)
    assert "Torch" in type(jumprelu_encode(x, W_enc, b_enc, threshold)[0].grad_fn).__name__
    monkeypatch.setenv("FASTSAE_KERNELS", "triton")
    assert "Triton" in type(jumprelu_encode(x, W_enc, b_enc, threshold)[0].grad_fn).__name__
    assert "Triton" in type(sae_decode(x @ W_enc, W_dec, b_dec).grad_fn).__name__
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(kernels.KernelDeviceError, match="TRITON_INTERPRET"):
        jumprelu_encode(x, W_enc, b_enc, threshold)
    monkeypatch.setenv("FASTSAE_KERNELS", "cuda")
    with pytest.raises(ValueError, match="FASTSAE_KERNELS"):
        sae_decode(x @ W_enc, W_dec, b_dec)


def test_input_errors(backend):
    x, W_enc, b_enc, threshold, W_dec, b_dec = (p.detach() for p in make_sae(5, 48, 96, density=0.1))
    with pytest.raises(ValueError, match=r"W_enc has shape \(47, 96\)"):
        jumprelu_encode(x, W_enc[:47], b_enc, threshold)
    with pytest.raises(ValueError, match=r"threshold must have 1 dims"):
        jumprelu_encode(x, W_enc, b_enc, threshold[None])
    with pytest.raises(ValueError, match=r"b_dec has shape \(96,\)"):
        sae_decode(x @ W_enc, W_dec, b_enc)
    with pytest.raises(TypeError, match=r"W_enc .*float16.* same dtype as x"):
        jumprelu_encode(x, W_enc.half(), b_enc, threshold)
    with pytest.raises(TypeError, match=r"threshold must be float32, float16 or bfloat16.*float64"):
        jumprelu_encode(x, W_enc, b_enc, threshold.double())
    with pytest.raises(TypeError, match=r"acts must be float32"):
        sae_decode((x @ W_enc).long(), W_dec, b_dec)
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor"):
        jumprelu_encode(x.numpy(), W_enc, b_enc, threshold)
    with pytest.raises(ValueError, match="bandwidth"):
        jumprelu_encode(x, W_enc, b_enc, threshold, bandwidth=0.0)
    with pytest.raises(ValueError, match=r"W_dec .*device meta"):
        sae_decode(x @ W_enc, W_dec.to("meta"), b_dec)
    assert issubclass(kernels.KernelShapeError, kernels.KernelError)


def test_triton_launcher_needs_contiguous(monkeypatch):
    if not interpreting():
        pytest.skip("needs TRITON_INTERPRET=1")
    monkeypatch.setenv("FASTSAE_KERNELS", "triton")
    x, W_enc, b_enc, threshold, W_dec, b_dec = (p.detach() for p in make_sae(5, 48, 96, density=0.1))
    W_t = W_enc.t().contiguous().t()
    with pytest.raises(kernels.KernelLayoutError, match=r"W_enc must be contiguous.*shape \(48, 96\)"):
        jumprelu_encode(x, W_t, b_enc, threshold)
    with pytest.raises(ValueError, match=r"W_dec must be contiguous"):
        sae_decode(x @ W_enc, W_dec.t().contiguous().t(), b_dec)


def test_kernels_import_only_torch_and_triton():
    allowed = {"torch", "triton", "__future__", "functools", "os", "math", "typing", "warnings"}
    for path in KERNELS_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert roots <= allowed, f"{path.name} imports {roots - allowed}"


def test_encoder_with_tl_dot(monkeypatch):
    """The GPU code path of the K-loop (tl.dot; the interpreter's default is a multiply-sum, see encode.py)."""
    if not interpreting():
        pytest.skip("needs TRITON_INTERPRET=1")
    monkeypatch.setenv("FASTSAE_KERNELS", "triton")
    monkeypatch.setenv("FASTSAE_INTERPRET_DOT", "1")
    params = make_sae(37, 64, 130, density=0.1, seed=13)
    want = run_sae(jumprelu_encode_reference, sae_decode_reference, params, bandwidth=0.1)
    got = run_sae(jumprelu_encode, sae_decode, params, bandwidth=0.1)
    assert_close_all(got, want, NAMES)


@pytest.mark.parametrize("sparse", ["always", "never"])
def test_empty_batch(backend, sparse, monkeypatch):
    monkeypatch.setenv("FASTSAE_KERNELS_SPARSE", sparse)
    params = make_sae(0, 48, 96, density=0.1)
    got = run_sae(jumprelu_encode, sae_decode, params, bandwidth=0.1)
    want = run_sae(jumprelu_encode_reference, sae_decode_reference, params, bandwidth=0.1)
    assert_close_all(got, want, NAMES)


def test_launchers_check_their_inputs():
    """The Triton launchers check on their own (they are callable without the public wrappers)."""
    if not interpreting():
        pytest.skip("needs TRITON_INTERPRET=1")
    from fastsae.kernels.decode import decode_forward
    from fastsae.kernels.encode import encode_forward

    x, W_enc, b_enc, threshold, W_dec, b_dec = (p.detach() for p in make_sae(5, 48, 96, density=0.1))
    with pytest.raises(kernels.KernelShapeError, match=r"b_enc has shape \(95,\)"):
        encode_forward(x, W_enc, b_enc[:95], threshold, 0.1)
    with pytest.raises(kernels.KernelDtypeError, match=r"b_dec .*float16"):
        decode_forward(x @ W_enc, W_dec, b_dec.half())
    with pytest.raises(kernels.KernelLayoutError, match=r"acts must be contiguous"):
        decode_forward((x @ W_enc).t().contiguous().t(), W_dec, b_dec)
