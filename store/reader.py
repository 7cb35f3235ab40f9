"""Reading a store: open_store -> Store -> Shard (shard.py) / Sequence (sequence.py). Read-only, lazy,
memmap-based.

A store on object storage (an fsspec URL) is opened from its local mirror (remote.py: everything but the
activations); its activations are read through the block cache (blockcache.py). At open every shard's declared
counts and shapes are checked against its files' sizes (checks.check_declared: zarr.json reads and lstat()s
only) and the writers' records against the shards present (completeness.py); no array is read.
"""

from __future__ import annotations

import hashlib
import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .dtypes import to_float32
from .errors import StoreCorruptError, StoreIncompleteError, StoreNotFoundError
from .format import STORE_JSON, list_shards, read_store_json
from .sequence import Sequence, TokenLocation
from .shard import Shard, ZarrRows

if TYPE_CHECKING:
    from .blockcache import BlockCache
    from .completeness import Completeness

# Shard, ZarrRows (shard.py), Sequence, TokenLocation (sequence.py) and to_float32 (dtypes.py) are re-exported:
# fastsae.store and the store's modules import them from here
__all__ = [
    "Sequence",
    "Shard",
    "Store",
    "TokenLocation",
    "ZarrRows",
    "check_sequence_ranges",
    "open_store",
    "to_float32",
]


class Store:
    """A read-only view of the committed shards of a store directory. Use open_store()."""

    def __init__(self, path: Path, meta: dict, shards: list[Shard], completeness: Completeness | None = None):
        self.path, self.meta, self.shards = path, meta, shards  # a remote store's path: its local mirror
        self.completeness = completeness
        self.url: str | None = None  # a store on object storage: its URL
        self.uncommitted: list[str] = []  # a remote store's shard prefixes without a manifest (ignored)
        self.cache: BlockCache | None = None  # a remote store's activation block cache
        if shards:
            first = shards[0]
            for sh in shards[1:]:
                if (sh.layers, sh.d_model, sh.dtype) != (first.layers, first.d_model, first.dtype):
                    raise StoreCorruptError(
                        f"store {path}: shard {sh.name} has layers={sh.layers} d_model={sh.d_model} dtype={sh.dtype}"
                        f", shard {first.name} has layers={first.layers} d_model={first.d_model} dtype={first.dtype}"
                    )
            self.layers, self.d_model, self.dtype = list(first.layers), first.d_model, first.dtype
        else:
            self.layers = [int(x) for x in meta.get("layers", [])]
            self.d_model = int(meta["d_model"]) if meta.get("d_model") is not None else None
            self.dtype = meta.get("dtype")
        self._starts = np.array([sh.first_sequence for sh in shards], dtype=np.int64)  # [n_shards]
        self.num_sequences = sum(sh.num_sequences for sh in shards)
        self.num_tokens = sum(sh.num_tokens for sh in shards)

    @property
    def location(self) -> str:
        """The store as its user names it (in messages and records): its URL on object storage, else its folder."""
        return self.url or str(self.path)

    def __repr__(self) -> str:
        return f"Store({self.location}, shards={len(self.shards)}, sequences={self.num_sequences}, tokens={self.num_tokens})"

    def __len__(self) -> int:
        return self.num_sequences

    def __iter__(self):
        for sh in self.shards:
            for i in range(sh.num_sequences):
                yield sh.sequence(i)

    @cached_property
    def seq_offsets(self) -> np.ndarray:  # [S+1] global token offsets in harvest order
        out = np.zeros(self.num_sequences + 1, dtype=np.int64)
        base_tok = 0
        for sh in self.shards:
            a = sh.first_sequence
            out[a + 1 : a + sh.num_sequences + 1] = base_tok + sh.offsets[1:]
            base_tok += sh.num_tokens
        return out

    @cached_property
    def token_starts(self) -> np.ndarray:  # [n_shards + 1] first store-order token row of each shard
        return np.concatenate([[0], np.cumsum([sh.num_tokens for sh in self.shards], dtype=np.int64)])

    def locate(self, row: int) -> TokenLocation:
        """Names the shard and sequence of token ``row`` in store order (shards in harvest order, rows in
        shard order: the order train's token ids count in). O(log shards + log sequences)."""
        row = int(row)
        if not 0 <= row < self.num_tokens:
            raise IndexError(f"token {row} out of range (store has {self.num_tokens})")
        k = int(np.searchsorted(self.token_starts, row, side="right")) - 1
        return self.shards[k].locate(row - int(self.token_starts[k]))

    @cached_property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update((self.path / STORE_JSON).read_bytes())
        for sh in self.shards:
            h.update(f"\n{sh.name}:{sh.bytes()}".encode())
        return h.hexdigest()

    def sequence(self, i: int) -> Sequence:
        """Sequence i in harvest order; O(log shards)."""
        i = int(i)
        if i < 0:
            i += self.num_sequences
        if not 0 <= i < self.num_sequences:
            raise IndexError(f"sequence {i} out of range (store has {self.num_sequences})")
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        sh = self.shards[k]
        return sh.sequence(i - sh.first_sequence, index=i)


