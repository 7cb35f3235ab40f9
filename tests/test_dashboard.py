"""`fastsae dashboard`: one self-contained HTML page of a features folder, read back two ways: its embedded
data decoded here against the artifact and the store's tokenizer, and the page itself in headless Chromium
(Debian's /usr/bin/chromium; skipped with the reason when it or playwright is missing)."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from fastsae.cli import app
from fastsae.interp.dashboard_data import ALPHABET, read_detail_blob, sig
from fastsae.interp.feature_artifact import FeatureArtifact
from tests._dashboard_artifacts import harvest_tiny_store, synthetic_artifact, write_judge
from tests._dashboard_browser import Page, browser, why_no_browser

runner = CliRunner()
NO_BROWSER = why_no_browser()
needs_browser = pytest.mark.skipif(NO_BROWSER is not None, reason=f"browser tests: {NO_BROWSER}")
JUDGED = {0: ("newline tokens in code blocks", 4), 3: ("the word 'the' in questions", 2), 8: (None, None)}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return harvest_tiny_store(tmp_path_factory.mktemp("dash_store"))


@pytest.fixture(scope="module")
def tokenizer(store):
    from fastsae.lm import load_store_tokenizer

    return load_store_tokenizer(store)


@pytest.fixture(scope="module")
def feats(store, tmp_path_factory):
    out = synthetic_artifact(tmp_path_factory.mktemp("dash") / "feats", store, d_sae=60)
    write_judge(out, JUDGED)
    r = runner.invoke(app, ["dashboard", str(out)])
    assert r.exit_code == 0, r.output
    assert re.search(r"index\.html \([\d.]+ MB: 60 features", r.output)
    return out


def page_data(html_path) -> dict:
    text = html_path.read_text()
    doc = json.loads(re.search(r'<script type="application/json" id="fs-data">(.*?)</script>', text, re.S)[1])
    doc["detail"] = read_detail_blob(
        re.search(r'<script type="text/plain" id="fs-detail"[^>]*>(.*?)</script>', text, re.S)[1]
    )
    return doc


def decode_contexts(s: str, width: int, window: int) -> list[dict]:
    """The page's context encoding (dashboard_data's module doc), read back, slots outside dropped."""
    out = []
    for c in s.split("/") if s else []:
        head, types, toks, acts = c.split(";")
        seq, pos = map(int, head.split(","))
        values = dict(pair.split(":") for pair in acts.split(",")) if acts else {}
        inside = [j for j, t in enumerate(types) if t != "."]
        out.append(
            dict(
                seq=seq, pos=pos, center=inside.index(window), types=[int(types[j], 36) for j in inside],
                vocab=[sum(ALPHABET.index(toks[j * width + d]) * 64 ** (width - 1 - d) for d in range(width))
                       for j in inside],
                acts=np.array([float(values.get(str(j), 0)) for j in inside]),
            )
        )  # fmt: skip
    return out


def alone(s: str) -> str:
    """What the page shows for a token on its own (chips, lists): leading and trailing spaces visible too."""
    if s == "" or re.fullmatch(" +", s):
        return visible(s)
    return re.sub(r"^ +| +$", lambda m: "·" * len(m[0]), visible(s))


def visible(s: str) -> str:
    """What the page shows for a token's text (whitespace made visible)."""
    if s == "":
        return "∅"
    if re.fullmatch(" +", s):
        return "·" * len(s)
    return s.replace("\r", "␍").replace("\n", "↵").replace("\t", "⇥")


def test_the_page_is_one_file_with_no_outside_resource(feats):
    html = (feats / "index.html").read_text()
    assert not re.search(r"<(script|img|iframe)[^>]*\ssrc=", html)
    assert not re.search(r"<link[^>]*stylesheet", html)
    assert "http://" not in html and "https://" not in html
    assert html.count("<script") == 3  # the data, the contexts' compressed blob, the inline script


