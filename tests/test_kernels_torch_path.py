"""kernels/, torch path (the CPU default): the sparse plan the training ops share between encoder and decoder,
their sparse grad_acts, the public ops' exact grad_acts, relu_encode with its L1 term, the row-blocked encoder
epilogue and feature_counts, against the reference and plain autograd. The first half of the kernels' tests
(both backends) is tests/test_kernels.py.
"""

from __future__ import annotations

import pytest
import torch

from fastsae import kernels
from fastsae.kernels import jumprelu_autoencode, jumprelu_encode, relu_autoencode, sae_decode
from fastsae.kernels.ops import apply_decode, apply_jumprelu
from fastsae.kernels.reference import jumprelu_encode_reference, rect_band, sae_decode_reference
from fastsae.kernels.torch_plan import ActsPlan
from tests.test_kernels import assert_close_all, make_sae


def _reference_autoencode(x, W_enc, b_enc, threshold, W_dec, b_dec, bandwidth):
    acts, l0 = jumprelu_encode_reference(x, W_enc, b_enc, threshold, bandwidth)
    return acts, l0, sae_decode_reference(acts, W_dec, b_dec)


def _public_autoencode(x, W_enc, b_enc, threshold, W_dec, b_dec, bandwidth):
    acts, l0 = jumprelu_encode(x, W_enc, b_enc, threshold, bandwidth)
    return acts, l0, sae_decode(acts, W_dec, b_dec)


def _grads_through_decoder(autoencode, params, *, bandwidth):
    """Loss through x_hat and l0 only: the decoder's grad_acts reaches the encoder untouched."""
    acts, l0, x_hat = autoencode(*params, bandwidth)
    g = torch.Generator().manual_seed(2)
    loss = (x_hat * torch.randn(x_hat.shape, generator=g)).sum() + x_hat.square().sum()
    loss = loss + (l0 * torch.randn(l0.shape, generator=g)).sum()
    return [x_hat.detach(), *torch.autograd.grad(loss, list(params))]


@pytest.mark.parametrize(
    "shape", [(37, 48, 384), (70, 64, 130), (1, 48, 96)], ids=lambda s: "x".join(map(str, s))
)
def test_decoder_only_consumer(sparse_mode, shape, monkeypatch):
    """The training op: on the sparse path the decoder reuses the encoder's plan and computes grad_acts at the
    active and band entries only; every leaf gradient equals the reference's. The public ops share nothing."""

    monkeypatch.setenv("FASTSAE_KERNELS", "torch")
    params = make_sae(*shape, density=0.05, seed=4)
    want = _grads_through_decoder(_reference_autoencode, params, bandwidth=0.2)
    gathers = []
    gather = ActsPlan.gather
    monkeypatch.setattr(ActsPlan, "gather", lambda self, m: gathers.append(1) or gather(self, m))
    got = _grads_through_decoder(jumprelu_autoencode, params, bandwidth=0.2)
    assert len(gathers) == (1 if sparse_mode == "always" else 0)  # decoder forward only: backward reuses
    names = ["x_hat", "grad_x", "grad_W_enc", "grad_b_enc", "grad_threshold", "grad_W_dec", "grad_b_dec"]
    assert_close_all(got, want, names)
    assert_close_all(_grads_through_decoder(_public_autoencode, params, bandwidth=0.2), want, names)
    acts = jumprelu_autoencode(*params, 0.2)[0]
    assert (ActsPlan.of(acts) is not None) == (sparse_mode == "always")
    assert ActsPlan.of(jumprelu_encode(*params[:4], 0.2)[0]) is None


