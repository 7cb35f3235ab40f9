"""SIGTERM and SIGINT during training: finish the step, checkpoint, exit 143 or 130 (128 + the signal).

Clusters send SIGTERM before they kill a job. While a run trains, the first SIGTERM or SIGINT only sets a
flag; the loop sees it after the step in progress, checks the steps not yet logged (as it does before every
checkpoint), writes a checkpoint of exactly that step and raises TrainInterrupted. Rerunning the same command
resumes from that step: nothing is redone, and the run ends with the weights and metrics lines of an
uninterrupted one. A second signal acts as it would without this handler (SIGINT: KeyboardInterrupt, SIGTERM:
the process ends), for a user who does not want to wait for the checkpoint.
"""

from __future__ import annotations

import signal
import threading

from fastsae.train.config import TrainError

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainInterrupted(TrainError):
    """The run stopped on a signal, its progress saved; exit_code is the shell's 128 + signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class StopSignals:
    """Context manager: the first SIGTERM/SIGINT sets ``received`` (its number) and restores the handlers it
    replaced. Installs nothing outside the main thread (Python delivers signals there only)."""

    def __init__(self):
        self.received: int | None = None
        self._old: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def _handle(self, signum, _frame) -> None:
        self.received = signum
        self._restore()

    def _restore(self) -> None:
        for s, handler in self._old.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)  # None: not set from Python
        self._old = {}

    def __exit__(self, *exc) -> None:
        self._restore()

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else ""