def test_the_embedded_contexts_are_the_artifacts(feats, tokenizer):
    art, doc = FeatureArtifact.load(feats), page_data(feats / "index.html")
    assert doc["features"]["id"] == list(range(art.d_sae))
    assert sum(doc["features"]["dead"]) == int(art.tensors["dead"].sum()) > 0
    vocab, vocab_ids, width = doc["vocab"], doc["vocab_ids"], doc["meta"]["tok_width"]
    assert len(set(vocab_ids)) == len(vocab_ids) == len(vocab)  # one entry per distinct id
    for f in range(art.d_sae):
        for kind, s in (("top", doc["detail"][f][1]), ("quantile", doc["detail"][f][2])):
            want, got = art.contexts(f, kind), decode_contexts(s, width, art.window)
            assert len(got) == len(want)
            for w, g in zip(want, got, strict=True):
                assert (g["seq"], g["pos"], g["center"]) == (w.seq, w.pos, w.center)
                assert [vocab_ids[i] for i in g["vocab"]] == w.ids.tolist()
                assert [vocab[i] for i in g["vocab"]] == [tokenizer.decode([int(i)]) for i in w.ids]
                assert g["types"] == w.types.tolist()
                np.testing.assert_allclose(g["acts"], w.acts, rtol=5e-3, atol=0)
    judged = {f: (d, s) for f, d, s in zip(doc["features"]["id"], doc["features"]["desc"], doc["features"]["score"], strict=True)
              if d or s}  # fmt: skip
    assert judged == {f: v for f, v in JUDGED.items() if v != (None, None)}


def decode_logits(s: str) -> dict[str, list[tuple[int, float]]] | None:
    """The page's logit-view encoding (dashboard_data's module doc), read back: side -> [(vocab, value)]."""
    if not s:
        return None
    pos, neg = s.split("/")
    side = lambda t: [(int(v), float(x)) for v, x in (p.split(":") for p in t.split(","))] if t else []  # noqa: E731
    return {"pos": side(pos), "neg": side(neg)}


def test_the_embedded_logit_view_is_the_artifacts(feats, tokenizer):
    art, doc = FeatureArtifact.load(feats), page_data(feats / "index.html")
    assert art.has_logits and doc["meta"]["logits"]["k"] == 10
    vocab, vocab_ids = doc["vocab"], doc["vocab_ids"]
    for f in range(art.d_sae):
        want, got = art.logits(f), decode_logits(doc["detail"][f][3])
        for side in ("pos", "neg"):
            assert [vocab_ids[v] for v, _ in got[side]] == want[f"{side}_ids"].tolist()
            assert [vocab[v] for v, _ in got[side]] == [
                tokenizer.decode([int(i)]) for i in want[f"{side}_ids"]
            ]
            np.testing.assert_allclose([x for _, x in got[side]], want[side], rtol=5e-3, atol=0)


def test_max_features_keeps_the_judged_then_the_live(feats, tmp_path):
    out = tmp_path / "small.html"
    r = runner.invoke(app, ["dashboard", str(feats), "--out", str(out), "--max-features", "10"])
    assert r.exit_code == 0, r.output
    doc, art = page_data(out), FeatureArtifact.load(feats)
    ids = doc["features"]["id"]
    live = [f for f in art.live().tolist() if f not in JUDGED]
    assert ids == sorted(set(JUDGED) | set(live[: 10 - len(JUDGED)]))
    assert doc["meta"]["n_shown"] == 10 and doc["meta"]["d_sae"] == art.d_sae


@pytest.mark.parametrize(
    "args, needle",
    [(["{tmp}"], "not a features folder"), (["{feats}", "--max-features", "0"], "--max-features must be >= 1"),
     (["{feats}", "--store", "{tmp}/nowhere"], "cannot decode tokens with store")],
)  # fmt: skip
def test_bad_input_is_one_line(feats, tmp_path, args, needle):
    out = tmp_path / "x.html"
    args = [a.format(tmp=tmp_path, feats=feats) for a in args]
    r = runner.invoke(app, ["dashboard", *args, "--out", str(out)])
    assert r.exit_code == 2, r.output
    lines = [x for x in r.output.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], r.output
    assert not out.exists()


# ---- in the browser ----


@pytest.fixture(scope="module")
def chromium():
    if NO_BROWSER:
        pytest.skip(f"browser tests: {NO_BROWSER}")
    with browser() as b:
        yield b


