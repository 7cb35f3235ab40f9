"""Exact public gradients: autograd through a loaded SAE's encode and decode against the torch reference
(kernels/reference.py and the plain formulas), every arch, odd shapes, both kernel paths, on CPU and on CUDA.

Attribution and steering differentiate encode (d/dx) and decode (d/dacts at every entry, the zero ones too);
the training-only shortcut (grad_acts valid only where the encoder reads it) must never reach them.
CUDA runs need compiled Triton: TRITON_INTERPRET=0 python -m pytest tests/test_saes_gradients.py -m gpu
"""

from __future__ import annotations

import pytest
import torch

from fastsae.kernels.reference import jumprelu_encode_reference, sae_decode_reference
from fastsae.saes import Arch, SAESpec, SparseAutoencoder, load_sae, save_sae

D_IN, D_SAE, LEAD = 19, 77, (3, 11)  # odd sizes, leading dims as a caller's [batch, seq, d]
CASES = [
    (Arch.STANDARD, False),
    (Arch.JUMPRELU, False),
    (Arch.JUMPRELU, True),  # θ stored as log θ
    (Arch.TOPK, False),
    (Arch.BATCHTOPK, False),
]
IDS = ["standard", "jumprelu", "jumprelu-log", "topk", "batchtopk"]


def _compiled_triton() -> bool:
    from fastsae.kernels import encode
    from fastsae.kernels.dispatch import is_interpreted

    return not is_interpreted(encode._encode_fwd_kernel)


DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
        ],
    ),
]


@pytest.fixture(params=DEVICES)
def device(request):
    if request.param == "cuda" and not _compiled_triton():
        pytest.skip("Triton was imported in interpreter mode: run with TRITON_INTERPRET=0")
    return torch.device(request.param)


def _loaded_sae(tmp_path, arch, log_threshold, device) -> SparseAutoencoder:
    """A trained-looking SAE, saved and loaded back (what attribution and steering get)."""
    g = torch.Generator().manual_seed(0)
    spec = SAESpec(arch, D_IN, D_SAE, k=6, log_threshold=log_threshold, jumprelu_bandwidth=0.3)
    sae = SparseAutoencoder(spec, generator=g)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3, generator=g).sub_(0.4)  # a fraction of the latents active per token
        sae.b_dec.normal_(0, 0.5, generator=g)
        sae.W_dec.mul_(torch.rand(D_SAE, 1, generator=g) + 0.5)
        if arch == Arch.JUMPRELU:
            theta = torch.rand(D_SAE, generator=g) * 0.4 + 0.05
            (sae.log_threshold if log_threshold else sae.threshold).copy_(
                theta.log() if log_threshold else theta
            )
    if arch == Arch.BATCHTOPK:
        sae.training_forward(torch.randn(64, D_IN, generator=g), sparsity_coef=0)  # its global threshold
    save_sae(sae, tmp_path, hook_name="blocks.3.hook_resid_post", model_name="synthetic", extra={})
    return load_sae(tmp_path, device=device)


def _reference_encode(sae: SparseAutoencoder, x: torch.Tensor) -> torch.Tensor:
    """The definition of each arch's inference encode, plain torch (JumpReLU: the reference's STE for θ)."""
    x = x.reshape(-1, D_IN)
    z = x @ sae.W_enc + sae.b_enc
    arch = sae.spec.arch
    if arch == Arch.STANDARD:
        acts = z.relu()
    elif arch == Arch.JUMPRELU:
        acts, _ = jumprelu_encode_reference(
            x, sae.W_enc, sae.b_enc, sae.threshold, sae.spec.jumprelu_bandwidth
        )
    elif arch == Arch.TOPK:
        vals, idx = z.topk(sae.spec.k, dim=-1)
        acts = torch.zeros_like(z).scatter(-1, idx, vals.relu())
    else:
        acts = z.relu() * (z > sae.topk_threshold)
    return acts.reshape(*LEAD, D_SAE)


