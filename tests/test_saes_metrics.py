"""fastsae.saes.metrics: the reconstruction metrics against their plain definitions, streamed in any chunking,
and heldout_metrics (what train logs) built on them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastsae.saes import (
    CORE_KEYS,
    SPECIAL,
    HeldOut,
    ReconstructionStats,
    firing_fractions,
    heldout_metrics,
    reconstruction_metrics,
    token_errors,
)

D, D_SAE = 5, 9


def _data(seed=0, lengths=(4, 1, 7, 3, 6)):
    """Sequences of (x, x_hat, acts, token_types) with a mean far from 0 (as residual streams have)."""
    g = torch.Generator().manual_seed(seed)
    seqs = []
    for t in lengths:
        x = torch.randn(t, D, generator=g) + 3.0
        x_hat = x + 0.3 * torch.randn(t, D, generator=g)
        acts = torch.relu(torch.randn(t, D_SAE, generator=g) - 0.5)
        acts[:, 0] = 0  # a latent that never fires
        acts[:, 1] = 1.0  # one that always does
        types = torch.randint(1, 5, (t,), generator=g).to(torch.uint8)
        types[0] = SPECIAL
        seqs.append((x, x_hat, acts, types))
    seqs[2][3][:] = 2  # a sequence without special tokens
    return seqs


def _plain(seqs) -> dict:
    """The definitions, written the plain way (loops over sequences, two-pass variance)."""
    per_seq, per_seq_st, cos, ratio = [], [], [], []
    for x, x_hat, _, types in seqs:
        err = [float(((x_hat[t] - x[t]) ** 2).mean()) for t in range(len(x))]
        per_seq.append(sum(err) / len(err))
        st = [e for e, ty in zip(err, types.tolist(), strict=True) if ty == SPECIAL]
        if st:
            per_seq_st.append(sum(st) / len(st))
        for t in range(len(x)):
            cos.append(float(x[t] @ x_hat[t] / (x[t].norm() * x_hat[t].norm())))
            ratio.append(float(x_hat[t].norm() / x[t].norm()))
    xs = torch.cat([s[0] for s in seqs]).double()
    xh = torch.cat([s[1] for s in seqs]).double()
    acts = torch.cat([s[2] for s in seqs])
    ev = 1 - float(((xh - xs) ** 2).sum() / ((xs - xs.mean(0)) ** 2).sum())
    fired = (acts > 0).sum(0)
    mse, mse_st = float(np.mean(per_seq)), float(np.mean(per_seq_st))
    return {
        "mse": mse,
        "mse_st": mse_st,
        "log2_mse": math.log2(mse),
        "log2_mse_st": math.log2(mse_st),
        "explained_variance": ev,
        "l0": float((acts > 0).sum(-1).double().mean()),
        "cosine_sim": float(np.mean(cos)),
        "relative_norm": float(np.mean(ratio)),
        "dead_frac": float((fired == 0).double().mean()),
        "dense_frac": float((fired > 0.1 * len(acts)).double().mean()),
    }


def _assert_metrics(got: dict, want: dict, rel=1e-6):  # err_t is float32, as train computes it
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=rel, abs=1e-12), k


def _cat(seqs):
    x, x_hat, acts, types = (torch.cat([s[i] for s in seqs]) for i in range(4))
    seq = torch.cat([torch.full((len(s[0]),), i) for i, s in enumerate(seqs)])
    return x, x_hat, acts, types, seq


def test_one_sequence_at_a_time_matches_the_definitions():
    seqs = _data()
    stats = ReconstructionStats()
    for x, x_hat, acts, types in seqs:
        stats.update(x, x_hat, acts=acts, token_types=types)  # seq=None: each update is one sequence
    assert (stats.num_sequences, stats.num_tokens) == (5, 21)
    assert stats.fire_counts.tolist()[:2] == [0, 21]
    _assert_metrics({**stats.compute(), **stats.extras()}, _plain(seqs))
    # the paper's averaging differs from the token mean here (sequences of 1 to 7 tokens)
    x, x_hat, *_ = _cat(seqs)
    assert abs(stats.compute()["mse"] - float(token_errors(x, x_hat).double().mean())) > 1e-4


@pytest.mark.parametrize("chunk", [1, 2, 5, 21])
def test_any_chunking_gives_the_same_metrics(chunk):
    """Chunks of tokens with their global sequence index: sequences split across updates are still one."""
    seqs = _data(seed=1)
    x, x_hat, acts, types, seq = _cat(seqs)
    stats = ReconstructionStats()
    for a in range(0, len(x), chunk):
        s = slice(a, a + chunk)
        stats.update(x[s], x_hat[s], acts=acts[s], special=types[s] == SPECIAL, seq=seq[s])
    whole = reconstruction_metrics(x, x_hat, acts=acts, token_types=types.numpy(), seq=seq, extras=True)
    _assert_metrics(whole, _plain(seqs))
    _assert_metrics({**stats.compute(), **stats.extras()}, whole, rel=1e-12)
    assert tuple(stats.compute()) == CORE_KEYS


def test_l0_instead_of_acts_and_edge_cases():
    seqs = _data(seed=2)
    x, x_hat, acts, types, seq = _cat(seqs)
    m = reconstruction_metrics(x, x_hat, l0=(acts > 0).sum(-1), seq=seq, extras=True)
    assert m["l0"] == pytest.approx(_plain(seqs)["l0"])
    assert "dead_frac" not in m  # no per-latent counts without acts
    assert math.isnan(m["mse_st"]) and math.isnan(m["log2_mse_st"])  # no special tokens given
    assert ReconstructionStats().compute() == {} and ReconstructionStats().extras() == {}
    const = torch.ones(4, D)
    assert math.isnan(reconstruction_metrics(const, const, l0=torch.zeros(4))["explained_variance"])
    perfect = reconstruction_metrics(x, x, l0=torch.zeros(len(x)))
    assert perfect["explained_variance"] == 1.0 and perfect["mse"] == 0 and math.isnan(perfect["log2_mse"])
    with pytest.raises(ValueError, match="exactly one of acts"):
        ReconstructionStats().update(x, x_hat)
    with pytest.raises(ValueError, match="one shape"):
        ReconstructionStats().update(x, x_hat[:, :2], l0=torch.zeros(len(x)))
    assert firing_fractions(torch.tensor([0, 3, 10]), 10, dense_above=0.5) == {
        "dead_frac": pytest.approx(1 / 3),
        "dense_frac": pytest.approx(1 / 3),
    }


class _Clipping(torch.nn.Module):
    """encode = relu(x - 3), decode = acts + 3: x̂ = max(x, 3), a known per-token error (x has mean 3)."""

    def encode(self, x):
        return torch.relu(x - 3.0)

    def decode(self, a):
        return a + 3.0


def test_heldout_metrics_is_the_streamed_definition_in_any_chunk_size():
    sae = _Clipping()
    seqs = [
        (x, sae.decode(sae.encode(x)), sae.encode(x), t) for x, _, _, t in _data(seed=3, lengths=(30, 2, 17))
    ]
    held = HeldOut.from_sequences(((s[0].numpy(), s[3].numpy()) for s in seqs), device="cpu")
    assert held.num_sequences == 3 and len(held) == 49
    want = {k: v for k, v in _plain(seqs).items() if k in CORE_KEYS}
    whole = heldout_metrics(sae, held)
    assert tuple(whole) == CORE_KEYS  # the held-out keys train logs (it adds step, dead_frac, ...)
    _assert_metrics(whole, want)
    for chunk in (1, 7, 64):
        _assert_metrics(heldout_metrics(sae, held, chunk=chunk), whole, rel=1e-12)
    assert heldout_metrics(sae, HeldOut.from_sequences([], device="cpu")) == {}
