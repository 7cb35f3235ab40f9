"""Row sources: the I/O half of reading one layer of one shard (which rows, read-ahead, the gather).

``Shard.row_source(layer)`` gives one of two kinds, with one interface, so the training reader's mixing
(train/) never knows where rows come from:

* ``MemmapSource``: an uncompressed local shard. Rows are read in place from the np.memmap of the activation
  file: a contiguous run is a view whose pages are faulted in, read-ahead is madvise(WILLNEED), and
  ``gather`` copies rows straight into the caller's batch (``in_place``: no mixing-buffer copy needed).
* ``ArraySource``: everything else (a remote shard's range requests through the block cache, a compressed
  shard's zarr reads). ``read`` returns fresh arrays, read-ahead starts the block fetches.

* ``PackedSource``: an fp8 layer (either kind underneath): each row comes out as its d_model fp8 codes followed by
  the 4 bytes of its float32 scale (uint8 [n, d_model + 4], ``store.dtypes.pack_fp8``). The scale travels with
  its row through the mixing buffer, the batch and the upload (about half bf16's bytes), and the row is decoded
  (x = scale * value(q)) where the batch lands: on the GPU when training there (``store.dtypes.unpack_fp8``).

All rows are shard-local, sorted, int64, in the stored representation (uint16 bits for bfloat16; packed rows
for fp8).
"""

from __future__ import annotations

import mmap
import warnings
from typing import Any

import numpy as np

from .format import SCALE_DTYPE

PAGE_BYTES = 4096
SCALE_BYTES = SCALE_DTYPE.itemsize  # a packed fp8 row's float32 scale


class MemmapSource:
    """Rows of an uncompressed local activation file, read in place (see the module doc)."""

    in_place = True

    def __init__(self, array: np.memmap):
        self.array = array
        self.shape, self.dtype = array.shape, array.dtype
        self._tensor = None

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Consecutive rows: a view of the memmap (no copy) whose pages are faulted in here, so that the
        consumer's copy out of it does no I/O; otherwise a sorted gather (sequential in the file)."""
        if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
            return self.span(int(rows[0]), int(rows[-1]) + 1)
        return np.asarray(self.array[rows])

    def span(self, a: int, b: int) -> np.ndarray:
        block = self.array[a:b].view(np.ndarray)  # a plain view: slicing a memmap subclass is slow
        if block.size:
            np.bitwise_or.reduce(block.reshape(-1).view(np.uint8)[::PAGE_BYTES])  # fault pages in
        return block

    def touch(self, a: int, b: int) -> None:
        if b > a:
            self.span(a, b)

    def advise(self, a: int, b: int) -> None:
        """Ask the kernel to start reading rows [a, b) now (madvise WILLNEED: asynchronous readahead into the
        page cache), so that faulting them in later waits for no disk. Without the hint a cold span is read by
        its page faults, one readahead window at a time, each a synchronous disk round trip."""
        mm = getattr(self.array, "_mmap", None)  # np.memmap's mmap.mmap of the file (from offset 0 here)
        if mm is None or not hasattr(mm, "madvise") or b <= a:
            return
        row_bytes = self.array.strides[0]
        # np.memmap maps the file from offset - offset % ALLOCATIONGRANULARITY: the array starts this far into mm
        base_in_mm = int(self.array.offset) % mmap.ALLOCATIONGRANULARITY
        start = base_in_mm + a * row_bytes
        stop = base_in_mm + b * row_bytes
        start -= start % mmap.PAGESIZE
        try:
            mm.madvise(mmap.MADV_WILLNEED, start, stop - start)
        except OSError:  # a hint: a file system that refuses it costs speed, never the run
            pass

    def tensor(self):
        """The memmap as a read-only torch tensor (bf16 bits as int16), made once."""
        if self._tensor is None:
            import torch

            arr = self.array.view(np.ndarray)
            if arr.dtype == np.uint16:
                arr = arr.view(np.int16)
            with warnings.catch_warnings():  # read-only mapping: torch warns that it is not writable
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                self._tensor = torch.from_numpy(arr)
        return self._tensor

    def gather(self, rows: np.ndarray, out: Any) -> None:
        """Rows into ``out`` (a torch tensor [len(rows), d_model], stored dtype; bf16 as int16): one monotone
        index_select from the mapping (several times faster than numpy's take here)."""
        import torch

        torch.index_select(self.tensor(), 0, torch.from_numpy(rows), out=out)


