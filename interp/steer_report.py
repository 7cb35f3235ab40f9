"""`fastsae steer`'s outputs: steer.json (everything), steer.jsonl (one line per prompt and α), steer.md (the
measures per α, the sweet spot, then α -> response per prompt) and steer.png (each measure against α)."""

from __future__ import annotations

import json
from pathlib import Path

from fastsae.atomic import atomic_path, write_atomic, write_json_atomic
from fastsae.interp.steer_measures import DISTINCT_N, REPEAT_SLACK

LABELS = {
    "perplexity": "perplexity (unsteered model)", "judge_score": "judge score (0-2)",
    "n_tokens": "response tokens", "distinct_3": f"distinct {DISTINCT_N}-gram share",
    "script_switch": "letters in another script", "hit_limit": "share hitting the token limit",
}  # fmt: skip
BEATS = {
    "judge_score": "a prompt wins when its judge score is above the unsteered response's, loses when below",
    "perplexity": (
        "a prompt wins when its perplexity is below the unsteered response's and its distinct "
        f"{DISTINCT_N}-gram share is not lower by more than {REPEAT_SLACK}; it loses when its perplexity is "
        "higher or its repetition got worse by more than that"
    ),
}


def alpha_label(point: dict) -> str:
    return "unsteered" if point["alpha"] is None else f"{point['alpha']:g}"


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\r", "").replace("\n", "<br>") or "*(empty)*"


def sweet_spot_line(summary: dict) -> str:
    runs = summary["sweet_spot"]
    what = "judge score" if summary["measure"] == "judge_score" else "perplexity"
    if not runs:
        return f"Sweet spot (by {what}): none: no swept α beats the unsteered responses."
    spans = ", ".join(f"α = {lo:g}" if lo == hi else f"α ∈ [{lo:g}, {hi:g}]" for lo, hi in runs)
    return f"Sweet spot (by {what}): {spans}."


