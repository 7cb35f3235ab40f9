"""The logit view of `fastsae features` (interp/feature_logits.py) on tiny Llamas, one with separate
unembedding weights and one with tied embeddings (as SmolLM2): the stored top and bottom tokens of every
feature equal a full torch matmul, (W_dec * g_final) @ W_U.T, on the model loaded here; the chunk size
changes nothing; --no-logits writes an artifact without them; a model that cannot load is one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fastsae.cli import app
from fastsae.interp.feature_artifact import LOGIT_TENSORS, FeatureArtifact
from fastsae.interp.feature_logits import N_LOGITS, logit_view, unembedding_of
from fastsae.interp.features import run_features
from fastsae.interp.features_config import FeaturesConfig
from fastsae.saes import SAESpec, SparseAutoencoder, load_sae, save_sae
from fastsae.store import open_store
from tests._worlds import tiny_harvest

LAYER = 1
D_SAE = 24


def tiny_llama(out, *, tied: bool):
    """The tiny Llama of tests/_tiny_models.py, its embedding optionally tied to the unembedding."""
    from transformers import AutoModelForCausalLM

    from tests._tiny_models import tiny_config, tiny_tokenizer

    tok = tiny_tokenizer("llama")
    config = tiny_config("llama", vocab_size=len(tok))
    config.tie_word_embeddings = tied
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(4.0)
            else:
                p.uniform_(0.5, 2.0)  # norm gains far from 1: folding the final one in matters
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def random_sae(store, out):
    """A standard SAE of random directions whose every feature fires (b_enc > 0), recording `store`."""
    torch.manual_seed(2)
    sae = SparseAutoencoder(SAESpec("standard", 64, D_SAE))
    with torch.no_grad():
        sae.W_dec.normal_()
        sae.b_enc.fill_(1.0)
    st = open_store(store)
    extra = {"store": {"path": str(store), "fingerprint": st.fingerprint, "layer": LAYER, "model": "tiny"}}
    save_sae(sae, out, hook_name=f"blocks.{LAYER}.hook_resid_post", model_name="tiny", extra=extra)
    return out


@pytest.fixture(scope="module", params=["untied", "tied"])
def world(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"logits-{request.param}")
    model = tiny_llama(root / "model", tied=request.param == "tied")
    store = tiny_harvest(root, model, n_chats=6, layers=(LAYER,))
    return {"root": root, "model": model, "store": store, "sae": random_sae(store, root / "sae"),
            "tied": request.param == "tied"}  # fmt: skip


def cfg(world, out: str, **kw) -> FeaturesConfig:
    kw = {"top_k": 3, "window": 2, "n_quantile": 2, "progress": False, "device": "cpu", **kw}
    return FeaturesConfig(sae=str(world["sae"]), out=str(world["root"] / out), **kw)


def reference(world) -> torch.Tensor:
    """Every feature's effect on every logit [F, V], in one matmul on the model as transformers loads it."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(world["model"], dtype=torch.float32)
    emb, head = model.model.embed_tokens.weight, model.lm_head.weight
    assert (emb.data_ptr() == head.data_ptr()) == world["tied"]
    W_U = emb if world["tied"] else head
    W_dec = load_sae(world["sae"]).W_dec
    with torch.no_grad():
        return (W_dec * model.model.norm.weight) @ W_U.T


def test_the_stored_logit_view_is_the_full_matmul(world):
    run_features(cfg(world, "feats"))
    art = FeatureArtifact.load(world["root"] / "feats")
    assert art.has_logits and art.meta["version"] == 2
    assert art.meta["logits"]["k"] == N_LOGITS and art.meta["logits"]["vocab"] == reference(world).shape[1]
    effect = reference(world)
    top = torch.topk(effect, N_LOGITS, dim=1)
    bottom = torch.topk(effect, N_LOGITS, dim=1, largest=False)
    for f in range(D_SAE):
        got = art.logits(f)
        assert got["pos_ids"].tolist() == top.indices[f].tolist()
        assert got["neg_ids"].tolist() == bottom.indices[f].tolist()
        np.testing.assert_allclose(got["pos"], top.values[f].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["neg"], bottom.values[f].numpy(), rtol=1e-5, atol=1e-6)
        assert (np.diff(got["pos"]) <= 0).all() and (np.diff(got["neg"]) >= 0).all()
        assert got["pos"][0] > 0 > got["neg"][0]


def test_chunks_smaller_than_d_sae_change_nothing(world):
    from transformers import AutoModelForCausalLM

    un = unembedding_of(AutoModelForCausalLM.from_pretrained(world["model"]), vocab=None, name="tiny")
    W_dec = load_sae(world["sae"]).W_dec
    whole = logit_view(W_dec, un, chunk=D_SAE)
    for chunk in (1, 5, 7):  # 5 and 7 do not divide 24: a short last chunk
        parts = logit_view(W_dec, un, chunk=chunk)
        for name in LOGIT_TENSORS:
            if name.endswith("_ids"):
                assert (parts[name] == whole[name]).all(), (chunk, name)
            else:
                np.testing.assert_allclose(parts[name], whole[name], rtol=1e-6, atol=1e-7)
    small = logit_view(W_dec, un, k=3, chunk=4)
    assert small["logit_pos"].shape == (D_SAE, 3)
    assert (small["logit_pos_ids"] == whole["logit_pos_ids"][:, :3]).all()


runner = CliRunner()


def test_no_logits_skips_the_model_and_a_missing_model_is_one_line(world, tmp_path):
    base = ["features", "--sae", str(world["sae"]), "--no-progress", "--device", "cpu", "--top-k", "2"]
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "nolog"), "--no-logits"])
    assert r.exit_code == 0, r.stderr
    art = FeatureArtifact.load(tmp_path / "nolog")
    assert not art.has_logits and art.logits(0) is None and art.meta["logits"] is None
    assert not any(name.startswith("logit_") for name in art.tensors)
    assert "no logit view" in r.stderr
    missing = tmp_path / "no-such-model"
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "bad"), "--model", str(missing)])
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1, r.stderr
    assert "--no-logits" in lines[0] and str(missing) in lines[0], r.stderr
    assert not (tmp_path / "bad" / "features.json").exists()