class ArraySource:
    """Rows of anything indexable as ``a[start:stop]`` / ``a[sorted_rows]`` (RemoteRows, ZarrRows)."""

    in_place = False

    def __init__(self, array: Any):
        self.array = array
        self.shape, self.dtype = tuple(array.shape), np.dtype(array.dtype)

    def read(self, rows: np.ndarray) -> np.ndarray:
        if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
            return np.asarray(self.array[int(rows[0]) : int(rows[-1]) + 1])
        return np.asarray(self.array[rows])

    def span(self, a: int, b: int) -> np.ndarray:
        return np.asarray(self.array[a:b])

    def touch(self, a: int, b: int) -> None:
        self.advise(a, b)

    def advise(self, a: int, b: int) -> None:
        prefetch = getattr(self.array, "prefetch", None)
        if prefetch is not None:
            prefetch(a, b)

    def gather(self, rows: np.ndarray, out: Any) -> None:
        import torch

        raw = self.read(rows)
        out.copy_(torch.from_numpy(raw.view(np.int16) if raw.dtype == np.uint16 else raw))


class PackedSource:
    """An fp8 layer's rows packed with their per-token scales (see the module doc): uint8 [n, d_model + 4]."""

    def __init__(self, inner: MemmapSource | ArraySource, scales: np.ndarray, dtype: str):
        self.inner, self.scales, self.fp8 = inner, scales, dtype
        self.in_place = inner.in_place
        self.array = inner.array
        self.d_model = int(inner.shape[1])
        self.shape, self.dtype = (int(inner.shape[0]), self.d_model + SCALE_BYTES), np.dtype(np.uint8)

    def read(self, rows: np.ndarray) -> np.ndarray:
        from .dtypes import pack_fp8

        return pack_fp8(self.inner.read(rows), np.asarray(self.scales[rows]))

    def span(self, a: int, b: int) -> np.ndarray:
        from .dtypes import pack_fp8

        return pack_fp8(self.inner.span(a, b), np.asarray(self.scales[a:b]))

    def touch(self, a: int, b: int) -> None:
        self.inner.touch(a, b)

    def advise(self, a: int, b: int) -> None:
        self.inner.advise(a, b)

    def gather(self, rows: np.ndarray, out: Any) -> None:
        """Packed rows into ``out`` (a uint8 torch tensor [len(rows), d_model + 4]): the codes gathered as the
        inner source does (in place from a memmap), then their scales' bytes beside them."""
        import torch

        d = self.d_model
        if isinstance(self.inner, MemmapSource):
            self.inner.gather(rows, out[:, :d])  # index_select writes the strided codes columns in place
        else:
            out[:, :d].copy_(torch.from_numpy(self.inner.read(rows)))
        scale = np.asarray(self.scales).view(np.ndarray)[rows]  # a plain view: fancy-indexing a memmap is slower
        out[:, d:].copy_(torch.from_numpy(scale.view(np.uint8).reshape(len(rows), SCALE_BYTES)))


def row_source(raw: Any, scales: np.ndarray | None = None, dtype: str | None = None):
    """The row source of a layer's stored rows; with ``scales`` (an fp8 layer): a PackedSource over it."""
    inner = MemmapSource(raw) if isinstance(raw, np.memmap) else ArraySource(raw)
    return inner if scales is None else PackedSource(inner, scales, dtype)


__all__ = ["ArraySource", "MemmapSource", "PackedSource", "row_source"]