def test_plan_dropped_after_inplace_change(monkeypatch):
    """acts changed in place after the encoder: the training op's decoder ignores the stale plan, stays exact."""
    monkeypatch.setenv("FASTSAE_KERNELS", "torch")
    monkeypatch.setenv("FASTSAE_KERNELS_SPARSE", "always")
    x, W_enc, b_enc, threshold, W_dec, b_dec = make_sae(37, 48, 384, density=0.05, seed=6)
    acts, _ = apply_jumprelu(
        x.detach(), W_enc.detach(), b_enc.detach(), threshold.detach(), 0.1, share_plan=True
    )
    assert ActsPlan.of(acts) is not None
    acts.requires_grad_()
    dense = torch.randn(acts.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        acts.add_(dense * (dense > 1.5))  # new nonzeros the encoder never saw
    assert ActsPlan.of(acts) is None
    got = apply_decode(acts, W_dec, b_dec, shared_plan=True)
    torch.testing.assert_close(got, sae_decode_reference(acts, W_dec, b_dec))
    plain = torch.autograd.grad(got.square().sum(), acts)[0]  # no plan: the full dense grad_acts
    want = torch.autograd.grad(sae_decode_reference(acts, W_dec, b_dec).square().sum(), acts)[0]
    torch.testing.assert_close(plain, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "shape", [(37, 48, 384), (70, 64, 130), (20, 576, 1152)], ids=lambda s: "x".join(map(str, s))
)
@pytest.mark.parametrize("terms", ["decoder_only", "with_l1", "l1_only", "acts_also_used"])
def test_relu_encode(sparse_mode, shape, terms, monkeypatch):
    """relu_encode + sae_decode (the Standard SAE) against plain autograd, forced sparse and dense: outputs,
    l0, l1 and every gradient (l1's weight included), whichever terms of the loss reach the op."""
    from fastsae.kernels import relu_encode
    from fastsae.kernels.relu_encode import relu_encode_reference

    monkeypatch.setenv("FASTSAE_KERNELS", "torch")
    x, W_enc, b_enc, _, W_dec, b_dec = make_sae(*shape, density=0.05, seed=8)
    b_enc.data -= 1.6  # about 5% of z above 0
    g = torch.Generator().manual_seed(3)
    probe = torch.randn(shape[0], shape[2], generator=g)

    def composed(enc, dec):
        def autoencode(x, W_enc, b_enc, l1_weight, W_dec, b_dec):
            acts, l0, l1 = enc(x, W_enc, b_enc, l1_weight)
            return acts, l0, l1, dec(acts, W_dec, b_dec)

        return autoencode

    results = []
    for autoencode in (
        composed(relu_encode_reference, sae_decode_reference),
        relu_autoencode,  # the training op
        composed(relu_encode, sae_decode),  # the public ops
    ):
        acts, l0, l1, x_hat = autoencode(x, W_enc, b_enc, W_dec.norm(dim=1), W_dec, b_dec)
        loss = (x_hat - x.detach()).square().sum()
        if terms == "l1_only":
            loss = 0.3 * l1.sum()
        elif terms == "with_l1":
            loss = loss + 0.3 * l1.sum()
        elif terms == "acts_also_used":  # another consumer of acts: its gradient adds to the decoder's
            loss = loss + 0.3 * l1.sum() + (acts * probe).sum()
        grads = torch.autograd.grad(loss, [x, W_enc, b_enc, W_dec, b_dec], allow_unused=True)
        ins = [x, W_enc, b_enc, W_dec, b_dec]
        grads = [torch.zeros_like(p) if gr is None else gr for gr, p in zip(grads, ins, strict=True)]
        results.append([acts.detach(), l0, l1.detach(), x_hat.detach(), *grads])
    names = ["acts", "l0", "l1", "x_hat", "grad_x", "grad_W_enc", "grad_b_enc", "grad_W_dec", "grad_b_dec"]
    assert_close_all(results[1], results[0], names)
    assert_close_all(results[2], results[0], names)
    assert not l0.requires_grad
    assert 0 < (results[0][0] != 0).float().mean() < 0.3
    acts = relu_autoencode(x, W_enc, b_enc, W_dec.norm(dim=1), W_dec, b_dec)[0]
    assert (ActsPlan.of(acts) is not None) == (sparse_mode == "always")
    assert ActsPlan.of(relu_encode(x, W_enc, b_enc, W_dec.norm(dim=1))[0]) is None


def test_relu_encode_checks_inputs():
    from fastsae.kernels import relu_encode

    with pytest.raises(kernels.KernelShapeError):
        relu_encode(torch.zeros(4, 8), torch.zeros(9, 16), torch.zeros(16), torch.zeros(16))


@pytest.mark.parametrize("block_rows", [1, 5, 37, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_encoder_epilogue_blocks(block_rows, dtype, sparse_mode, monkeypatch):
    """The row-blocked epilogue equals the whole-matrix definitions for any block size (edges included), and
    the sparse plan it collects on the way equals the nonzero pattern of the whole matrix."""
    from fastsae.kernels import torch_path
    from fastsae.kernels.reference import rect_band

    n, d_sae, eps = 37, 130, 0.25
    g = torch.Generator().manual_seed(11)
    z = torch.randn(n, d_sae, generator=g).to(dtype)
    theta = (torch.rand(d_sae, generator=g) * 0.5 + 0.1).to(dtype)
    z[3, :10] = theta[:10]  # exactly at θ: inactive
    z[4, :10] = (theta[:10].float() + eps / 2).to(dtype)  # at the band's edge
    monkeypatch.setattr(torch_path, "EPILOGUE_BLOCK_BYTES", block_rows * d_sae * z.element_size())
    for th in (theta, None):
        acts, l0, br, bc, plan = torch_path.encoder_epilogue(z.clone(), th, eps)
        want = z * (z > theta) if th is not None else torch.relu(z)
        torch.testing.assert_close(acts, want, rtol=0, atol=0)
        assert torch.equal(l0, (want != 0).sum(-1).to(dtype))
        if th is None:
            assert br is None and bc is None
        else:
            want_r, want_c = rect_band(z, theta, eps).nonzero(as_tuple=True)
            assert torch.equal(br, want_r) and torch.equal(bc, want_c)
        assert (plan is not None) == (sparse_mode == "always")
        if plan is not None:
            r, c = want.nonzero(as_tuple=True)
            assert torch.equal(plan.rows, r) and torch.equal(plan.cols, c)
            assert torch.equal(
                plan.crow, torch.cat([torch.zeros(1, dtype=torch.int64), (want != 0).sum(-1).cumsum(0)])
            )


@pytest.mark.parametrize("density", [0.02, 0.3])
def test_encoder_epilogue_auto_choice(density, monkeypatch):
    """auto: the plan is collected exactly when the whole batch is at or below the CPU cut-off, including
    a batch whose first blocks are dense but whose total is sparse."""
    from fastsae.kernels import dispatch, torch_path

    monkeypatch.setenv("FASTSAE_KERNELS_SPARSE", "auto")
    monkeypatch.setattr(torch_path, "EPILOGUE_BLOCK_BYTES", 4 * 64 * 4)
    g = torch.Generator().manual_seed(5)
    z = torch.randn(64, 64, generator=g) - 2.0  # about 2% above 0
    z[: 4 if density < 0.1 else 16] += 2.0  # the first block(s): about half active
    total = float((z > 0).float().mean())
    assert (total <= dispatch.CPU_SPARSE_MAX_DENSITY) == (density < 0.1)
    _, _, _, _, plan = torch_path.encoder_epilogue(z.clone())
    assert (plan is not None) == (total <= dispatch.CPU_SPARSE_MAX_DENSITY)
    if plan is not None:
        r, c = torch.relu(z).nonzero(as_tuple=True)
        assert torch.equal(plan.rows, r) and torch.equal(plan.cols, c)


def _grads_with_acts(autoencode, params, *, extra):
    probe = torch.randn(37, 384, generator=torch.Generator().manual_seed(1))
    acts, l0, x_hat = autoencode(*params, 0.2)
    loss = x_hat.square().sum() + l0.sum()
    if extra:
        loss = loss + (acts * probe).sum()
    return [*torch.autograd.grad(loss, [acts, *params]), acts.detach()]


@pytest.mark.parametrize("extra", [False, True], ids=["decoder_only", "plus_dense_consumer"])
def test_grad_acts_is_sparse_at_the_pattern(extra, monkeypatch):
    """In the training op, on the sparse path, the decoder hands acts a sparse COO gradient holding the active
    and band entries (no dense zeros); with another consumer autograd adds it to a dense gradient; leaves stay
    exact. The public ops hand acts the full dense gradient, exact at every entry."""
    monkeypatch.setenv("FASTSAE_KERNELS", "torch")
    monkeypatch.setenv("FASTSAE_KERNELS_SPARSE", "always")
    params = make_sae(37, 48, 384, density=0.05, seed=9)
    got = _grads_with_acts(jumprelu_autoencode, params, extra=extra)
    want = _grads_with_acts(_reference_autoencode, params, extra=extra)
    public = _grads_with_acts(_public_autoencode, params, extra=extra)
    assert got[0].is_sparse != extra
    g_acts, w_acts, acts = got[0].to_dense(), want[0], got[-1]
    band = rect_band(params[0] @ params[1] + params[2], params[3], 0.2)
    keep = (acts != 0) | band
    assert (~keep).any()
    torch.testing.assert_close(g_acts[keep], w_acts[keep], rtol=1e-4, atol=1e-4)
    if not extra:
        assert (g_acts[~keep] == 0).all()
    names = ["x", "W_enc", "b_enc", "threshold", "W_dec", "b_dec"]
    assert_close_all(got[1:-1], want[1:-1], names)
    assert not public[0].is_sparse
    assert_close_all(public[:-1], want[:-1], ["acts", *names], rtol=1e-4, atol_rel=1e-5)


def test_feature_counts(sparse_mode, monkeypatch):
    """Per-feature firing counts from the attached plan (the training op, sparse) or one dense pass, any acts."""
    from fastsae.kernels import feature_counts

    monkeypatch.setenv("FASTSAE_KERNELS", "torch")
    params = make_sae(37, 48, 384, density=0.05, seed=12)
    acts = jumprelu_autoencode(*params, 0.1)[0]
    want = (acts != 0).sum(0)
    assert (ActsPlan.of(acts) is not None) == (sparse_mode == "always")
    got = feature_counts(acts)
    assert got.dtype == torch.int64 and torch.equal(got, want)
    assert torch.equal(feature_counts(jumprelu_encode(*params[:4], 0.1)[0]), want)  # no plan: dense pass
    signed = torch.randn(5, 7) * (torch.rand(5, 7) > 0.5)  # no plan, negative values count as fired too
    assert torch.equal(feature_counts(signed), (signed != 0).sum(0))
