"""`fastsae judge` against the loopback OpenAI-compatible server (tests/_openai_server.py).

The world: a real store (tiny Qwen2 tokenizer, sentences of its training text, 16-dim activations in
which dimension j is non-zero exactly on the j-th most frequent token), a real standard SAE whose feature j
reads dimension j (features 0-5 fire on one token each, 6-15 never), and the features artifact computed
from both by brute force and written with write_artifact (interp/FEATURES.md's format). The scripted judge
answers as a careful reader would: it names the marked token, and in detection says 1 where that token's
text appears.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fastsae.cli import app
from fastsae.interp.feature_artifact import OUTSIDE_TYPE, write_artifact
from fastsae.interp.judge_detect import Example, detection_metrics
from fastsae.interp.judge_prompts import detection_parser, parse_explanation
from fastsae.saes import SAESpec, SparseAutoencoder, save_sae
from fastsae.store import ShardWriter, TokenType, open_store
from tests._openai_server import OpenAIServer, Reply, refuse

runner = CliRunner()
D, F, LAYER, LIVE = 16, 16, 2, 6
K, Q, W = 8, 6, 3
DETECTION = 4  # held-out activating texts per feature (and as many non-activating): 2 prompts of <= 5
KEY = "sk-judge-test-key-0123456789"


def _artifact(root, store, sae_path, sae) -> None:
    """features.json + features.safetensors of every token of the store, exactly (no streaming)."""
    seqs = list(store)
    ids = np.concatenate([np.asarray(s.token_ids) for s in seqs])
    types = np.concatenate([np.asarray(s.token_types) for s in seqs])
    x = np.concatenate([np.asarray(s.acts(LAYER)) for s in seqs])
    with torch.no_grad():
        A = sae.encode(torch.from_numpy(x)).numpy()  # [T, F]
    seq_of = np.concatenate([np.full(len(s), s.index) for s in seqs])
    pos_of = np.concatenate([np.arange(len(s)) for s in seqs])
    start = np.cumsum([0] + [len(s) for s in seqs])
    edges = np.geomspace(1e-3, 1e2, 11)
    t = {"density": (A > 0).mean(0), "max_act": A.max(0), "dead": (A.max(0) <= 0).astype(np.uint8)}
    fires = A > 0
    t["mean_act"] = np.where(fires.any(0), (A * fires).sum(0) / np.maximum(fires.sum(0), 1), 0).astype(
        np.float32
    )
    t["hist_counts"] = np.stack(
        [np.histogram(np.clip(A[fires[:, f], f], edges[0], edges[-1]), edges)[0] for f in range(F)]
    )
    mass = np.stack([A[types == k].sum(0) for k in range(len(TokenType))], 1)
    t["type_mass"] = mass / np.maximum(mass.sum(1, keepdims=True), 1e-30)
    C = 2 * W + 1
    for p, n in (("top", K), ("q", Q)):
        t.update({f"{p}_act": np.zeros((F, n), np.float32), f"{p}_seq": np.full((F, n), -1, np.int64),
                  f"{p}_pos": np.full((F, n), -1, np.int32), f"{p}_ids": np.full((F, n, C), -1, np.int32),
                  f"{p}_types": np.full((F, n, C), OUTSIDE_TYPE, np.uint8),
                  f"{p}_acts": np.zeros((F, n, C), np.float32)})  # fmt: skip
    for f in range(F):
        rows = np.flatnonzero(fires[:, f])
        if not len(rows):
            continue
        by_act = rows[np.argsort(-A[rows, f], kind="stable")]
        picks = {
            "top": by_act[:K],
            "q": by_act[::-1][np.unique(np.linspace(0, len(rows) - 1, Q).round().astype(int))],
        }
        for p, chosen in picks.items():
            for j, r in enumerate(chosen):
                s, q = seq_of[r], pos_of[r]
                t[f"{p}_act"][f, j], t[f"{p}_seq"][f, j], t[f"{p}_pos"][f, j] = A[r, f], s, q
                for c in range(C):
                    at = q - W + c
                    if 0 <= at < start[s + 1] - start[s]:
                        g = start[s] + at
                        t[f"{p}_ids"][f, j, c], t[f"{p}_types"][f, j, c] = ids[g], types[g]
                        t[f"{p}_acts"][f, j, c] = A[g, f]
    meta = {
        "sae": {"path": str(sae_path), "arch": "standard", "d_in": D, "d_sae": F, "layer": LAYER,
                "hook_name": f"blocks.{LAYER}.hook_resid_post", "model_name": "tiny-qwen2"},
        "store": {"path": str(store.path), "fingerprint": store.fingerprint, "model": "tiny-qwen2"},
        "config": {}, "n_sequences": len(seqs), "n_tokens": len(ids),
        "token_types": {str(int(k)): k.name.lower() for k in TokenType}, "window": W, "top_k": K,
        "n_quantile": Q, "hist_edges": edges.tolist(), "n_dead": int(t["dead"].sum()),
        "sequences": [s.index for s in seqs],
    }  # fmt: skip
    write_artifact(root, meta, t)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from tests._tiny_tokenizers import _CORPUS, qwen2_tokenizer

    root = tmp_path_factory.mktemp("judge")
    tok = qwen2_tokenizer()
    tok.save_pretrained(root / "tok")
    lines = [line for line in _CORPUS.splitlines() if line.strip()] * 2  # each token twice as often
    seqs = [np.asarray(tok(line)["input_ids"], dtype=np.int32) for line in lines]
    counts = Counter(np.concatenate(seqs).tolist())
    targets = [t for t, c in counts.most_common() if c >= Q + 5][:LIVE]
    assert len(targets) == LIVE
    rng = np.random.default_rng(0)
    meta = {"model": {"name": "tiny-qwen2", "source": {"kind": "folder", "path": str(root / "tok")}},
            "tokenizer": {"vocab_size": len(tok)}}  # fmt: skip
    with ShardWriter(
        root / "store", writer=0, seq=0, first_sequence=0, layers=[LAYER], d_model=D, meta=meta
    ) as w:
        for i, s in enumerate(seqs):
            x = np.zeros((len(s), D), np.float32)
            x[:, 8:] = rng.standard_normal((len(s), D - 8))
            for j, t in enumerate(targets):
                x[s == t, j] = 1.0 + rng.uniform(0, 2, (s == t).sum())
            types = np.full(len(s), int(TokenType.ASSISTANT), np.uint8)
            w.append(token_ids=s, token_types=types, acts={LAYER: x}, source=(0, i))
    store = open_store(root / "store")
    sae = SparseAutoencoder(SAESpec("standard", D, F))
    with torch.no_grad():
        sae.W_enc.copy_(torch.diag(torch.tensor([1.0] * 8 + [0.0] * 8)))
        sae.b_enc.copy_(torch.tensor([-0.5] * 8 + [-1.0] * 8))
        sae.W_dec.copy_(torch.eye(F, D))
        sae.b_dec.zero_()
    save_sae(
        sae, root / "sae", hook_name=f"blocks.{LAYER}.hook_resid_post", model_name="tiny-qwen2", extra={}
    )
    _artifact(root / "feats", store, root / "sae", sae)
    return {"root": root, "feats": root / "feats", "targets": targets, "tok": tok}


@pytest.fixture
def feats(world, tmp_path):
    """A fresh copy of the features folder per test (the judge writes into it)."""
    return shutil.copytree(world["feats"], tmp_path / "feats")


def good_judge(request) -> str:
    text = request.last_user
    if text.startswith("Feature "):
        marked = Counter(re.findall(r"<<(.*?)>>", text))
        token = marked.most_common(1)[0][0]
        return json.dumps({"description": f"the token «{token}»", "score": 5 if len(marked) == 1 else 3})
    token = re.search(r"«(.*?)»", text).group(1)
    return json.dumps([int(token in e) for e in re.findall(r"^Example \d+: (.*)$", text, re.M)])


def judge(feats, url, *extra, env=None):
    args = ["judge", str(feats), "--endpoint", url, "--model", "judge-model", "--seed", "0"]
    args += ["--detection", str(DETECTION), "--no-progress", "--concurrency", "2", *extra]
    return runner.invoke(app, args, env=env)


def rows(feats) -> list[dict]:
    return [json.loads(line) for line in (feats / "judge.jsonl").read_text().splitlines()]


PER_FEATURE = 1 + 2  # the explanation and two detection prompts (8 examples, 5 per prompt)


def test_good_path_scores_detects_and_a_rerun_asks_nothing(feats, world):
    with OpenAIServer(respond=good_judge) as server:
        r = judge(feats, server.url, "--api-key-env", "JUDGE_TEST_KEY", env={"JUDGE_TEST_KEY": KEY})
        assert r.exit_code == 0, r.output
        assert server.count == LIVE * PER_FEATURE
        assert all(q.headers["authorization"] == f"Bearer {KEY}" for q in server.requests)
        first = rows(feats)
        assert [row["feature"] for row in first] == list(range(LIVE))  # the dead ones are never sampled
        decoded = {world["tok"].decode([t]) for t in world["targets"]}
        for row in first:
            assert row["status"] == "scored" and row["score"] in (3, 5), row
            assert re.search(r"«(.*?)»", row["description"]).group(1).replace("\\n", "\n") in decoded
            det = row["detection"]
            assert det["n_activating"] == DETECTION and det["n_non_activating"] == DETECTION
            assert det["n"] == 2 * DETECTION == row["detection_n"] and det["n_unanswered"] == 0
            assert det["recall"] == 1.0  # every held-out activating text holds the token
        summary = json.loads((feats / "judge_summary.json").read_text())
        assert summary["counts"]["scored"] == LIVE and summary["counts"]["eligible"] == LIVE
        dist = summary["score_distribution"]
        assert sum(dist.values()) == LIVE and summary["share_4_5"] == dist["5"] / LIVE
        assert summary["detection"]["features"] == LIVE and summary["detection"]["mean_accuracy"] > 0.75
        assert (feats / "judge_scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "share scoring 4-5" in r.stdout
        # the same run again: every answer comes from judge_cache/
        r = judge(feats, server.url)
        assert r.exit_code == 0, r.output
        assert server.count == LIVE * PER_FEATURE and rows(feats) == first
    written = [p for p in feats.rglob("*") if p.is_file()]
    assert any(p.parent.name == "judge_cache" for p in written)
    assert all(KEY.encode() not in p.read_bytes() for p in written) and KEY not in r.output


def test_garbage_is_reasked_then_unscored(feats):
    def judge_with_a_mute_feature(request):
        if request.last_user.startswith("Feature 2:"):
            return "Sure! This feature seems to be about punctuation, I'd give it a 4."
        return good_judge(request)

    with OpenAIServer(respond=judge_with_a_mute_feature) as server:
        server.push(Reply("```json\nnot json\n```"))  # one garbled answer first: re-asked, then fine
        r = judge(feats, server.url, "--parse-retries", "2", "--concurrency", "1")
        assert r.exit_code == 0, r.output
        # feature 2 asked 3 times (no detection without a description), feature 0 once more
        assert server.count == (LIVE - 1) * PER_FEATURE + 3 + 1
    by = {row["feature"]: row for row in rows(feats)}
    assert by[2]["status"] == "unscored" and by[2]["score"] is None and by[2]["description"] is None
    assert by[2]["reason"].startswith("unparseable: not JSON") and by[2]["detection"] is None
    assert all(by[f]["status"] == "scored" for f in by if f != 2)
    summary = json.loads((feats / "judge_summary.json").read_text())
    assert summary["counts"]["unscored"] == 1 and summary["unscored_reasons"] == {"unparseable": 1}


def test_timeouts_rate_limits_and_server_errors_are_retried(feats):
    with OpenAIServer(respond=good_judge) as server:
        server.push(Reply.error(429, retry_after=0.01), Reply.error(500), Reply.slow(1.5, "late"))
        r = judge(feats, server.url, "--timeout", "0.5", "--max-retries", "3", "--concurrency", "1")
        assert r.exit_code == 0, r.output
        assert server.count == LIVE * PER_FEATURE + 3
    assert all(row["status"] == "scored" for row in rows(feats))


def test_a_refusing_endpoint_stops_keeps_what_was_scored_and_a_resume_asks_the_rest(feats):
    answered = PER_FEATURE * 2  # two features' questions, then it refuses everything

    def flaky(request):
        return good_judge(request) if server.count <= answered else refuse(request)

    with OpenAIServer(respond=flaky) as server:
        r = judge(feats, server.url, "--max-failures", "3", "--concurrency", "1")
        assert server.count == answered + 3
    assert r.exit_code == 2, r.output
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "failed 3 requests in a row" in errors[0] and "kept 2 scored" in errors[0]
    assert "403" in errors[0] and "Traceback" not in r.output
    first = rows(feats)
    assert [row["status"] for row in first].count("scored") == 2 and len(first) == LIVE
    assert {row["reason"].split(":")[0] for row in first if row["status"] != "scored"} <= {
        "request failed",
        "not asked",
    }
    with OpenAIServer(respond=good_judge) as server:
        r = judge(feats, server.url)
        assert r.exit_code == 0, r.output
        assert server.count == (LIVE - 2) * PER_FEATURE  # only what was not answered before
    assert all(row["status"] == "scored" for row in rows(feats))


def test_an_interrupted_run_keeps_its_answers_and_a_resume_asks_only_the_missing_ones(feats):
    import os
    import signal

    def interrupting(request):
        if server.count == 4:  # Ctrl-C while the fourth answer is on its way
            os.kill(os.getpid(), signal.SIGINT)
        return good_judge(request)

    with OpenAIServer(respond=interrupting) as server:
        r = judge(feats, server.url, "--concurrency", "1")
        asked = server.count
    assert r.exit_code == 130, r.output
    first = rows(feats)
    assert len(first) == LIVE and any(row["reason"] == "not asked: the run was interrupted" for row in first)
    assert asked < LIVE * PER_FEATURE
    with OpenAIServer(respond=good_judge) as server:
        r = judge(feats, server.url)
        assert r.exit_code == 0, r.output
        assert server.count == LIVE * PER_FEATURE - asked
    assert all(row["status"] == "scored" for row in rows(feats))


def test_no_live_feature_is_one_line_before_any_request(tmp_path, world):
    from fastsae.interp.feature_artifact import FeatureArtifact

    art = FeatureArtifact.load(world["feats"])
    tensors = {k: v.copy() for k, v in art.tensors.items()}
    tensors["dead"][:] = 1
    write_artifact(
        tmp_path / "dead", {k: v for k, v in art.meta.items() if k not in ("format", "version")}, tensors
    )
    with OpenAIServer(respond=good_judge) as server:
        r = judge(tmp_path / "dead", server.url)
        assert server.count == 0
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert "no feature to judge: none of the 0 live features (of 16)" in r.stderr
    shutil.rmtree(tmp_path / "dead")
    r = judge(tmp_path / "nothing", "http://127.0.0.1:9/v1")
    assert r.exit_code == 2 and "not a features folder" in r.stderr


def test_a_missing_sae_or_a_bad_endpoint_is_one_line_and_detection_0_needs_no_sae(tmp_path, world):
    from fastsae.interp.feature_artifact import FeatureArtifact

    art = FeatureArtifact.load(world["feats"])
    meta = {k: v for k, v in art.meta.items() if k not in ("format", "version")}
    meta["sae"] = {**meta["sae"], "path": str(tmp_path / "gone")}
    write_artifact(tmp_path / "moved", meta, art.tensors)
    with OpenAIServer(respond=good_judge) as server:
        r = judge(tmp_path / "moved", server.url)
        assert r.exit_code == 2 and server.count == 0 and r.stderr.count("\n") == 1
        assert "its SAE" in r.stderr and "--detection 0 skips detection" in r.stderr
        r = judge(tmp_path / "moved", "localhost:8000/v1")
        assert r.exit_code == 2 and "expected an http:// or https:// URL" in r.stderr
        r = judge(tmp_path / "moved", server.url, "--detection", "0")
        assert r.exit_code == 0, r.output
        assert server.count == LIVE  # the explanations only
    assert all(row["status"] == "scored" and row["detection"] is None for row in rows(tmp_path / "moved"))


def test_parsers_are_strict():
    assert parse_explanation('```json\n{"description": "commas", "score": 4}\n```') == ("commas", 4)
    assert parse_explanation(' {"description": "a  b\\n c", "score": 1} ') == ("a b c", 1)
    for bad in ('{"description": "x", "score": 6}', '{"description": "x", "score": 4.0}',
                '{"description": "", "score": 3}', '{"description": "x", "score": true}',
                'The description is x, score 4', '["x", 4]'):  # fmt: skip
        with pytest.raises(ValueError):
            parse_explanation(bad)
    parse = detection_parser(3)
    assert parse("[1, 0, 1]") == [1, 0, 1] and parse("```\n[true, false, false]\n```") == [1, 0, 0]
    for bad in ("[1, 0]", "[1, 0, 2]", "[1, 0, 0.5]", "1, 0, 1", '{"answers": [1, 0, 1]}'):
        with pytest.raises(ValueError):
            parse(bad)


def test_detection_metrics_as_delphi():
    ex = [Example("a", True)] * 4 + [Example("b", False)] * 6
    always = detection_metrics(ex, [1] * 10)
    assert always["recall"] == 1 and always["accuracy"] == 0.5 and always["fp"] == 6
    assert always["f1"] == pytest.approx(2 * 0.4 / 1.4)
    perfect = detection_metrics(ex, [1] * 4 + [0] * 6)
    assert perfect["accuracy"] == perfect["f1"] == 1.0
    half = detection_metrics(ex, [None] * 5 + [0] * 5)  # unanswered examples are left out
    assert half["n"] == 5 and half["n_unanswered"] == 5 and half["n_activating"] == 0
    assert half["accuracy"] == 1.0 and half["f1"] == 0.0
    assert detection_metrics(ex, [None] * 10)["accuracy"] is None