def markdown(doc: dict) -> str:
    s, summary = doc["sae"], doc["summary"]
    feats = "; ".join(
        f"{f['id']} × {f['coef']:g} (‖W_dec‖ {f['decoder_norm']:.3g}; {f['origin']})" for f in doc["features"]
    )
    dec = doc["decoding"]
    decoding = (
        "greedy"
        if dec["greedy"]
        else f"sampled (T {dec['temperature']:g}, top-p {dec['top_p']:g}, seed {dec['seed']})"
    )
    lines = [
        "# fastsae steer",
        "",
        f"SAE {s['path']} ({s['arch']}, d_sae {s['d_sae']}, after block {s['layer']}) on model {doc['model']['name']}.",
        f"Method **{doc['method']}** at positions **{doc['positions']}**; features: {feats}.",
        f"Median residual norm after block {s['layer']} over the prompts: {doc['residual_norm']:.3g}; "
        f"‖Σ coef·W_dec‖ = {doc['direction_norm']:.3g} (add puts α times that vector in).",
        f"{len(doc['prompts'])} prompts, {decoding}, at most {dec['max_new_tokens']} new tokens.",
        "",
        "## Measures per α (over prompts)",
        "",
    ]
    has_judge = any(p.get("judge_score") is not None for p in summary["points"])
    heads = ["α", "‖added‖ / ‖x‖"] if doc["method"] == "add" else ["α"]
    measures = ["perplexity"] + (["judge_score"] if has_judge else []) + [
        "n_tokens", "distinct_3", "script_switch", "hit_limit",
    ]  # fmt: skip
    heads += [LABELS[m] for m in measures] + ["wins / losses", "beats unsteered"]
    lines += ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for p in summary["points"]:
        cells = [alpha_label(p)]
        if doc["method"] == "add":
            cells.append(_fmt(abs(p["alpha"]) * doc["direction_norm"] / doc["residual_norm"], 2))
        cells += [_fmt(p[m]) for m in measures]
        cells += ["reference", ""] if p["reference"] else [f"{p['wins']} / {p['losses']}", _fmt(p["beats"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Perplexity is a geometric mean over prompts, the others arithmetic means. "
        + sweet_spot_line(summary),
        f"α beats the unsteered responses when more prompts win than lose and the mean improves too; "
        f"{BEATS[summary['measure']]}.",
        "",
        "## Responses",
    ]
    by_prompt: dict[int, list] = {}
    for r in doc["records"]:
        by_prompt.setdefault(r["prompt"], []).append(r)
    for i, p in enumerate(doc["prompts"]):
        lines += [
            "",
            f"### {i + 1}. {_cell(p['instruction'])}",
            "",
            f"*{p['source']}*",
            "",
            "| α | response |",
            "|---|---|",
        ]
        rows = sorted(by_prompt.get(i, []), key=lambda r: (not r["reference"], r["alpha"] or 0.0))
        for r in rows:
            mark = " (limit)" if r["hit_limit"] else ""
            lines.append(f"| {alpha_label(r)}{mark} | {_cell(r['response'])} |")
    return "\n".join(lines) + "\n"


def plot(doc: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = doc["summary"]
    points = [p for p in summary["points"] if p["alpha"] is not None]
    ref = next((p for p in summary["points"] if p["reference"]), None)
    measures = ["perplexity"] + (["judge_score"] if summary["measure"] == "judge_score" else [])
    measures += ["n_tokens", "distinct_3", "script_switch", "hit_limit"]
    cols = 3
    rows_n = (len(measures) + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.2 * rows_n), squeeze=False)
    alphas = [p["alpha"] for p in points]
    span = (max(alphas) - min(alphas)) if len(alphas) > 1 else 1.0
    per_prompt: dict[int, list] = {}
    for r in doc["records"]:
        if r["alpha"] is not None:
            per_prompt.setdefault(r["prompt"], []).append(r)
    for ax, m in zip(axes.flat, measures, strict=False):
        for lo, hi in summary["sweet_spot"]:
            pad = span * 0.02
            ax.axvspan(lo - pad, hi + pad, color="tab:green", alpha=0.15, lw=0)
        for rs in per_prompt.values():
            rs = sorted(rs, key=lambda r: r["alpha"])
            ys = [float(r[m]) if r.get(m) is not None else float("nan") for r in rs]
            ax.plot([r["alpha"] for r in rs], ys, color="0.75", lw=0.7)
        ys = [p[m] if p[m] is not None else float("nan") for p in points]
        ax.plot(alphas, ys, "o-", color="tab:blue", lw=2, ms=4)
        if ref is not None and ref[m] is not None:
            ax.axhline(ref[m], color="tab:red", ls="--", lw=1, label="unsteered")
        if m == "perplexity":
            ax.set_yscale("log")
        ax.set_title(LABELS[m], fontsize=9)
        ax.set_xlabel("α")
    for ax in list(axes.flat)[len(measures) :]:
        ax.axis("off")
    feats = ", ".join(f"{f['id']}" + (f"×{f['coef']:g}" if f["coef"] != 1 else "") for f in doc["features"])
    runs = ", ".join(f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}" for lo, hi in summary["sweet_spot"])
    what = "judge score" if summary["measure"] == "judge_score" else "perplexity"
    fig.suptitle(
        f"steer ({doc['method']}, {doc['positions']}): feature {feats} after block {doc['sae']['layer']}; "
        f"grey: each prompt, dashed: unsteered; sweet spot by {what} (shaded): {runs or 'none'}",
        fontsize=9,
    )
    fig.tight_layout()
    with atomic_path(path, fsync=False) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def write_all(doc: dict, out: Path) -> list[Path]:
    """Every output file under `out`; -> their paths."""
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "steer.json", doc, default=str)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in doc["records"])
    write_atomic(out / "steer.jsonl", lines.encode("utf-8"))
    write_atomic(out / "steer.md", markdown(doc).encode("utf-8"))
    return [out / "steer.json", out / "steer.jsonl", out / "steer.md", plot(doc, out / "steer.png")]
