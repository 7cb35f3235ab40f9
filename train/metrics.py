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
One MSE unit wherever an MSE is shown (terminal, progress bar, curves.png, README): MSE_UNIT, the squared error
of a token averaged over the d dimensions, in the store's raw activation units (err_t above). Held-out "mse" and
"mse_st" average it per sequence (the paper's averaging); a train line's "mse" is the same per-token error averaged
over the training tokens since the previous line. The objective's terms ("loss", "mse_loss", "sparsity_loss",
"aux_loss") are in the units the SAE trains on, x·activation_scale, with mse_loss summed over d:
mse_loss = mse · d_in · activation_scale². Held-out lines record "d_in", "d_sae" and "activation_scale".
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from fastsae.saes.metrics import HeldOut, heldout_metrics  # noqa: F401 - re-exported: what train logs

TIMING_KEYS = ("data_wait_frac",)  # wall-clock measurements in metrics lines: not reproducible run to run
MSE_UNIT = "per token, mean over d, raw activation units"


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
    """curves_figure of a metrics.jsonl, written atomically to png_path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = curves_figure(read_metrics(metrics_path), title=title)
    tmp = Path(png_path).with_name(f".{Path(png_path).name}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, png_path)


def curves_figure(recs: list[dict], *, title: str = ""):
    """Training loss, MSE, MSE_st, explained variance, L0 and dead fraction against training tokens: train lines
    as lines, held-out evaluations as dots. Every MSE is in MSE_UNIT; the loss is the objective the SAE minimises
    (on x·activation_scale when inputs are normalised)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    train = [r for r in recs if r.get("split") == "train"]
    held = [r for r in recs if r.get("split") == "heldout"]
    last = held[-1] if held else {}
    if train and "mse" not in train[0] and held:  # lines written before train lines carried "mse"
        train = [{**r, "mse": r["mse_loss"] / heldout_mse_in_train_units(last)} for r in train]
    scale = last.get("activation_scale", 1.0)
    loss_unit = "objective, raw units" if scale == 1 else f"objective on inputs × {scale:.3g}"
    d_sae = f" of {last['d_sae']:,}" if "d_sae" in last else ""
    panels = [
        ("training loss", "loss", None, "log", loss_unit),
        ("MSE", "mse", "mse", "log", "mean over d, raw units"),
        ("MSE_st (special tokens)", None, "mse_st", "log", "mean over d, raw units"),
        ("explained variance", None, "explained_variance", "linear", ""),
        (f"L0 (active latents{d_sae})", "l0", "l0", "linear", "per token"),
        ("dead fraction", "dead_frac", "dead_frac", "linear", "of the latents"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, (label, train_key, held_key, yscale, unit) in zip(axes.flat, panels, strict=True):
        ys = []
        if train_key:
            pts = [(r["tokens"], r[train_key]) for r in train if _finite(r.get(train_key))]
            if pts:
                ax.plot(*zip(*pts, strict=True), color="C0", label="train batches", lw=1)
                ys += [y for _, y in pts]
        if held_key:
            hp = [(r["tokens"], r[held_key]) for r in held if _finite(r.get(held_key))]
            if hp:
                ax.plot(*zip(*hp, strict=True), "o-", color="C1", ms=3, label="held-out")
                ys += [y for _, y in hp]
        # a fixed title position: matplotlib otherwise measures every tick label to place it (a third of the time)
        ax.set_title(label, y=1.0, pad=4)
        ax.set_xlabel("training tokens")
        if unit:
            ax.set_ylabel(unit, fontsize=8)
        ax.xaxis.set_major_formatter(FuncFormatter(_count_label))  # 40k, 1.2M: raw counts overlap
        if yscale == "log" and ys and min(ys) > 0 and max(ys) >= 3 * min(ys):  # narrower: linear reads better
            _log_ticks(ax, min(ys), max(ys))
        if held_key == "explained_variance" and ys:
            # the untrained SAE's point (often far below 0) would squash the curve: show [min(0, later points), 1]
            later = ys[1:] or ys
            ax.set_ylim(min(0.0, min(later)) - 0.02, 1.0)
        elif yscale == "linear" and ys:  # counts and fractions from 0: a TopK L0 of 63.9-64 is not a trend
            ax.set_ylim(0, max(max(ys) * 1.08, 0.05))
        ax.grid(alpha=0.3)
        if ys:
            ax.legend(fontsize=8)
    n = last.get("sequences")
    note = f"MSE: {MSE_UNIT}" + (f"; held-out: {n:,} sequences, each weighted equally" if n else "")
    fig.suptitle(f"{title}\n{note}" if title else note, fontsize=10)
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.08, top=0.88, wspace=0.3, hspace=0.38)
    return fig


# Tick mantissas on a log axis, coarsest first: the first set giving 3+ ticks in view is used (labels never crowd).
_LOG_MANTISSAS = ((1,), (1, 3), (1, 2, 5), (1, 1.5, 2, 3, 5, 7), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9))


def _log_ticks(ax, lo: float, hi: float) -> None:
    """Log y axis labelled at round values only (1, 3, 10, ... or finer on a narrow range); no minor labels."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ax.set_yscale("log")
    pad = max(hi / lo, 1.2) ** 0.05  # the autoscale margin, computed here so the ticks fit the limits set
    lo, hi = lo / pad, hi * pad
    ax.set_ylim(lo, hi)
    for mantissas in _LOG_MANTISSAS:
        ticks = [
            m * 10.0**e
            for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
            for m in mantissas
            if lo <= m * 10.0**e <= hi
        ]
        if len(ticks) >= 3:
            break
    if len(ticks) < 2:  # a range narrower than the finest set's steps: label its ends
        ticks = [lo * pad, hi / pad]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    # plain-text tick labels: the default 10^k labels go through mathtext (a fifth of the time)
    ax.yaxis.set_major_formatter(FuncFormatter(_tick_label))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _tick_label(value: float, _pos) -> str:
    return f"{value:.4g}".replace("e+0", "e").replace("e-0", "e-")


def _count_label(value: float, _pos) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            return f"{value / div:.4g}{suffix}"
    return f"{value:g}"


def heldout_mse_in_train_units(rec: dict) -> float:
    """Factor turning a held-out line's "mse" (MSE_UNIT) into the objective's mse_loss units
    (Σ over d of the error on x·activation_scale): d_in · activation_scale²."""
    return rec.get("d_in", 1) * rec.get("activation_scale", 1.0) ** 2


def heldout_summary(rec: dict) -> str:
    """A held-out line as the one line `fastsae train` ends with: EV, L0 of d_sae, MSE in MSE_UNIT."""
    l0 = f"L0 {rec['l0']:.1f}"
    if rec.get("d_sae"):
        l0 += f" of {rec['d_sae']:,} latents ({rec['l0'] / rec['d_sae']:.1%})"
    return (
        f"held-out ({rec['sequences']:,} sequences, {rec['heldout_tokens']:,} tokens): "
        f"explained variance {rec['explained_variance']:.3f}, {l0}, MSE {rec['mse']:.4g} "
        f"(special tokens {rec['mse_st']:.4g}; {MSE_UNIT}), dead {rec['dead_frac']:.1%}"
    )


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)
