"""The harvest's progress bar (rich): conversations, tokens/s, and the ETA when the total is known."""

from __future__ import annotations

import time

from fastsae.harvest.config import HarvestConfig


class HarvestProgress:
    """rich progress bar: conversations, tokens/s, ETA (when the total is known)."""

    def __init__(self, cfg: HarvestConfig, *, total: int | None, console=None):
        self.enabled = cfg.progress
        self.total = total
        self.console = console
        self.t0 = time.perf_counter()
        self.tokens = 0
        self._progress = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("harvest"), BarColumn(), MofNCompleteColumn(), TextColumn("sequences"),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=self.console, transient=False,
            )  # fmt: skip
            self._progress.__enter__()
            self._task = self._progress.add_task("harvest", total=self.total, rate="")
        return self

    def advance(self, sequences: int, tokens: int) -> None:
        self.tokens += tokens
        if self._progress is not None:
            rate = self.tokens / max(1e-9, time.perf_counter() - self.t0)
            self._progress.update(self._task, advance=sequences, rate=f"{rate:,.0f} tok/s")

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.__exit__(*exc)
        return False
