"""Activations of a remote shard: range requests through a bounded local block cache.

An uncompressed activation object is one row-major [T, d_model] matrix from byte 0 (FORMAT.md), so rows
``[a, b)`` are the byte range ``[a * row_bytes, b * row_bytes)``. Reads go by *blocks* of whole rows (a
power of two of rows, at most ``BLOCK_BYTES``): a block missing from the cache is fetched with one range
request (the missing blocks of one read concurrently), written to the cache folder and kept there until the
cache exceeds its byte budget, when the least recently used blocks are removed. So a second epoch over a
store that fits in the budget makes no request, and one that does not re-fetches what it must; nothing is
ever downloaded before it is read. A few recent blocks also stay in memory (a chunk read and its
gathers touch the same blocks in a row). Hits and misses are counted (``CacheStats``).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .remote import RemoteRoot

BLOCK_BYTES = 8 * 2**20  # 4096 rows of d_model 576 in bf16: one default reader chunk is one block
DEFAULT_CACHE_BYTES = 16 * 2**30
CACHE_BYTES_ENV = "FASTSAE_STORE_CACHE_BYTES"
MEMORY_BLOCKS = 8


@dataclass
class CacheStats:
    hits: int = 0  # block reads served from the cache
    misses: int = 0  # blocks fetched from the object store
    fetched_bytes: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


def default_cache_bytes() -> int:
    value = os.environ.get(CACHE_BYTES_ENV)
    return int(float(value)) if value else DEFAULT_CACHE_BYTES


class BlockCache:
    """Blocks of remote objects in one local folder, bounded by ``max_bytes`` (LRU). Thread-safe; several
    processes may share the folder (a block another one evicted is fetched again)."""

    def __init__(self, remote: RemoteRoot, folder: Path, *, max_bytes: int | None = None, workers: int = 8):
        self.remote, self.folder = remote, Path(folder)
        self.max_bytes = default_cache_bytes() if max_bytes is None else int(max_bytes)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.stats = CacheStats()
        self._lock = threading.Lock()
        self._lru: OrderedDict[str, int] = OrderedDict()  # file name -> bytes, oldest first
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self._inflight: dict[str, Future] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fastsae-blocks")
        found = []
        for e in os.scandir(self.folder):  # blocks of earlier runs count (and are reused)
            if e.is_file() and e.name.endswith(".blk"):
                st = e.stat()
                found.append((st.st_mtime, e.name, st.st_size))
        for _t, name, size in sorted(found):
            self._lru[name] = size
        self._bytes = sum(self._lru.values())
        self._evict()  # a smaller budget than the last run's

    def __getstate__(self) -> dict:  # pickled (a Store sent to another process): no threads, no locks
        state = dict(self.__dict__)
        for key in ("_lock", "_pool", "_memory", "_inflight"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._memory, self._inflight = OrderedDict(), {}
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="fastsae-blocks")

    @property
    def bytes(self) -> int:
        return self._bytes

    def _fetch(self, name: str, rel: str, start: int, stop: int) -> np.ndarray:
        (data,) = self.remote.read_ranges([rel], [start], [stop])
        tmp = self.folder / f".{name}.{uuid.uuid4().hex}.tmp"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, self.folder / name)
        finally:
            tmp.unlink(missing_ok=True)
        with self._lock:
            self.stats.fetched_bytes += len(data)
            self._lru[name] = len(data)
            self._lru.move_to_end(name)
            self._bytes += len(data)
            self._evict()
        return np.frombuffer(data, dtype=np.uint8)

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and len(self._lru) > 1:
            old, size = self._lru.popitem(last=False)
            self._bytes -= size
            self._memory.pop(old, None)
            try:
                os.unlink(self.folder / old)
            except FileNotFoundError:
                pass

    def _future(self, name: str, rel: str, start: int, stop: int, *, count: bool) -> Future | np.ndarray:
        with self._lock:
            if name in self._memory:
                self._memory.move_to_end(name)
                if count:
                    self.stats.hits += 1
                return self._memory[name]
            fut = self._inflight.get(name)
            if fut is None and name in self._lru:
                try:
                    data = np.memmap(self.folder / name, dtype=np.uint8, mode="r")  # page cache, no read copy
                except (FileNotFoundError, ValueError):  # evicted by another process sharing the folder
                    self._bytes -= self._lru.pop(name)
                else:
                    if len(data) == stop - start:
                        self._lru.move_to_end(name)
                        self._remember(name, data)
                        if count:
                            self.stats.hits += 1
                        return data
                    self._bytes -= self._lru.pop(name)  # not this block's size: fetched again below
            if count:  # not cached yet (an in-flight read-ahead included): the read waits for a request
                self.stats.misses += 1
            if fut is None:
                fut = self._pool.submit(self._fetch, name, rel, start, stop)
                self._inflight[name] = fut
                fut.add_done_callback(lambda f, n=name: self._done(n, f))
            return fut

    def _done(self, name: str, fut: Future) -> None:
        with self._lock:
            self._inflight.pop(name, None)
            if fut.exception() is None:
                self._remember(name, fut.result())

    def _remember(self, name: str, data: np.ndarray) -> None:
        self._memory[name] = data
        self._memory.move_to_end(name)
        while len(self._memory) > MEMORY_BLOCKS:
            self._memory.popitem(last=False)

    def get(self, requests: list[tuple[str, str, int, int]]) -> list[np.ndarray]:
        """The bytes of blocks (name, object, start, stop): cached ones read locally, the rest fetched
        concurrently."""
        pending = [self._future(*r, count=True) for r in requests]
        return [p.result() if isinstance(p, Future) else p for p in pending]

    def prefetch(self, requests: list[tuple[str, str, int, int]]) -> None:
        """Start fetching blocks that are not cached (read-ahead); returns at once."""
        for r in requests:
            self._future(*r, count=False)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class RemoteRows:
    """Rows of one remote uncompressed activation object: ``a[start:stop]`` and ``a[sorted_int64_rows]`` ->
    np.ndarray [n, d_model] in the stored dtype, as the memmap path indexes."""

    def __init__(self, cache: BlockCache, rel: str, *, key: str, num_rows: int, d_model: int, dtype: Any):
        self.cache, self.rel, self.key = cache, rel, key
        self.dtype = np.dtype(dtype)
        self.shape = (int(num_rows), int(d_model))
        self.row_bytes = self.dtype.itemsize * self.shape[1]
        # a power of two of rows: the reader's chunks (4096 rows by default, from a shard's row 0) are whole blocks
        self.block_rows = 1 << max(0, (BLOCK_BYTES // self.row_bytes).bit_length() - 1)

    def __len__(self) -> int:
        return self.shape[0]

    def _requests(self, blocks: np.ndarray) -> list[tuple[str, str, int, int]]:
        T, br, rb = self.shape[0], self.block_rows, self.row_bytes
        return [
            (f"{self.key}.{int(k)}.blk", self.rel, int(k) * br * rb, min(T, (int(k) + 1) * br) * rb)
            for k in blocks
        ]

    def _rows(self, block: int, data: np.ndarray) -> np.ndarray:
        return data.view(self.dtype).reshape(-1, self.shape[1])

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, int | np.integer):
            return self[int(key) : int(key) + 1][0]
        if isinstance(key, slice):
            a, b, step = key.indices(self.shape[0])
            if step != 1:
                return self[np.arange(a, b, step, dtype=np.int64)]
            return self.span(a, b)
        return self.take(np.asarray(key, dtype=np.int64))

    def span(self, a: int, b: int) -> np.ndarray:
        """Rows [a, b): a read-only view of the cached block when they lie in one, else a copy."""
        out = np.empty((max(0, b - a), self.shape[1]), dtype=self.dtype)
        if b <= a:
            return out
        br = self.block_rows
        if a // br == (b - 1) // br:
            k = a // br
            (data,) = self.cache.get(self._requests(np.array([k])))
            return self._rows(k, data)[a - k * br : b - k * br]
        blocks = np.arange(a // br, (b - 1) // br + 1)
        for k, data in zip(blocks, self.cache.get(self._requests(blocks)), strict=True):
            lo, hi = max(a, int(k) * br), min(b, (int(k) + 1) * br)
            out[lo - a : hi - a] = self._rows(int(k), data)[lo - int(k) * br : hi - int(k) * br]
        return out

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Sorted rows (a gather): each block they fall in is read once."""
        out = np.empty((len(rows), self.shape[1]), dtype=self.dtype)
        if not len(rows):
            return out
        if rows[0] < 0 or rows[-1] >= self.shape[0]:
            raise IndexError(f"rows {rows[0]}..{rows[-1]} out of range for {self.shape[0]} rows")
        br = self.block_rows
        of = rows // br
        blocks, starts = np.unique(of, return_index=True)
        bounds = [*starts.tolist(), len(rows)]
        for i, (k, data) in enumerate(zip(blocks, self.cache.get(self._requests(blocks)), strict=True)):
            sel = rows[bounds[i] : bounds[i + 1]] - int(k) * br
            out[bounds[i] : bounds[i + 1]] = self._rows(int(k), data)[sel]
        return out

    def prefetch(self, a: int, b: int) -> None:
        if b > a:
            br = self.block_rows
            self.cache.prefetch(self._requests(np.arange(a // br, (b - 1) // br + 1)))


__all__ = ["BLOCK_BYTES", "BlockCache", "CacheStats", "RemoteRows"]
