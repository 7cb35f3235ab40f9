"""The one error root. Every error fastsae raises on bad input or bad data derives from FastSAEError
and also from the builtin a caller would catch (FileNotFoundError, ValueError, OSError, ...), so
`except ValueError` keeps working and the CLI's one handler can tell our errors from bugs.

This module imports nothing: every floor, the ground included, may raise these.
"""


class FastSAEError(Exception):
    """Root of every fastsae error: the CLI prints `error: <message>` as one line and exits with exit_code."""

    exit_code = 2  # bad input; a subclass for a run that failed on valid input may say otherwise


class UsageError(FastSAEError, ValueError):
    """A flag or argument that makes no sense (out of range, contradictory, unknown)."""


class InputError(FastSAEError, ValueError):
    """Input data that cannot be used (no usable records, unreadable file, wrong schema)."""


class ResourceError(FastSAEError, OSError):
    """The machine cannot do it: no such device, not enough memory or disk."""


def one_line(error: BaseException) -> str:
    """The error's message on one line (whitespace runs collapsed), or its class name when it has none."""
    return " ".join(str(error).split()) or type(error).__name__
