"""SparseAutoencoder: losses and gradients against plain autograd formulas, constraints, initialisation, specs."""

import pytest
import torch

from fastsae.errors import FastSAEError
from fastsae.saes import Arch, SAESpec, SAESpecError, SparseAutoencoder, geometric_median

D_IN, D_SAE, N = 12, 48, 40


def _sae(arch, *, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    sae = SparseAutoencoder(SAESpec(arch, D_IN, D_SAE, **kw), dtype=torch.float32, generator=g)
    with torch.no_grad():  # move away from the symmetric init so every term is exercised
        sae.b_enc.normal_(0, 0.2, generator=g)
        sae.b_dec.normal_(0, 0.3, generator=g)
        sae.W_dec.mul_(torch.rand(D_SAE, 1, generator=g, dtype=torch.float32) + 0.5)  # non-unit rows
    return sae


def _x(seed=1):
    return torch.randn(N, D_IN, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


def _grads(sae, loss):
    names, params = zip(*sae.named_parameters(), strict=True)
    return dict(zip(names, torch.autograd.grad(loss, params, allow_unused=True), strict=True))


def _assert_grads_close(a, b):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)


def test_standard_loss_and_grads_match_plain_formula():
    sae, x, lam = _sae(Arch.STANDARD), _x(), 0.3
    step = sae.training_forward(x, sparsity_coef=lam)
    ours = _grads(sae, step.loss)

    f = torch.relu(x @ sae.W_enc + sae.b_enc)
    x_hat = f @ sae.W_dec + sae.b_dec
    mse = ((x_hat - x) ** 2).sum(-1).mean()
    l1 = lam * (f.abs() * sae.W_dec.norm(dim=1)).sum(-1).mean()  # L1 weighted by decoder row norms
    torch.testing.assert_close(step.mse_loss, mse)
    torch.testing.assert_close(step.sparsity_loss, l1)
    assert not torch.allclose(l1, lam * f.sum(-1).mean())  # the decoder-norm weighting matters here
    _assert_grads_close(ours, _grads(sae, mse + l1))
    torch.testing.assert_close(step.l0, (f > 0).sum(-1).float())


class _PlainJumpReLU(torch.autograd.Function):
    """f = z·H(z−θ) with the rectangle-kernel STE, written out directly."""

    @staticmethod
    def forward(ctx, z, theta, eps):
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return z * (z > theta)

    @staticmethod
    def backward(ctx, g):
        z, theta = ctx.saved_tensors
        rect = (((z - theta) / ctx.eps).abs() < 0.5).to(z)
        return g * (z > theta), (-(theta / ctx.eps) * rect * g).sum(0), None


class _PlainStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, theta, eps):
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return (z > theta).to(z)

    @staticmethod
    def backward(ctx, g):
        z, theta = ctx.saved_tensors
        rect = (((z - theta) / ctx.eps).abs() < 0.5).to(z)
        return None, (-(1 / ctx.eps) * rect * g).sum(0), None


