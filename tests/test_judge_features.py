"""End to end: `fastsae features` over the judge tests' store and SAE, then `fastsae judge` on its folder.

The features pass and the brute-force artifact of tests/test_judge.py read the same tokens with the same
SAE: the judge must be shown the same five top contexts, so the scripted judge gives the same answers."""

from __future__ import annotations

import json
import shutil

from fastsae.cli import app
from tests._openai_server import OpenAIServer
from tests.test_judge import DETECTION, LIVE, PER_FEATURE, K, Q, W, good_judge, judge, rows, runner, world  # noqa: F401


def test_features_then_judge(world, tmp_path):  # noqa: F811
    out = tmp_path / "feats"
    r = runner.invoke(
        app,
        ["features", "--sae", str(world["root"] / "sae"), "--store", str(world["root"] / "store"),
         "--out", str(out), "--top-k", str(K), "--window", str(W), "--n-quantile", str(Q),
         "--device", "cpu", "--no-progress", "--no-logits"],  # its world's model is not loadable
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    with OpenAIServer(respond=good_judge) as server:
        r = judge(out, server.url)
        assert r.exit_code == 0, r.output
        assert server.count == LIVE * PER_FEATURE
        brute = world["root"] / "brute"
        shutil.copytree(world["feats"], brute, dirs_exist_ok=True)
        assert judge(brute, server.url).exit_code == 0
    ours, theirs = rows(out), rows(brute)
    assert [(r["feature"], r["description"], r["score"]) for r in ours] == [
        (r["feature"], r["description"], r["score"]) for r in theirs
    ]
    assert all(r["status"] == "scored" and r["detection_n"] == 2 * DETECTION for r in ours)
    summary = json.loads((out / "judge_summary.json").read_text())
    assert summary["counts"]["scored"] == LIVE and summary["store"] == str(world["root"] / "store")
