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


class StoreIncompleteError(StoreError, ValueError):
    """The store's writer records say shards are missing, or a writer has not finished. ``missing``: shard
    names; ``unfinished``: writer ids."""

    def __init__(self, message: str, missing: list[str] | None = None, unfinished: list[int] | None = None):
        super().__init__(message)
        self.missing = list(missing or [])
        self.unfinished = list(unfinished or [])


class StoreBusyError(StoreError, OSError):
    """Another live process holds this writer's lock (two runs with one writer id on one store)."""


class StoreCommitError(StoreError, OSError):
    """A shard lost files while it was written (another process touched its partial directory): not committed."""