@pytest.mark.parametrize("log_threshold", [False, True])
def test_jumprelu_grads_match_plain_ste(log_threshold):
    eps, lam = 0.4, 0.7  # a wide band so many (token, feature) pairs feed the threshold gradient
    sae, x = _sae(Arch.JUMPRELU, jumprelu_bandwidth=eps, log_threshold=log_threshold), _x()
    with torch.no_grad():
        theta = (
            torch.rand(D_SAE, generator=torch.Generator().manual_seed(3), dtype=torch.float32) * 0.5 + 0.05
        )
        if log_threshold:
            sae.log_threshold.copy_(theta.log())
        else:
            sae.threshold.copy_(theta)
    step = sae.training_forward(x, sparsity_coef=lam)
    ours = _grads(sae, step.loss)

    th = sae.threshold.to(x.dtype)  # exp(log θ) in the log case: autograd applies the chain rule (× θ)
    z = x @ sae.W_enc + sae.b_enc
    f = _PlainJumpReLU.apply(z, th, eps)
    mse = ((f @ sae.W_dec + sae.b_dec - x) ** 2).sum(-1).mean()
    l0 = lam * _PlainStep.apply(z, th, eps).sum(-1).mean()
    torch.testing.assert_close(step.mse_loss, mse)
    torch.testing.assert_close(step.sparsity_loss, l0)
    _assert_grads_close(ours, _grads(sae, mse + l0))

    # the θ gradient against the closed-form STE formula
    with torch.no_grad():
        zz, t = z.detach(), theta
        rect = (((zz - t) / eps).abs() < 0.5).float()
        assert rect.sum() > 20
        dL_df = 2.0 / N * ((f.detach() @ sae.W_dec + sae.b_dec - x) @ sae.W_dec.T)
        g_theta = -(t / eps) * (rect * dL_df).sum(0) - lam / N * (1 / eps) * rect.sum(0)
    got = ours["log_threshold"] / theta if log_threshold else ours["threshold"]
    torch.testing.assert_close(got, g_theta, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", [Arch.TOPK, Arch.BATCHTOPK])
def test_topk_grads_match_plain_formula(arch):
    sae, x = _sae(arch, k=5), _x()
    step = sae.training_forward(x, sparsity_coef=123.0)  # ignored by topk archs
    ours = _grads(sae, step.loss)
    z = x @ sae.W_enc + sae.b_enc
    if arch == Arch.TOPK:
        keep = torch.zeros_like(z, dtype=torch.bool).scatter(-1, z.topk(5, dim=-1).indices, True)
    else:
        flat = z.relu().flatten()
        keep = torch.zeros_like(flat, dtype=torch.bool).scatter(0, flat.topk(5 * N).indices, True).view_as(z)
    f = torch.relu(z) * keep
    mse = ((f @ sae.W_dec + sae.b_dec - x) ** 2).sum(-1).mean()
    assert float(step.sparsity_loss) == 0.0 and float(step.aux_loss) == 0.0
    _assert_grads_close(ours, _grads(sae, mse))


def test_aux_k_loss_trains_dead_latents():
    sae, x = _sae(Arch.TOPK, k=3, dead_tokens=1), _x()
    sae.training_forward(x, sparsity_coef=0.0)  # every latent that did not fire is now dead
    step = sae.training_forward(x, sparsity_coef=0.0)
    assert float(step.aux_loss.detach()) > 0
    g = torch.autograd.grad(step.aux_loss, sae.W_dec)[0]
    dead = sae.tokens_since_fired >= 1
    assert dead.any() and g[dead].abs().sum() > 0 and g[~dead].abs().sum() == 0


def test_topk_exactly_k_per_token_and_batchtopk_k_times_n_per_batch():
    x = _x()
    topk = _sae(Arch.TOPK, k=7)
    with torch.no_grad():
        topk.b_enc.fill_(5.0)  # all pre-activations positive: the top k survive the ReLU
    assert ((topk.training_forward(x, sparsity_coef=0).acts != 0).sum(-1) == 7).all()
    assert ((topk.encode(x) != 0).sum(-1) == 7).all()
    btk = _sae(Arch.BATCHTOPK, k=7)
    step = btk.training_forward(x, sparsity_coef=0)
    assert int((step.acts != 0).sum()) == 7 * N
    assert (step.acts != 0).sum(-1).float().std() > 0  # varies per token
    assert float(btk.topk_threshold) > 0  # the EMA moved toward the smallest kept activation
    # inference: a JumpReLU with the global threshold
    z = x @ btk.W_enc + btk.b_enc
    torch.testing.assert_close(btk.encode(x), z * (z > btk.topk_threshold))


def test_unit_norm_decoder_maintained_through_adam_steps():
    torch.manual_seed(0)
    sae = SparseAutoencoder(SAESpec(Arch.JUMPRELU, D_IN, D_SAE))
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(D_SAE))
    torch.testing.assert_close(sae.W_enc, sae.W_dec.T)  # W_enc initialised as W_dec.T
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    for _ in range(5):
        opt.zero_grad()
        sae.training_forward(torch.randn(64, D_IN) * 3, sparsity_coef=1.0).loss.backward()
        sae.remove_parallel_grad_()
        opt.step()
        sae.normalize_decoder_()
        torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(D_SAE))
        assert (sae.threshold > 0).all()


def test_remove_parallel_grad_is_orthogonal_and_keeps_the_perpendicular_part():
    sae = _sae(Arch.STANDARD)
    W = sae.W_dec.detach().clone()
    g = torch.randn_like(W)
    sae.W_dec.grad = g.clone()
    sae.remove_parallel_grad_()
    out = sae.W_dec.grad
    torch.testing.assert_close((out * W).sum(1), torch.zeros(D_SAE, dtype=W.dtype), atol=1e-5, rtol=0)
    Wn = W / W.norm(dim=1, keepdim=True)
    torch.testing.assert_close(out, g - (g * Wn).sum(1, keepdim=True) * Wn)


