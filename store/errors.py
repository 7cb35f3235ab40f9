"""Store exceptions: each also inherits the builtin a caller would naturally catch."""

from fastsae.errors import FastSAEError


class StoreError(FastSAEError):
    """Base class of every error raised by the store package."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """The store directory, its store.json, or a file a shard needs does not exist."""


class StoreCorruptError(StoreError, ValueError):
    """The store on disk is damaged or inconsistent. ``problems`` lists one line per finding."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = list(problems) if problems else [message]


class StoreMismatchError(StoreError, ValueError):
    """An existing store was written with a different identity (model, tokenizer, layers, ...)."""

    def __init__(self, message: str, keys: list[str] | None = None):
        super().__init__(message)
        self.keys = list(keys or [])


class StoreWriteError(StoreError, ValueError):
    """Bad input to a ShardWriter (shapes, dtypes, non-finite activations, wrong call order)."""


class StoreExistsError(StoreError, FileExistsError):
    """A shard with this writer/seq name is already committed."""
