"""`fastsae dashboard`: one self-contained HTML file from a features folder (and judge.jsonl beside it).

The page is interp/templates/dashboard.html rendered by jinja2, its style and script inlined, the data
one JSON document (dashboard_data.py) that the script renders lazily: the feature table a page at a time,
a feature's histogram and contexts only when it is opened. No server, no network: it opens from disk.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from fastsae.atomic import write_atomic
from fastsae.errors import FastSAEError
from fastsae.interp.dashboard_config import DashboardConfig
from fastsae.interp.dashboard_data import (
    DashboardInputError,
    build_data,
    detail_blob,
    load_judge,
    script_json,
)
from fastsae.interp.feature_artifact import FeatureArtifact

TEMPLATES = Path(__file__).parent / "templates"
log = logging.getLogger("fastsae.interp.dashboard")


@dataclass(frozen=True)
class DashboardResult:
    path: Path
    bytes: int
    n_features: int
    n_vocab: int


def store_decoder(art: FeatureArtifact, store_path: str | None):
    """`decode(id) -> str` with the tokenizer of the store the features were read from (or `store_path`)."""
    from fastsae.lm import load_store_tokenizer
    from fastsae.store import open_store

    path = store_path or (art.meta.get("store") or {}).get("path")
    if not path:
        raise DashboardInputError(f"{art.path}: features.json records no store; give --store")
    try:
        tokenizer = load_store_tokenizer(open_store(path))
    except FastSAEError as e:
        hint = "" if store_path else " (the store features.json records; give --store for another)"
        raise DashboardInputError(f"cannot decode tokens with store {path}{hint}: {e}") from e

    def decode(i: int) -> str:
        return tokenizer.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False)

    return decode


def _title(meta: dict) -> str:
    sae = meta.get("sae") or {}
    name = Path(str(sae.get("path") or "SAE")).name
    where = f"layer {sae['layer']}" if sae.get("layer") is not None else sae.get("hook_name") or ""
    model = sae.get("model_name") or (meta.get("store") or {}).get("model") or ""
    return " · ".join(x for x in (name, where, model) if x)


def _chips(meta: dict) -> list[tuple[str, str]]:
    """The header's one-line facts: what was read, how much, what is dead or judged."""
    sae, store = meta.get("sae") or {}, meta.get("store") or {}
    chips = [("arch", sae.get("arch")), ("d_in → d_sae", f"{sae.get('d_in', '?')} → {meta['d_sae']:,}")]
    chips += [("hook", sae.get("hook_name")), ("model", sae.get("model_name") or store.get("model"))]
    if meta.get("n_sequences") is not None:
        chips.append(("read", f"{meta['n_sequences']:,} sequences, {meta.get('n_tokens') or 0:,} tokens"))
    chips.append(("dead", f"{meta['n_dead']:,} of {meta['d_sae']:,}"))
    if meta["n_shown"] < meta["d_sae"]:
        chips.append(("shown", f"{meta['n_shown']:,} features"))
    if meta.get("n_judged"):
        chips.append(("judged", f"{meta['n_judged']:,}"))
        share = (meta.get("judge_summary") or {}).get("share_4_5")
        if isinstance(share, (int, float)):
            chips.append(("score 4–5", f"{100 * share:.0f}%"))
    return [(k, str(v)) for k, v in chips if v not in (None, "")]


def render_html(doc: dict) -> str:
    """The page for a data document (dashboard_data.build_data)."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    meta = doc["meta"]
    return env.get_template("dashboard.html").render(
        title=_title(meta),
        chips=_chips(meta),
        style=(TEMPLATES / "dashboard.css").read_text(),
        script=(TEMPLATES / "dashboard.js").read_text(),
        data=script_json({k: v for k, v in doc.items() if k != "detail"}),
        detail=detail_blob(doc["detail"]),
    )


def run_dashboard(cfg: DashboardConfig, decode=None) -> DashboardResult:
    """Read the features folder, write the page; `decode` defaults to the store's tokenizer."""
    art = FeatureArtifact.load(cfg.feats)
    judged = load_judge(art.path)
    decode = decode or store_decoder(art, cfg.store)
    doc = build_data(art, decode, judged, cfg.max_features)
    html = render_html(doc)
    out = cfg.out_path
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, html.encode())
    result = DashboardResult(out, out.stat().st_size, len(doc["features"]["id"]), len(doc["vocab"]))
    log.info(
        f"wrote {out} ({result.bytes / 1e6:.1f} MB: {result.n_features} features, "
        f"{meta_contexts(doc)} contexts, {result.n_vocab} distinct tokens); open it in a browser, no server needed"
    )
    return result


def meta_contexts(doc: dict) -> int:
    """How many contexts the page holds (top and quantile)."""
    return sum(s.count("/") + 1 for d in doc["detail"] for s in d[1:3] if s)