def test_geometric_median_known_cases_and_outlier_robustness():
    # 1-D: the median; regular polygon: its centre (the mean of the vertices too)
    pts = torch.tensor([[0.0], [1.0], [2.0], [3.0], [100.0]])
    torch.testing.assert_close(
        geometric_median(pts, max_iter=500, tol=1e-9), torch.tensor([2.0]), atol=1e-3, rtol=0
    )
    ang = torch.arange(7) * (2 * torch.pi / 7)
    poly = torch.stack([ang.cos(), ang.sin()], 1) + torch.tensor([3.0, -1.0])
    torch.testing.assert_close(geometric_median(poly), torch.tensor([3.0, -1.0]), atol=1e-4, rtol=0)
    # a cluster plus 20% far outliers: the median stays with the cluster, the mean does not
    g = torch.Generator().manual_seed(0)
    centre = torch.randn(16, generator=g)
    cluster = centre + 0.1 * torch.randn(400, 16, generator=g)
    outliers = centre + 50.0 + torch.randn(100, 16, generator=g)
    data = torch.cat([cluster, outliers])
    assert (geometric_median(data) - centre).norm() < 0.5 < 10 < (data.mean(0) - centre).norm()
    sae = SparseAutoencoder(SAESpec(Arch.STANDARD, 16, 32))
    sae.init_b_dec_(data)
    torch.testing.assert_close(sae.b_dec, geometric_median(data))


@pytest.mark.parametrize("arch", list(Arch))
def test_fold_activation_norm_gives_identical_outputs_on_raw_inputs(arch):
    sae, x, scale = _sae(arch, k=5), _x() * 7.0, 0.37
    if arch == Arch.BATCHTOPK:
        sae.training_forward(x * scale, sparsity_coef=0)  # give it a threshold
    with torch.no_grad():
        acts_before = sae.encode(x * scale)
        out_before = sae(x * scale) / scale
    sae.fold_activation_norm_(scale)
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x), acts_before)
        torch.testing.assert_close(sae(x), out_before)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"arch": "standard", "d_in": 8, "d_sae": 0}, "d_sae"),
        ({"arch": "standard", "d_in": -1, "d_sae": 8}, "d_in"),
        ({"arch": "topk", "d_in": 8, "d_sae": 16, "k": 17}, "k"),
        ({"arch": "batchtopk", "d_in": 8, "d_sae": 16, "k": 0}, "k"),
        ({"arch": "jumprelu", "d_in": 8, "d_sae": 16, "jumprelu_bandwidth": 0.0}, "jumprelu_bandwidth"),
        (
            {"arch": "jumprelu", "d_in": 8, "d_sae": 16, "jumprelu_init_threshold": -1.0},
            "jumprelu_init_threshold",
        ),
        ({"arch": "gated", "d_in": 8, "d_sae": 16}, "arch"),
    ],
)
def test_bad_specs_raise_one_line_value_error_naming_the_field(kwargs, field):
    with pytest.raises(ValueError) as info:
        SAESpec(**kwargs)
    assert isinstance(info.value, SAESpecError) and isinstance(info.value, FastSAEError)
    msg = str(info.value)
    assert "\n" not in msg and f"SAESpec.{field}" in msg


def test_spec_accepts_strings_and_round_trips_through_dict():
    spec = SAESpec("topk", 8, 16, k=3)
    assert spec.arch is Arch.TOPK
    assert SAESpec.from_dict(spec.to_dict()) == spec


def test_encode_decode_accept_leading_dims():
    sae = _sae(Arch.JUMPRELU)
    x = _x().reshape(4, 10, D_IN)
    assert sae.encode(x).shape == (4, 10, D_SAE)
    torch.testing.assert_close(sae(x), sae(x.reshape(-1, D_IN)).reshape(4, 10, D_IN))


@pytest.mark.parametrize("arch", [Arch.STANDARD, Arch.JUMPRELU])
def test_training_keeps_the_sparse_plan_and_inference_has_none(arch, monkeypatch):
    """training_forward shares the encoder's sparse plan with the decoder (the training-only op); the public
    encode's acts carry none, so decode's gradient with respect to them is exact at every entry."""
    from fastsae.kernels.torch_plan import ActsPlan

    monkeypatch.setenv("FASTSAE_KERNELS", "torch")
    monkeypatch.setenv("FASTSAE_KERNELS_SPARSE", "always")
    sae, x = _sae(arch), _x()
    assert ActsPlan.of(sae.training_forward(x, sparsity_coef=0.1).acts) is not None
    assert ActsPlan.of(sae.encode(x)) is None
