"""Held-out metrics, the per-SAE metrics.jsonl, and the training-curve PNG.

Held-out metrics are computed on whole held-out sequences (every token, whatever --token-types trains on),
in the store's raw activation units (if inputs are normalised for training, x̂ is scaled back), by
fastsae.saes.metrics (HeldOut and heldout_metrics are re-exported here), the code eval reports with too:

    err_t   = mean_d (x̂_t,d − x_t,d)²                      per token t
    MSE     = mean over sequences s of ( mean over t ∈ s of err_t )          (the paper's averaging)
    MSE_st  = the same over SPECIAL tokens only (sequences without any special token are left out)
    log2_mse, log2_mse_st = their base-2 logarithms
    explained_variance = 1 − Σ_t ‖x̂_t − x_t‖² / Σ_t ‖x_t − x̄‖²   (x̄ = mean held-out activation)
    l0      = mean over tokens of the number of active features
    dead_frac = fraction of features that have not fired for --dead-feature-window training steps

metrics.jsonl holds one JSON object per line; "split" is "train" (running means of the training scalars since
the previous line) or "heldout". Every line has "step" (optimizer steps done) and "tokens" (training tokens seen).
Train lines also carry "data_wait_frac": the share of the loop's wall time since the previous line spent waiting
for the reader (near 0: the SAEs are the bottleneck; near 1: the data is). It is a timing (TIMING_KEYS), the only
value that differs between a run and its rerun or resume.
The training scalars are in the units the SAE trains on, x·activation_scale (mse_loss = Σ_d per token); held-out
lines record "d_in" and "activation_scale" so that mse · d_in · activation_scale² compares with mse_loss.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from fastsae.saes.metrics import HeldOut, heldout_metrics  # noqa: F401 - re-exported: what train logs

TIMING_KEYS = ("data_wait_frac",)  # wall-clock measurements in metrics lines: not reproducible run to run


class MetricsLog:
    """Appends JSON lines to one SAE's metrics.jsonl (opened once, flushed+fsynced on `sync`)."""

    def __init__(self, path: str | Path, *, keep_through_step: int | None = None):
        self.path = Path(path)
        if keep_through_step is None:
            self.path.write_text("")
        else:
            truncate_metrics(self.path, keep_through_step)
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run

    def write(self, record: dict) -> None:
        self._f.write(json.dumps(record, allow_nan=True) + "\n")

    def flush(self) -> None:
        self._f.flush()

    def sync(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def truncate_metrics(path: str | Path, max_step: int) -> None:
    """Keep only the lines with step ≤ max_step (what a checkpoint at max_step had written); drop a torn line."""
    path = Path(path)
    keep = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                break
            if rec.get("step", 0) <= max_step:
                keep.append(line)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(x + "\n" for x in keep), encoding="utf-8")
    os.replace(tmp, path)


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_curves(metrics_path: str | Path, png_path: str | Path, *, title: str = "") -> None:
    """Loss, MSE, L0 and dead fraction against training tokens (train lines, held-out points on top)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    recs = read_metrics(metrics_path)
    train = [r for r in recs if r.get("split") == "train"]
    held = [r for r in recs if r.get("split") == "heldout"]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    panels = [
        ("loss", "loss", None, "log"),
        ("MSE (Σ_d per token)", "mse_loss", "mse", "log"),
        ("L0", "l0", "l0", "linear"),
        ("dead fraction", "dead_frac", "dead_frac", "linear"),
    ]
    for ax, (label, train_key, held_key, yscale) in zip(axes.flat, panels, strict=True):
        pts = [(r["tokens"], r[train_key]) for r in train if _finite(r.get(train_key))]
        if pts:
            ax.plot(*zip(*pts, strict=True), label="train", lw=1)
        if held_key:
            hp = [(r["tokens"], r[held_key]) for r in held if _finite(r.get(held_key))]
            if hp:
                factor = heldout_mse_in_train_units(held[0]) if held_key == "mse" else 1.0
                ax.plot([t for t, _ in hp], [y * factor for _, y in hp], "o-", ms=3, label="held-out")
        # a fixed title position: matplotlib otherwise measures every tick label to place it (a third of the time)
        ax.set_title(label, y=1.0, pad=4)
        ax.set_xlabel("training tokens")
        ax.xaxis.set_major_formatter(FuncFormatter(_count_label))  # 40k, 1.2M: raw counts overlap
        if yscale == "log" and pts and all(y > 0 for _, y in pts):
            ax.set_yscale("log")
            # plain-text tick labels: the default 10^k labels go through mathtext (a fifth of the time)
            ax.yaxis.set_major_formatter(FuncFormatter(_tick_label))
            ax.yaxis.set_minor_formatter(FuncFormatter(_tick_label))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(
        left=0.08, right=0.98, bottom=0.08, top=0.9 if title else 0.95, wspace=0.25, hspace=0.35
    )
    tmp = Path(png_path).with_name(f".{Path(png_path).name}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, png_path)


def _tick_label(value: float, _pos) -> str:
    return f"{value:.3g}"


def _count_label(value: float, _pos) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            return f"{value / div:.4g}{suffix}"
    return f"{value:g}"


def heldout_mse_in_train_units(rec: dict) -> float:
    """Factor turning a held-out line's "mse" (mean over d, raw units) into the training mse_loss's units
    (Σ over d of the error on x·activation_scale): d_in · activation_scale²."""
    return rec.get("d_in", 1) * rec.get("activation_scale", 1.0) ** 2


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)
