"""fastsae store: the on-disk Zarr v3 format shared by harvest (writes) and train (reads). See FORMAT.md."""

from .checks import quick_check
from .completeness import Completeness, begin_writer, finish_writer, store_completeness
from .errors import (
    StoreBusyError,
    StoreCommitError,
    StoreCorruptError,
    StoreError,
    StoreExistsError,
    StoreIncompleteError,
    StoreMismatchError,
    StoreNotFoundError,
    StoreWriteError,
)
from .format import MAX_ABS_ACTIVATION, SCHEMA_VERSION
from .identity import init_store
from .location import committed_shards, peek_store_json, store_location, write_side_file
from .locking import clean_partial
from .reader import Sequence, Shard, Store, TokenLocation, open_store, to_float32
from .remote import StoreRemoteError, is_url
from .scan import BadActivation, find_bad_activation
from .summary import summarize_store
from .token_types import TokenType
from .verify import verify_store
from .writer import ShardWriter

__all__ = [
    "MAX_ABS_ACTIVATION",
    "SCHEMA_VERSION",
    "BadActivation",
    "Completeness",
    "Sequence",
    "Shard",
    "ShardWriter",
    "Store",
    "StoreBusyError",
    "StoreCommitError",
    "StoreCorruptError",
    "StoreError",
    "StoreExistsError",
    "StoreIncompleteError",
    "StoreMismatchError",
    "StoreNotFoundError",
    "StoreRemoteError",
    "StoreWriteError",
    "TokenLocation",
    "TokenType",
    "begin_writer",
    "clean_partial",
    "committed_shards",
    "find_bad_activation",
    "finish_writer",
    "init_store",
    "is_url",
    "open_store",
    "peek_store_json",
    "quick_check",
    "store_completeness",
    "store_location",
    "summarize_store",
    "to_float32",
    "verify_store",
    "write_side_file",
]
