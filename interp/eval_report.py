"""Writing eval's results: results.json, results.csv, results.md (the table rich prints), the PNGs, and
--compare's arm tables (FAST vs BT(F) vs BT(P), as the paper's Appendix D, and at equal L0).

Equal L0: each arm's SAEs of one architecture are a frontier of (log L0, metric) points; each arm's
frontier is interpolated linearly in log L0 at the L0 of every SAE of the first arm that lies inside every
arm's L0 range (no extrapolation).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from fastsae.atomic import write_json_atomic
from fastsae.interp.eval_config import GROUP_LABELS

ARMS = ("FAST", "BT(F)", "BT(P)")
SPLICED = (  # (metric key, column title, format), the assistant tokens' CE first
    ("assistant:delta_loss", "Δloss asst", "{:.4f}"),
    ("assistant:ce_loss_recovered_mean", "rec. asst", "{:.3f}"),
    ("all:delta_loss", "Δloss", "{:.4f}"),
    ("all:ce_loss_recovered_zero", "rec. zero", "{:.3f}"),
    ("all:ce_loss_recovered_mean", "rec. mean", "{:.3f}"),
    ("all:kl", "KL", "{:.4f}"),
    ("all:l0", "L0", "{:.1f}"),
)
RECONSTRUCTION = (
    ("all:log2_mse", "log2 MSE", "{:.3f}"),
    ("all:log2_mse_st", "log2 MSE_st", "{:.3f}"),
    ("all:explained_variance", "EV", "{:.3f}"),
    ("all:cosine_sim", "cos", "{:.3f}"),
    ("all:relative_norm", "‖x̂‖/‖x‖", "{:.3f}"),
    ("all:l0", "L0", "{:.1f}"),
    ("all:dead_frac", "dead", "{:.3f}"),
    ("all:dense_frac", "dense", "{:.3f}"),
)


def value(sae: dict, key: str):
    group, metric = key.split(":")
    return sae["metrics"].get(group, {}).get(metric)


def _fmt(v, f: str) -> str:
    return "—" if v is None else f.format(v)


def write_csv(path: Path, doc: dict) -> None:
    """One row per SAE and token-type group, every metric a column (empty = null)."""
    keys: list[str] = []
    for s in doc["saes"]:
        for m in s["metrics"].values():
            keys += [k for k in m if k not in keys]
    ident = ("arch", "d_sae", "layer", "training_tokens")
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["sae", *ident, "arm", "group", *keys])
        for s in doc["saes"]:
            for g, m in s["metrics"].items():
                row = [s["name"], *(s["identity"].get(k) for k in ident), s["identity"].get("arm"), g]
                w.writerow(row + ["" if m.get(k) is None else m.get(k) for k in keys])


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main_table(doc: dict, columns=SPLICED) -> tuple[list[str], list[list[str]]]:
    headers = ["SAE", *(t for _, t, _ in columns)]
    rows = [[s["name"], *(_fmt(value(s, k), f) for k, _, f in columns)] for s in doc["saes"]]
    return headers, rows


def type_table(doc: dict, metric: str, title: str) -> tuple[list[str], list[list[str]]]:
    groups = [g for g in doc["groups"] if any(value(s, f"{g}:{metric}") is not None for s in doc["saes"])]
    headers = [title, *(GROUP_LABELS.get(g, g) for g in groups)]
    rows = [[s["name"], *(_fmt(value(s, f"{g}:{metric}"), "{:.4f}") for g in groups)] for s in doc["saes"]]
    return headers, rows


def _frontier(points: list[tuple[float, float]], at: float) -> float | None:
    pts = sorted((math.log(l0), v) for l0, v in points if l0 and l0 > 0 and v is not None)
    if not pts or not pts[0][0] <= math.log(at) <= pts[-1][0]:
        return None
    xs, ys = zip(*pts, strict=True)
    return float(np.interp(math.log(at), xs, ys))


COMPARE = (("all:log2_mse", "log2 MSE"), ("all:log2_mse_st", "log2 MSE_st"))


def compare_tables(doc: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """[(title, headers, rows)]: the Appendix D layout, then each architecture at equal L0."""
    saes = doc["saes"]
    arms = [a for a in ARMS if any(s["identity"].get("arm") == a for s in saes)]
    arms += sorted({s["identity"].get("arm") or "?" for s in saes} - set(arms))
    settings: dict[tuple, dict[str, dict]] = {}
    for s in saes:
        i = s["identity"]
        point = i.get("sweep_point") or {}
        key = (i["arch"], i["d_sae"], point.get("sparsity_coef"), point.get("k"), point.get("lr"))
        settings.setdefault(key, {})[i.get("arm") or "?"] = s

    def cell(s, key):
        if s is None:
            return "—"
        return (
            f"{_fmt(value(s, key), '{:.3f}')} (L0 {_fmt(value(s, 'all:l0'), '{:.1f}')}, "
            f"rec {_fmt(value(s, 'all:ce_loss_recovered_mean'), '{:.3f}')})"
        )

    headers = ["arch", "d_sae", "coef/k", *(f"{a} {t}" for _, t in COMPARE for a in arms)]
    rows = []
    for (arch, d_sae, coef, k, _lr), by_arm in sorted(settings.items(), key=lambda kv: str(kv[0])):
        rows.append(
            [arch, str(d_sae), str(k if coef is None else coef)]
            + [cell(by_arm.get(a), key) for key, _ in COMPARE for a in arms]
        )
    out = [
        (
            "FAST vs block training (log2 MSE and MSE_st; L0 and mean-ablation CE recovered beside)",
            headers,
            rows,
        )
    ]
    metrics = (*COMPARE, ("all:ce_loss_recovered_mean", "CE rec."))
    for arch in sorted({s["identity"]["arch"] for s in saes}):
        mine = [s for s in saes if s["identity"]["arch"] == arch]
        by_arm = {a: [s for s in mine if (s["identity"].get("arm") or "?") == a] for a in arms}
        by_arm = {a: v for a, v in by_arm.items() if v}
        if len(by_arm) < 2 or max(len(v) for v in by_arm.values()) < 2:
            continue
        ref = next(iter(by_arm.values()))
        grid = sorted(value(s, "all:l0") for s in ref if value(s, "all:l0"))
        rows = []
        for l0 in grid:
            vals = {
                (a, key): _frontier([(value(s, "all:l0"), value(s, key)) for s in v], l0)
                for a, v in by_arm.items()
                for key, _ in metrics
            }
            if all(v is not None for v in vals.values()):
                rows.append([f"{l0:.1f}"] + [f"{vals[(a, key)]:.3f}" for key, _ in metrics for a in by_arm])
        if rows:
            heads = ["L0", *(f"{a} {t}" for _, t in metrics for a in by_arm)]
            out.append((f"{arch}: arms at equal L0 (interpolated in log L0)", heads, rows))
    return out


def plots(doc: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    saes, paths = doc["saes"], []
    for key, label, name in (
        ("all:mse", "MSE", "frontier_mse.png"),
        ("all:ce_loss_recovered_mean", "CE loss recovered (mean ablation)", "frontier_ce_recovered.png"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        by: dict[str, list] = {}
        for s in saes:
            lab = f"{s['identity']['arch']} {s['identity'].get('arm') or ''}".strip()
            by.setdefault(lab, []).append((value(s, "all:l0"), value(s, key), s["name"]))
        for lab, pts in by.items():
            pts = sorted(p for p in pts if p[0] is not None and p[1] is not None)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=lab)
        ax.set_xscale("log")
        ax.set_xlabel("L0")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        paths.append(out / name)
    groups = [g for g in doc["groups"] if g not in ("all", "first")]
    groups = [g for g in groups if any(value(s, f"{g}:delta_loss") is not None for s in saes)]
    for metric, label, name in (
        ("delta_loss", "Δloss", "by_type_delta_loss.png"),
        ("mse", "MSE", "by_type_mse.png"),
    ):
        fig, ax = plt.subplots(figsize=(max(6, len(groups) * 1.2), 4))
        width = 0.8 / max(1, len(saes))
        for j, s in enumerate(saes):
            ys = [value(s, f"{g}:{metric}") or 0.0 for g in groups]
            ax.bar(np.arange(len(groups)) + j * width, ys, width, label=s["name"])
        ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, [GROUP_LABELS.get(g, g) for g in groups])
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        paths.append(out / name)
    return paths


def write_all(doc: dict, out: Path, *, compare: bool, console=None) -> str:
    """Every output file under `out`; prints the tables with rich; -> the markdown text."""
    out.mkdir(parents=True, exist_ok=True)
    tables = [("SAEs spliced in: CE loss (assistant tokens first)", *main_table(doc))]
    tables.append(("Reconstruction", *main_table(doc, RECONSTRUCTION)))
    tables.append(("Δloss by the type of the predicted token", *type_table(doc, "delta_loss", "Δloss")))
    tables.append(("MSE by token type", *type_table(doc, "mse", "MSE")))
    if compare:
        tables += compare_tables(doc)
    ev = doc["evaluation"]
    head = (
        f"{ev['num_sequences']} {ev['kind']} conversations, {ev['num_tokens']:,} tokens; spliced at "
        f"{ev['spliced']}; scored: {ev['scored']}."
    )
    md = "\n\n".join([head] + [f"**{t}**\n\n{markdown_table(h, r)}" for t, h, r in tables]) + "\n"
    write_json_atomic(out / "results.json", doc, default=str)
    write_csv(out / "results.csv", doc)
    (out / "results.md").write_text(md, encoding="utf-8")
    plots(doc, out)
    if console is not None:
        from rich.table import Table

        console.print(head)
        for title, h, rows in tables:
            t = Table(title=title)
            for c in h:
                t.add_column(c)
            for r in rows:
                t.add_row(*r)
            console.print(t)
    return md
