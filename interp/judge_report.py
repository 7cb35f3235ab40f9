"""The judge's files beside the artifact: judge.jsonl (one row per judged feature), judge_summary.json (config,
counts, score distribution, share scoring 4-5, mean detection accuracy), judge_scores.png (the score
distribution and its CDF, the paper's Figure 5), and the markdown summary printed at the end.

A judge.jsonl row: `feature`; `description` and `score` (1-5), or null; `status` "scored" or "unscored" and
`reason` (why not: "unparseable: ...", "request failed: ...", "not asked: ..."); `detection_accuracy`,
`detection_f1` (null when not scored) and `detection_n` (examples answered); `detection`: those with
precision, recall, tp/tn/fp/fn, n_activating, n_non_activating, n_unanswered, its own status and reason.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

from fastsae.atomic import atomic_path, write_atomic, write_json_atomic
from fastsae.interp.feature_artifact import FeatureArtifact
from fastsae.interp.judge_config import JudgeConfig

FORMAT, VERSION = "fastsae-judge", 1
ROWS_FILE, SUMMARY_FILE, PLOT_FILE = "judge.jsonl", "judge_summary.json", "judge_scores.png"
SCORES = (1, 2, 3, 4, 5)


def _reason_kind(reason: str | None) -> str:
    return (reason or "").split(":", 1)[0] or "unknown"


def summarize(
    art: FeatureArtifact, cfg: JudgeConfig, rows: list[dict], stats: dict, gave_up: str | None, eligible: int
) -> dict:
    scores = [r["score"] for r in rows if r["status"] == "scored"]
    dist = Counter(scores)
    detected = [r for r in rows if r["detection_accuracy"] is not None]
    unscored = Counter(_reason_kind(r["reason"]) for r in rows if r["status"] != "scored")
    return {
        "format": FORMAT,
        "version": VERSION,
        "config": cfg.to_json(),  # the key's variable name only, never its value
        "features_folder": str(art.path),
        "sae": (art.meta.get("sae") or {}).get("path"),
        "store": (art.meta.get("store") or {}).get("path"),
        "counts": {
            "d_sae": art.d_sae,
            "live": int(len(art.live())),
            "eligible": int(eligible),
            "sampled": len(rows),
            "scored": len(scores),
            "unscored": len(rows) - len(scores),
            "detection_scored": len(detected),
        },
        "unscored_reasons": dict(unscored),
        "score_distribution": {str(s): dist.get(s, 0) for s in SCORES},
        "share_4_5": (dist[4] + dist[5]) / len(scores) if scores else None,
        "mean_score": float(np.mean(scores)) if scores else None,
        "detection": {
            "features": len(detected),
            "mean_accuracy": float(np.mean([r["detection_accuracy"] for r in detected]))
            if detected
            else None,
            "mean_f1": float(np.mean([r["detection_f1"] for r in detected])) if detected else None,
        },
        "requests": dict(stats),
        "gave_up": gave_up,
    }


def plot_scores(path, rows: list[dict]) -> None:
    """Bars: features per score; line: the share of features scoring at most s (the CDF)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = np.array([r["score"] for r in rows if r["status"] == "scored"], dtype=np.int64)
    counts = np.array([(scores == s).sum() for s in SCORES])
    fig, (ax, cx) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax.bar(SCORES, counts, color="#4c72b0")
    ax.set(xlabel="monosemanticity score", ylabel="features", title=f"score distribution (n={len(scores)})")
    ax.set_xticks(SCORES)
    cdf = np.cumsum(counts) / max(1, len(scores))
    cx.step([0, *SCORES], [0, *cdf], where="post", color="#dd8452")
    cx.set(xlabel="monosemanticity score", ylabel="share of features with score <= s", title="CDF")
    cx.set_xticks(SCORES)
    cx.set_xlim(0.5, 5.5)
    cx.set_ylim(0, 1.02)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def markdown(summary: dict) -> str:
    c, d = summary["counts"], summary["detection"]

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}%"

    def num(x):
        return "-" if x is None else f"{x:.3f}"

    lines = [
        f"# Judge: {summary['config']['model']}",
        "",
        f"{c['sampled']} features sampled of {c['eligible']} eligible ({c['live']} live of {c['d_sae']}); "
        f"{c['scored']} scored, {c['unscored']} unscored.",
        "",
        "| score | features |",
        "|---|---|",
        *(f"| {s} | {n} |" for s, n in summary["score_distribution"].items()),
        "",
        f"- share scoring 4-5: {pct(summary['share_4_5'])}",
        f"- mean score: {num(summary['mean_score'])}",
        f"- detection ({d['features']} features): mean accuracy {num(d['mean_accuracy'])}, "
        f"mean F1 {num(d['mean_f1'])}",
    ]
    if summary["unscored_reasons"]:
        why = ", ".join(f"{k}: {n}" for k, n in sorted(summary["unscored_reasons"].items()))
        lines.append(f"- unscored: {why}")
    if summary["gave_up"]:
        lines.append(f"- stopped: {summary['gave_up']}")
    return "\n".join(lines) + "\n"


def write_outputs(
    art: FeatureArtifact,
    cfg: JudgeConfig,
    rows: list[dict],
    stats: dict,
    gave_up: str | None,
    *,
    eligible: int,
) -> dict:
    rows = sorted(rows, key=lambda r: r["feature"])
    write_atomic(art.path / ROWS_FILE, "".join(json.dumps(r) + "\n" for r in rows))
    summary = summarize(art, cfg, rows, stats, gave_up, eligible)
    write_json_atomic(art.path / SUMMARY_FILE, summary)
    plot_scores(art.path / PLOT_FILE, rows)
    return summary


def print_summary(summary: dict, console) -> None:
    from rich.markdown import Markdown

    console.print(Markdown(markdown(summary)))
