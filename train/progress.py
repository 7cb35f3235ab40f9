"""The rich progress bar of a training run: tokens, tokens/s, MSE and L0 of the last log line, the share of time
spent waiting for data, ETA. The MSE is the train lines' "mse", in train.metrics.MSE_UNIT like every MSE shown.

It never reads a device value: MSE/L0 come from the records the trainer already synced at its log steps."""

from __future__ import annotations

import time


class ProgressBar:
    """A rich progress bar: tokens, tokens/s, MSE and L0 (of the last log line), ETA. Updated without syncs."""

    def __init__(self, trainer, *, enabled: bool, console=None):
        self.t, self.enabled = trainer, enabled
        self.progress = None
        if enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed:,.0f}/{task.total:,.0f} tok"),
                TextColumn("{task.fields[tps]} tok/s"),
                TextColumn("MSE {task.fields[mse]}"),
                TextColumn("L0 {task.fields[l0]}"),
                TextColumn("data wait {task.fields[wait]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )

    def __enter__(self):
        if self.progress is not None:
            t = self.t
            n = len(t.saes)
            self.progress.start()
            self.task = self.progress.add_task(
                f"train {n} SAE{'s' if n > 1 else ''}",
                total=t.total_steps * t.cfg.batch_size,
                completed=t.step * t.cfg.batch_size,
                tps="-",
                mse="-",
                l0="-",
                wait="-",
            )
        self.t0, self.s0 = time.perf_counter(), self.t.step
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()

    def advance(self) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=self.t.cfg.batch_size)

    def show(self, recs: list[dict]) -> None:
        if self.progress is None:
            return
        dt = time.perf_counter() - self.t0
        tps = (self.t.step - self.s0) * self.t.cfg.batch_size / max(dt, 1e-9)

        def rng(key, fmt):
            vals = [r[key] for r in recs]
            lo, hi = min(vals), max(vals)
            return format(lo, fmt) if lo == hi else f"{lo:{fmt}}–{hi:{fmt}}"

        self.progress.update(
            self.task,
            tps=f"{tps:,.0f}",
            mse=rng("mse", ".4g"),
            l0=rng("l0", ".1f"),
            wait=f"{recs[0]['data_wait_frac']:.0%}",
        )
