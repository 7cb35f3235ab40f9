"""fastsae store: the on-disk Zarr v3 format shared by harvest (writes) and train (reads). See FORMAT.md."""

from .errors import (
    StoreCorruptError,
    StoreError,
    StoreExistsError,
    StoreMismatchError,
    StoreNotFoundError,
    StoreWriteError,
)
from .format import SCHEMA_VERSION
from .reader import Sequence, Shard, Store, open_store, to_float32
from .token_types import TokenType
from .verify import summarize_store, verify_store
from .writer import ShardWriter, clean_partial, init_store

__all__ = [
    "SCHEMA_VERSION",
    "Sequence",
    "Shard",
    "ShardWriter",
    "Store",
    "StoreCorruptError",
    "StoreError",
    "StoreExistsError",
    "StoreMismatchError",
    "StoreNotFoundError",
    "StoreWriteError",
    "TokenType",
    "clean_partial",
    "init_store",
    "open_store",
    "summarize_store",
    "to_float32",
    "verify_store",
]