def check_sequence_ranges(shards: list[Shard]) -> list[str]:
    """Problems with the sequence ranges of shards sorted by first_sequence (gaps, overlaps)."""
    problems, expected, prev = [], 0, None
    for sh in shards:
        a, b = sh.sequence_range
        if a < expected:
            problems.append(f"shards {prev} and {sh.name} overlap: sequences [{a}, {expected}) are in both")
        elif a > expected:
            after = f"after shard {prev}" if prev else "before the first shard"
            problems.append(f"sequences [{expected}, {a}) are missing {after} (next shard {sh.name})")
        expected, prev = max(expected, b), sh.name
    return problems


def open_store(
    root: str | os.PathLike,
    *,
    allow_incomplete: bool = True,
    storage_options: dict | None = None,
    cache_bytes: int | None = None,
    fresh: bool = False,
    check_ranges: bool = True,
) -> Store:
    """Open a store read-only (committed shards only; .partial-* directories are ignored). Every shard's
    declared sizes are checked against its files first (StoreCorruptError names the shard and file).

    ``store.completeness`` compares the shards with the writers' records (completeness.py). With
    ``allow_incomplete=False`` a store whose records name missing shards, or a writer that has not finished,
    raises StoreIncompleteError; a store without records (schema 1, or not written by harvest) opens, its
    completeness "unknown".

    ``root`` may be an fsspec URL (s3://bucket/store): committed shards are those whose manifest object exists
    (schema 3), the others are listed in ``store.uncommitted``; ``storage_options`` go to fsspec,
    ``cache_bytes`` bounds the activation block cache, ``fresh`` re-downloads the mirrored small objects.
    ``check_ranges=False``: no store-wide sequence-range check (a harvest writer among others still running)."""
    from .completeness import store_completeness
    from .remote import is_url, store_location

    if is_url(root):
        return _open_remote(str(root), allow_incomplete, storage_options, cache_bytes, fresh, check_ranges)
    root = store_location(root)
    if not root.exists():
        raise StoreNotFoundError(f"store not found: {root}")
    meta = read_store_json(root)
    shards = []
    for p in list_shards(root):
        try:
            shards.append(Shard.open(p))
        except StoreNotFoundError as e:
            raise StoreCorruptError(str(e)) from None
    return _checked(root, meta, shards, store_completeness(root, shards), allow_incomplete, check_ranges)


def _open_remote(url, allow_incomplete, storage_options, cache_bytes, fresh, check_ranges) -> Store:
    from .blockcache import BlockCache
    from .completeness import store_completeness
    from .remote import Mirror, RemoteShard

    mirror = Mirror.sync(url, storage_options=storage_options, fresh=fresh)
    meta = read_store_json(mirror.path)
    cache = BlockCache(mirror.remote, mirror.path.parent / "blocks", max_bytes=cache_bytes)
    shards = []
    for p in list_shards(mirror.path):
        remote = RemoteShard(mirror.remote, p.name, mirror.object_sizes(p.name), cache)
        try:
            shards.append(Shard.open(p, remote=remote))
        except StoreNotFoundError as e:
            raise StoreCorruptError(str(e)) from None
    completeness = store_completeness(mirror.path, shards, where=mirror.remote.url)
    store = _checked(
        mirror.remote.url, meta, shards, completeness, allow_incomplete, check_ranges, path=mirror.path
    )
    store.url, store.uncommitted, store.cache = mirror.remote.url, mirror.uncommitted, cache
    return store


def _checked(root, meta, shards, completeness, allow_incomplete, check_ranges, *, path=None) -> Store:
    shards.sort(key=lambda sh: (sh.first_sequence, sh.name))
    problems = check_sequence_ranges(shards) if check_ranges else []
    if problems and completeness.missing:  # a gap the writers' records explain: name the missing shard
        raise StoreCorruptError(completeness.message, [completeness.message, *problems])
    if problems:
        raise StoreCorruptError(f"store {root}: {problems[0]}", problems)
    if not allow_incomplete and completeness.state == "incomplete":
        raise StoreIncompleteError(completeness.message, completeness.missing, completeness.unfinished)
    return Store(root if path is None else path, meta, shards, completeness)
