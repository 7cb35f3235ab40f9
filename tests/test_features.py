"""`fastsae features` on a tiny Llama store and a tiny trained SAE, checked against brute force: every
activation of the sequences read, computed once here (one sequence at a time).

Properties: the streaming top-k is the top-k of all firings; density, max, mean, histogram and type
mass equal the brute-force ones; windows hold the sequence's tokens with the activating one at index W
and its activation; quantile contexts are firings, sorted, inside the firing range; the batch size
changes nothing; the special-token table equals its brute-force computation; the delphi export reads
back as delphi's loader reads it; the CLI writes every file and bad input is one line, exit 2.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from typer.testing import CliRunner

from fastsae.cli import app
from fastsae.interp.feature_artifact import FeatureArtifact
from fastsae.interp.features import HIST_EDGES, run_features
from fastsae.interp.features_config import FeaturesConfig
from fastsae.saes import SAESpec, SparseAutoencoder, load_sae, read_sae_info, save_sae
from fastsae.store import TokenType, open_store
from fastsae.store.split import holdout_indices
from tests._worlds import tiny_harvest, tiny_model, tiny_train

LAYER = 1
W = 3


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    store = tiny_harvest(root, tiny_model(root), n_chats=40, layers=(LAYER, 2), dtype="bfloat16")
    saes = tiny_train(store, root / "sae", layer=LAYER, tokens=64 * 30)
    return {"root": root, "sae": saes[0], "store": store}


def features_cfg(world, out: str, **kw) -> FeaturesConfig:
    kw = {"top_k": 5, "window": W, "n_quantile": 4, "progress": False, "device": "cpu", **kw}
    return FeaturesConfig(sae=str(kw.pop("sae", world["sae"])), out=str(world["root"] / out), **kw)


@pytest.fixture(scope="module")
def art(world):
    run_features(features_cfg(world, "feats", sequences=24, batch_tokens=100, delphi=True))
    return FeatureArtifact.load(world["root"] / "feats")


@pytest.fixture(scope="module")
def brute(world, art):
    """Every activation of the sequences the artifact read: acts [T, F], with seq, pos, id, type per token."""
    store, sae = open_store(world["store"]), load_sae(world["sae"])
    acts, seq, pos, ids, types = [], [], [], [], []
    with torch.no_grad():
        for s in art.meta["sequences"]:
            sq = store.sequence(s)
            acts.append(sae.encode(torch.from_numpy(np.asarray(sq.acts(LAYER), np.float32))).numpy())
            n = len(sq)
            seq.append(np.full(n, s)), pos.append(np.arange(n))
            ids.append(np.asarray(sq.token_ids)), types.append(np.asarray(sq.token_types))
    cat = np.concatenate
    return {"acts": cat(acts), "seq": cat(seq), "pos": cat(pos), "ids": cat(ids), "types": cat(types)}


def close(a, b):
    return np.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_selection_is_heldout_first_then_seeded_training(world, art):
    store, info = open_store(world["store"]), read_sae_info(world["sae"])
    held = holdout_indices(store.num_sequences, 42, fraction=0.25)
    seqs = np.array(art.meta["sequences"])
    sel = art.meta["selection"]
    assert len(seqs) == 24 == art.meta["n_sequences"] and (np.diff(seqs) > 0).all()
    assert set(held) <= set(seqs) and sel["n_heldout"] == len(held) and sel["n_training"] == 24 - len(held)
    assert info.extra["config"]["holdout"] == 0.25


def test_statistics_equal_brute_force(art, brute):
    t, A = art.tensors, brute["acts"]
    fired = A > 0
    n = fired.sum(0)
    assert art.meta["n_tokens"] == len(A)
    assert (t["n_fired"] == n).all() and (t["dead"] == (n == 0)).all() and (n > 0).any()
    assert np.allclose(t["density"], n / len(A))
    assert close(t["max_act"], A.max(0))
    assert close(t["mean_act"], np.where(n > 0, A.sum(0) / np.maximum(n, 1), 0))
    mass = np.stack([A[brute["types"] == k].sum(0) for k in range(len(TokenType))], 1)
    total = mass.sum(1, keepdims=True)
    assert np.allclose(
        t["type_mass"], np.where(total > 0, mass / np.where(total > 0, total, 1), 0), atol=1e-6
    )
    edges = np.asarray(HIST_EDGES, np.float32)
    for f in np.flatnonzero(n)[:50]:
        v = A[:, f][fired[:, f]]
        bins = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, len(edges) - 2)
        assert (t["hist_counts"][f] == np.bincount(bins, minlength=len(edges) - 1)).all()


def test_streaming_top_k_is_the_top_k_of_all_firings(art, brute):
    t, A, K = art.tensors, brute["acts"], art.meta["top_k"]
    where = {(s, p): i for i, (s, p) in enumerate(zip(brute["seq"], brute["pos"], strict=True))}
    for f in range(art.d_sae):
        v = np.sort(A[:, f][A[:, f] > 0])[::-1][:K]
        assert close(t["top_act"][f, : len(v)], v) and (t["top_act"][f, len(v) :] == 0).all()
        assert (t["top_seq"][f, len(v) :] == -1).all()
        for j in range(len(v)):
            assert close(A[where[(t["top_seq"][f, j], t["top_pos"][f, j])], f], t["top_act"][f, j])


def test_windows_hold_the_tokens_around_the_activating_one(world, art, brute):
    store = open_store(world["store"])
    for f in art.live()[:40]:
        for kind in ("top", "quantile"):
            for c in art.contexts(int(f), kind):
                sq = store.sequence(c.seq)
                a, b = max(0, c.pos - W), min(len(sq), c.pos + W + 1)
                assert (c.ids == np.asarray(sq.token_ids)[a:b]).all()
                assert (c.types == np.asarray(sq.token_types)[a:b]).all()
                assert c.center == c.pos - a and close(c.acts[c.center], c.act)
                m = brute["seq"] == c.seq
                assert close(c.acts, brute["acts"][m, f][a:b])
    full = art.tensors["top_ids"][art.tensors["top_seq"] >= 0]
    assert full.shape[1] == 2 * W + 1 and (full[:, W] >= 0).all()


def test_quantile_contexts_are_sorted_firings_in_range(art, brute):
    t, A = art.tensors, brute["acts"]
    for f in art.live():
        q = t["q_act"][f][t["q_seq"][f] >= 0]
        v = A[:, f][A[:, f] > 0]
        assert len(q) == min(art.meta["n_quantile"], len(v))
        assert (np.diff(q) >= 0).all() and q.min() >= v.min() - 1e-6 and q.max() <= v.max() + 1e-6
        pairs = set(zip(t["q_seq"][f][: len(q)], t["q_pos"][f][: len(q)], strict=True))
        assert len(pairs) == len(q)  # distinct firings


def test_batch_size_changes_nothing(world, art, brute):
    """Equal up to float noise; a context may only be exchanged for another firing of the same value
    (conversations sharing a prefix have equal activations there, and BLAS rounds batches differently)."""
    run_features(features_cfg(world, "feats_b1", sequences=24, batch_tokens=7))
    other = FeatureArtifact.load(world["root"] / "feats_b1").tensors
    where = {(s, p): i for i, (s, p) in enumerate(zip(brute["seq"], brute["pos"], strict=True))}
    swapped = set()
    for p in ("top", "q"):
        f, j = np.nonzero(
            (other[f"{p}_seq"] != art.tensors[f"{p}_seq"]) | (other[f"{p}_pos"] != art.tensors[f"{p}_pos"])
        )
        for f_, j_ in zip(f, j, strict=True):
            i = where[(other[f"{p}_seq"][f_, j_], other[f"{p}_pos"][f_, j_])]
            assert close(brute["acts"][i, f_], art.tensors[f"{p}_act"][f_, j_])
        swapped |= {(p, f_) for f_ in f}
    for name, t in art.tensors.items():
        rows = np.array([f not in {g for q, g in swapped if name.startswith(q + "_")} for f in range(len(t))])
        a, b = (
            (other[name][rows], t[rows])
            if name.endswith(("_ids", "_types", "_acts", "_seq", "_pos"))
            else (other[name], t)
        )
        assert close(a, b) if t.dtype.kind == "f" else (a == b).all(), name
    table = json.loads((world["root"] / "feats_b1" / "special_tokens.json").read_text())
    for x, y in zip(table["tokens"], art.special_table()["tokens"], strict=True):
        assert {k: v for k, v in x.items() if k != "top"} == {k: v for k, v in y.items() if k != "top"}
        assert [e["feature"] for e in x["top"]] == [e["feature"] for e in y["top"]]
        assert close([e["value"] for e in x["top"]], [e["value"] for e in y["top"]])


def test_special_token_table_equals_brute_force(world, art, brute):
    from fastsae.lm import load_store_tokenizer, special_ids

    tok = load_store_tokenizer(open_store(world["store"]))
    doc = art.special_table()
    assert doc["n_sequences"] == 24 and (world["root"] / "feats" / "special_tokens.md").is_file()
    A, ids, types, seq = brute["acts"], brute["ids"], brute["types"], brute["seq"]
    expected = {}
    for i in special_ids(tok):
        expected[("special", int(i))] = (ids == i) & (types == TokenType.SPECIAL)
    for word in ("system", "user", "assistant"):
        for i in tok.encode(word, add_special_tokens=False):
            expected.setdefault(("role", int(i)), (ids == i) & (types == TokenType.TEMPLATE))
    rows = {(t["kind"], t["id"]): t for t in doc["tokens"]}
    assert set(rows) == {k for k, m in expected.items() if m.any()} and len(rows) >= 3
    for key, m in expected.items():
        if not m.any():
            continue
        per_seq = np.stack([A[m & (seq == s)].max(0) for s in np.unique(seq[m])])
        mean = per_seq.mean(0)
        row = rows[key]
        assert row["n_sequences"] == len(per_seq) and row["n_positions"] == int(m.sum())
        assert row["token"] == tok.decode([key[1]])
        top = np.argsort(-mean, kind="stable")[:5]
        assert close([e["value"] for e in row["top"]], mean[top][mean[top] > 0])
        assert set(e["feature"] for e in row["top"]) <= set(np.flatnonzero(mean >= mean[top][-1] - 1e-6))


def test_delphi_export_reads_back_as_delphi_reads_it(world, art, brute):
    """As delphi's TensorBuffer.load and constructor do: the first latent from the file name, locations
    (row, position, latent offset) into `tokens` [rows, cache_ctx_len]."""
    mod = world["root"] / "feats" / "delphi" / art.meta["sae"]["hook_name"]
    config = json.loads((mod / "config.json").read_text())
    ctx, starts = config["cache_ctx_len"], config["fastsae"]["stream_starts"]
    assert config["fastsae"]["sequences"] == art.meta["sequences"] and config["model_name"]
    files = sorted(mod.glob("*.safetensors"), key=lambda p: int(p.stem.split("_")[0]))
    assert len(files) == config["n_splits"]
    stream = {s: st for s, st in zip(config["fastsae"]["sequences"], starts, strict=True)}
    flat = brute["seq"] * 0
    for i, s in enumerate(brute["seq"]):
        flat[i] = stream[s] + brute["pos"][i]
    found = np.zeros(art.d_sae, np.int64)
    for p in files:
        data = load_file(str(p))
        first, last = (int(x) for x in p.stem.split("_"))
        loc = data["locations"].astype(np.int64)
        assert data["locations"].dtype == np.uint16 and data["activations"].dtype == np.float16
        assert data["tokens"].shape[1] == ctx and data["tokens"].dtype == np.int64
        loc[:, 2] += first
        assert ((loc[:, 2] >= first) & (loc[:, 2] <= last)).all()
        where = loc[:, 0] * ctx + loc[:, 1]
        tokens = data["tokens"].reshape(-1)
        at = np.searchsorted(flat, where)
        assert (flat[at] == where).all() and (tokens[where] == brute["ids"][at]).all()
        assert np.allclose(data["activations"], brute["acts"][at, loc[:, 2]].astype(np.float16), rtol=2e-3)
        found += np.bincount(loc[:, 2], minlength=art.d_sae)
        for lat in np.unique(loc[:, 2])[:20]:  # each latent's locations in stream order (delphi's windows)
            assert (np.diff(where[loc[:, 2] == lat]) > 0).all()
    assert (found == art.tensors["n_fired"]).all()


def handmade(world, name: str, *, d_in: int = 64, layer: int = LAYER, b_enc: float = 0.0, extra=None) -> Path:
    sae = SparseAutoencoder(SAESpec("standard", d_in, 16))
    with torch.no_grad():
        sae.b_enc.fill_(b_enc)
    info = read_sae_info(world["sae"])
    out = world["root"] / name
    hook = f"blocks.{layer}.hook_resid_post"
    save_sae(sae, out, hook_name=hook, model_name=info.model_name, extra=extra or info.extra)
    return out


runner = CliRunner()


def cli(*args):
    r = runner.invoke(app, ["features", *map(str, args), "--no-progress", "--device", "cpu"])
    return r.exit_code, r.stderr


def test_cli_writes_every_file_and_bad_input_is_one_line(world, tmp_path):
    args = ("--top-k", 3, "--window", 2, "--special-sequences", 3)
    code, err = cli("--sae", world["sae"], "--out", tmp_path / "f", *args)
    assert code == 0, err
    assert {"features.json", "features.safetensors", "special_tokens.json", "special_tokens.md"} <= {
        p.name for p in (tmp_path / "f").iterdir()
    }
    meta = FeatureArtifact.load(tmp_path / "f").meta
    assert meta["selection"]["kind"] == "heldout" and meta["config"]["top_k"] == 3
    table = FeatureArtifact.load(tmp_path / "f").special_table()
    assert table["n_sequences"] == 3 and all(t["n_sequences"] <= 3 for t in table["tokens"])

    info = read_sae_info(world["sae"])
    no_holdout = {**info.extra, "config": {**info.extra["config"], "holdout": 0.0}}
    other = tmp_path / "other_store"
    shutil.copytree(world["store"], other)
    meta_path = other / "store.json"
    store_meta = json.loads(meta_path.read_text())
    store_meta["identity"]["weights"] = "0" * 64
    meta_path.write_text(json.dumps(store_meta))
    bad = [
        ((handmade(world, "d32", d_in=32),), "d_in 32 does not fit"),
        ((handmade(world, "deep", layer=3),), "has no layer 3"),
        ((world["sae"], "--store", other), "another model"),
        ((handmade(world, "noheld", extra=no_holdout),), "held out no sequence"),
        ((world["sae"], "--store", tmp_path / "nowhere"), "store not found"),
    ]
    for args, needle in bad:
        code, err = cli("--sae", *args[:1], "--out", tmp_path / "bad", *args[1:])
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (needle, err)
        assert not (tmp_path / "bad" / "features.json").exists()
    (tmp_path / "a_file").write_text("x")
    code, err = cli("--sae", world["sae"], "--out", tmp_path / "a_file")
    assert code == 2 and "is a file" in err and len(err.strip().splitlines()) == 1, err
    dead = handmade(world, "dead", b_enc=-1e9)
    code, err = cli("--sae", dead, "--out", tmp_path / "dead")
    assert code == 2 and "are dead" in err and len(err.strip().splitlines()) == 1, err
    assert FeatureArtifact.load(tmp_path / "dead").tensors["dead"].all()


def test_an_fp8_store_is_read_with_its_scales(world, tmp_path):
    """The pass decodes an fp8 store's rows with their per-token scales: its maxima are brute force's."""
    fp8 = tiny_harvest(
        tmp_path, world["root"] / "llama", n_chats=12, layers=(LAYER,), dtype="fp8_e4m3", name="fp8"
    )
    run_features(features_cfg(world, "feats-fp8", store=str(fp8), batch_tokens=50))
    got = FeatureArtifact.load(world["root"] / "feats-fp8")
    store, sae = open_store(fp8), load_sae(world["sae"])
    with torch.no_grad():
        acts = np.concatenate(
            [
                sae.encode(torch.from_numpy(store.sequence(s).acts(LAYER))).numpy()
                for s in got.meta["sequences"]
            ]
        )
    assert close(got.tensors["max_act"], acts.max(0).clip(min=0))
