"""The one error root. Every error fastsae raises on bad input or bad data derives from FastSAEError
and also from the builtin a caller would catch (FileNotFoundError, ValueError, OSError, ...), so
`except ValueError` keeps working and the CLI's one handler can tell our errors from bugs.

This module imports nothing: every floor, the ground included, may raise these.
"""


class FastSAEError(Exception):
    """Root of every fastsae error: the CLI prints `error: <message>` and exits 2."""


class UsageError(FastSAEError, ValueError):
    """A flag or argument that makes no sense (out of range, contradictory, unknown)."""


class InputError(FastSAEError, ValueError):
    """Input data that cannot be used (no usable records, unreadable file, wrong schema)."""


class ResourceError(FastSAEError, OSError):
    """The machine cannot do it: no such device, not enough memory or disk."""