def _reference_decode(sae: SparseAutoencoder, acts: torch.Tensor) -> torch.Tensor:
    return sae_decode_reference(acts.reshape(-1, D_SAE), sae.W_dec, sae.b_dec).reshape(*LEAD, D_IN)


def _inputs(device):
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(*LEAD, D_IN, generator=g) * 1.5).to(device)
    probe_acts = torch.randn(*LEAD, D_SAE, generator=g).to(device)
    probe_x = torch.randn(*LEAD, D_IN, generator=g).to(device)
    return x, probe_acts, probe_x


def _grads(loss, tensors):
    out = torch.autograd.grad(loss, tensors, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(out, tensors, strict=True)]


def _close(got, want, names):
    for name, a, b in zip(names, got, want, strict=True):
        assert not a.is_sparse, name
        scale = max(float(b.abs().max()), 1.0)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * scale, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize(("arch", "log_threshold"), CASES, ids=IDS)
def test_encode_gradients_are_exact(tmp_path, arch, log_threshold, device, sparse_mode):
    """d/dx and d/dparams of encode(x), against the reference."""
    sae = _loaded_sae(tmp_path, arch, log_threshold, device)
    params = [p for _, p in sae.named_parameters()]
    x, probe, _ = _inputs(device)
    results = []
    for encode in (sae.encode, lambda t: _reference_encode(sae, t)):
        xi = x.clone().requires_grad_()
        acts = encode(xi)
        results.append([acts.detach(), *_grads((acts * probe).sum() + acts.square().sum(), [xi, *params])])
    names = ["acts", "x", *(n for n, _ in sae.named_parameters())]
    _close(results[0], results[1], names)
    acts = results[1][0]
    assert (acts == 0).any() and (acts != 0).any()
    assert results[1][1].abs().sum() > 0  # a gradient that can be wrong


@pytest.mark.parametrize(("arch", "log_threshold"), CASES, ids=IDS)
def test_decode_gradients_are_exact_at_every_entry(tmp_path, arch, log_threshold, device, sparse_mode):
    """d/dacts of decode at every entry of acts, zeros included, whether acts come straight from encode
    (with its graph), from encode under no_grad, or from elsewhere; and d/dparams of the whole chain."""
    sae = _loaded_sae(tmp_path, arch, log_threshold, device)
    names = [n for n, _ in sae.named_parameters()]
    params = [p for _, p in sae.named_parameters()]
    x, _, probe = _inputs(device)

    # the chain x -> encode -> acts -> decode, acts' own gradient read as attribution does
    results = []
    for encode, decode in (
        (sae.encode, sae.decode),
        (lambda t: _reference_encode(sae, t), lambda a: _reference_decode(sae, a)),
    ):
        xi = x.clone().requires_grad_()
        acts = encode(xi)
        x_hat = decode(acts)
        loss = (x_hat * probe).sum() + x_hat.square().sum()
        results.append([x_hat.detach(), *_grads(loss, [acts, xi, *params])])  # acts: a hook's view
    _close(results[0], results[1], ["x_hat", "grad_acts", "grad_x", *names])

    # acts computed without a graph (as steering does), or edited: the gradient at every entry
    with torch.no_grad():
        acts = sae.encode(x)
    zeros = acts == 0
    assert zeros.any()
    edited = acts.clone()
    edited[..., 0] += 1.0  # a latent turned on by hand
    for a in (acts, edited):
        got_in = a.clone().requires_grad_()
        want_in = a.clone().requires_grad_()
        got = sae.decode(got_in)
        want = _reference_decode(sae, want_in)
        g_got = _grads((got * probe).sum(), [got_in, *params])
        g_want = _grads((want * probe).sum(), [want_in, *params])
        _close([got.detach(), *g_got], [want.detach(), *g_want], ["x_hat", "grad_acts", *names])
        assert g_got[0][zeros].abs().sum() > 0  # zero activations have a (nonzero) gradient
