"""train's own errors: the CLI prints each as one line and exits 2 (fastsae/cli.py)."""

from __future__ import annotations

from fastsae.errors import FastSAEError, UsageError


class TrainError(FastSAEError):
    """Base class of train's own errors (the CLI prints them as one line, exit code 2)."""


class TrainConfigError(TrainError, UsageError):
    """A bad train argument, detected before any training step."""


def fail(msg: str):
    raise TrainConfigError(msg)