@pytest.fixture
def page(chromium, feats):
    p = Page(chromium, feats / "index.html")
    yield p
    assert p.problems() == []
    p.page.close()


def table_ids(p) -> list[int]:
    return [int(x) for x in p.page.eval_on_selector_all("#ftable tbody tr", "rs => rs.map(r => r.dataset.f)")]


@needs_browser
def test_the_table_lists_searches_and_sorts(page, feats):
    art = FeatureArtifact.load(feats)
    pg = page.page
    assert table_ids(page) == list(range(50))
    assert "1–50 of 60 features" in pg.inner_text("#count")
    row0, row8 = pg.inner_text("#ftable tr[data-f='0']"), pg.inner_text("#ftable tr[data-f='8']")
    assert "newline tokens in code blocks" in row0 and "\t4\t" in row0  # the judge's description and score
    assert "unscored" in row8
    pg.click("#next")
    assert table_ids(page) == list(range(50, 60))
    pg.fill("#q", "#17")
    assert table_ids(page) == [17]
    pg.fill("#q", "newline")
    assert table_ids(page) == [0]
    pg.fill("#q", "")
    pg.click("#hidedead")
    assert table_ids(page) == [f for f in art.live().tolist()][:50]
    pg.click("th[data-key='max']")  # descending first
    shown = table_ids(page)
    # ordered by the value it shows (4 significant digits), ties by id
    want = sorted(art.live().tolist(), key=lambda f: (-sig(art.tensors["max_act"][f]), f))[:50]
    assert shown == want
    pg.click("th[data-key='max']")
    assert table_ids(page)[0] == int(
        np.argmin(np.where(art.tensors["dead"] == 1, np.inf, art.tensors["max_act"]))
    )
    pg.select_option("#type", "4")  # assistant-dominated features only
    dom = art.tensors["type_mass"].argmax(1)
    assistant = {f for f in art.live().tolist() if dom[f] == 4}
    assert set(table_ids(page)) == assistant
    pg.select_option("#type", "")
    assert len(table_ids(page)) == min(50, len(art.live()))
    pg.click(".overview a.trow[data-type='4']")  # the overview's bar filters the same way
    assert set(table_ids(page)) == assistant
    assert pg.inner_text(".overview a.trow[data-type='4'] .num") == str(len(assistant))


@needs_browser
def test_a_feature_shows_its_contexts_highlighted(page, feats, tokenizer, tmp_path):
    art = FeatureArtifact.load(feats)
    f = int(art.live()[2])
    page.page.click(f"#ftable tbody tr[data-f='{f}'] td.r")
    page.page.wait_for_selector("#top .ctx")
    assert page.page.evaluate("location.hash") == f"#feature/{f}"
    assert "svg" in page.page.inner_html(".hist") or page.page.query_selector("svg.hist")
    for kind, sel in (("top", "#top .ctx"), ("quantile", "#quantile .ctx")):
        rows = page.page.query_selector_all(sel)
        want = art.contexts(f, kind)
        assert len(rows) == len(want) > 0
        for row, w in zip(rows, want, strict=True):
            toks = row.eval_on_selector_all(
                ".tok", "ts => ts.map(t => [+t.dataset.id, t.textContent, t.dataset.v || null, t.classList.contains('ctr')])"
            )  # fmt: skip
            assert [t[0] for t in toks] == w.ids.tolist()
            assert [t[1] for t in toks] == [visible(tokenizer.decode([int(i)])) for i in w.ids]
            on = [(k, float(t[2])) for k, t in enumerate(toks) if t[2] is not None]
            assert [k for k, _ in on] == np.flatnonzero(w.acts > 0).tolist()
            np.testing.assert_allclose([v for _, v in on], w.acts[w.acts > 0], rtol=5e-3)
            assert [k for k, t in enumerate(toks) if t[3]] == [w.center]
    page.page.hover("#top .ctx .tok.ctr")
    tip = page.page.inner_text("#tip")
    c = art.contexts(f, "top")[0]
    assert f"id{int(c.ids[c.center])}" in tip.replace(" ", "").replace("\n", "")
    assert "activating token" in tip
    png = tmp_path / "feature.png"
    page.page.screenshot(path=str(png), full_page=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def logit_rows(p, side: str) -> list[tuple[int, str, float]]:
    """(token id, shown text, value) of each row of a feature page's logit list."""
    rows = p.eval_on_selector_all(
        f"#logits-{side} .lrow", "rs => rs.map(r => [+r.dataset.id, r.querySelector('.tk').textContent, r.dataset.v])"
    )  # fmt: skip
    return [(i, t, float(v)) for i, t, v in rows]


@needs_browser
def test_a_feature_page_shows_its_logit_view(page, feats, tokenizer):
    art = FeatureArtifact.load(feats)
    for f in (int(art.live()[0]), int(np.flatnonzero(art.tensors["dead"])[0])):  # a dead one has one too
        page.page.evaluate(f"location.hash = '#feature/{f}'")
        page.page.wait_for_selector("#logits")
        want = art.logits(f)
        for side in ("pos", "neg"):
            rows = logit_rows(page.page, side)
            assert [r[0] for r in rows] == want[f"{side}_ids"].tolist()
            assert [r[1] for r in rows] == [alone(tokenizer.decode([int(i)])) for i in want[f"{side}_ids"]]
            np.testing.assert_allclose([r[2] for r in rows], want[side], rtol=5e-3)
        shown = page.page.inner_text("#logits-neg .lrow .num")
        assert shown.startswith("-") and page.page.inner_text("#logits-pos .lrow .num").startswith("+")


@pytest.fixture(scope="module")
def without_logits(store, tmp_path_factory):
    """Features folders without a logit view, each with its page: one written before it existed (version 1)
    and one of `fastsae features --no-logits` (tests/test_feature_logits.py checks that flag's artifact)."""
    old = synthetic_artifact(
        tmp_path_factory.mktemp("dash_v1") / "feats", store, d_sae=20, logits=False, version=1
    )
    from fastsae.interp.features import run_features
    from fastsae.interp.features_config import FeaturesConfig
    from tests._worlds import tiny_train

    root = tmp_path_factory.mktemp("dash_nolog")
    sae = tiny_train(store, root / "sae", layer=1, arch=("topk",), k=(8,), tokens=64 * 10)[0]
    run_features(FeaturesConfig(sae=str(sae), out=str(root / "feats"), top_k=3, window=2, n_quantile=2,
                                logits=False, progress=False, device="cpu"))  # fmt: skip
    for out in (old, root / "feats"):
        r = runner.invoke(app, ["dashboard", str(out)])
        assert r.exit_code == 0, r.output
    return [old, root / "feats"]


def test_a_folder_without_a_logit_view_has_none_in_its_page(without_logits):
    for feats in without_logits:
        art, doc = FeatureArtifact.load(feats), page_data(feats / "index.html")
        assert not art.has_logits and doc["meta"]["logits"] is None
        assert all(d[3] == "" for d in doc["detail"])
    assert FeatureArtifact.load(without_logits[0]).meta["version"] == 1


@needs_browser
def test_a_page_without_a_logit_view_renders(chromium, without_logits):
    for feats in without_logits:
        art = FeatureArtifact.load(feats)
        p = Page(chromium, feats / "index.html")
        f = int(art.live()[0])
        p.page.evaluate(f"location.hash = '#feature/{f}'")
        p.page.wait_for_selector("#top .ctx")
        assert p.page.query_selector("#logits") is None and p.page.query_selector("svg.hist")
        assert len(p.page.query_selector_all("#top .ctx")) == len(art.contexts(f, "top"))
        assert p.problems() == []
        p.page.close()


@needs_browser
def test_the_special_token_page(page, feats, tmp_path):
    table = FeatureArtifact.load(feats).special_table()
    page.page.click(".tabs a[data-tab='special']")
    rows = page.page.query_selector_all("#stable tbody tr")
    assert len(rows) == len(table["tokens"]) > 0
    first = table["tokens"][0]
    chips = rows[0].eval_on_selector_all(".fchip .f", "cs => cs.map(c => c.textContent)")
    assert chips == [f"#{t['feature']}" for t in first["top"]]
    rows[0].query_selector("a.fchip").click()
    assert page.page.evaluate("location.hash") == f"#feature/{first['top'][0]['feature']}"
    png = tmp_path / "special.png"
    page.page.evaluate("location.hash = '#special'")
    page.page.screenshot(path=str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def real_feats(store, tmp_path_factory):
    """`fastsae features` itself, over a tiny SAE trained on the store, then `fastsae dashboard`."""
    from fastsae.interp.features import run_features
    from fastsae.interp.features_config import FeaturesConfig
    from tests._worlds import tiny_train

    root = tmp_path_factory.mktemp("dash_real")
    saes = tiny_train(store, root / "sae", layer=1, arch=("topk",), k=(8,), tokens=64 * 30)
    out = root / "feats"
    run_features(FeaturesConfig(sae=str(saes[0]), out=str(out), top_k=5, window=4, n_quantile=4,
                                progress=False, device="cpu"))  # fmt: skip
    r = runner.invoke(app, ["dashboard", str(out)])
    assert r.exit_code == 0, r.output
    return out


@needs_browser
def test_the_page_of_a_real_features_run(chromium, real_feats):
    art = FeatureArtifact.load(real_feats)
    p = Page(chromium, real_feats / "index.html")
    assert f"of {art.d_sae:,} features" in p.page.inner_text("#count")
    f = int(art.live()[np.argmax(art.tensors["max_act"][art.live()])])  # its strongest feature
    p.page.fill("#q", f"#{f}")
    p.page.click(f"#ftable tbody tr[data-f='{f}'] td.r")
    p.page.wait_for_selector("#top .ctx")
    for row, w in zip(p.page.query_selector_all("#top .ctx"), art.contexts(f, "top"), strict=True):
        toks = row.eval_on_selector_all(".tok", "ts => ts.map(t => [+t.dataset.id, t.dataset.v || null])")
        assert [t[0] for t in toks] == w.ids.tolist()
        np.testing.assert_allclose([float(t[1] or 0) for t in toks], w.acts, rtol=5e-3)
    assert art.has_logits  # features' default: the store's model's logit view
    for side in ("pos", "neg"):
        assert [r[0] for r in logit_rows(p.page, side)] == art.logits(f)[f"{side}_ids"].tolist()
    p.page.click(".tabs a[data-tab='special']")
    assert len(p.page.query_selector_all("#stable tbody tr")) == len(art.special_table()["tokens"])
    assert p.problems() == []


@pytest.mark.slow  # builds, renders and loads a 4,608-feature page
@needs_browser
def test_4608_features_by_20_contexts_load_and_open(chromium, store, tmp_path):
    """The size the issue asks for (the demo SAE's d_sae; features' default top-k, quantiles and window)."""
    feats = synthetic_artifact(
        tmp_path / "big", store, d_sae=4608, top_k=20, n_quantile=10, window=16, seed=1
    )
    t0 = time.perf_counter()
    r = runner.invoke(app, ["dashboard", str(feats)])
    render_s = time.perf_counter() - t0
    assert r.exit_code == 0, r.output
    size = (feats / "index.html").stat().st_size
    print(f"\n4608 x (20 + 10) contexts, window 16: {size / 1e6:.1f} MB, rendered in {render_s:.1f} s")
    assert size < 20e6
    t0 = time.perf_counter()
    p = Page(chromium, feats / "index.html")
    load_s = time.perf_counter() - t0
    assert "of 4,608 features" in p.page.inner_text("#count")
    p.page.click("#ftable tbody tr[data-f='0'] td.r")
    p.page.wait_for_selector("#top .ctx")
    assert len(p.page.query_selector_all("#top .ctx")) == len(FeatureArtifact.load(feats).contexts(0, "top"))
    ready_ms = int(p.page.get_attribute("body", "data-ready-ms"))
    print(f"loaded in the browser in {load_s:.1f} s (the page ready {ready_ms} ms after navigation start)")
    assert load_s < 30 and p.problems() == []
