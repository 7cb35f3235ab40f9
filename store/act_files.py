"""The activation files of a partial shard (writer.py), one zarr shard file per layer, written as a stream.

Rows go straight to each ``acts/layer_<L>/c/0/0`` file: raw rows (uncompressed), or zstd inner chunks of
rows_per_chunk rows (compressed: only the rows of the unfinished chunk are held in RAM). Each file keeps a
running crc32c and size. ``finish`` pads the data to whole inner chunks and appends the shard index with its
crc32c (the byte layout of shardfile.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .format import ZSTD_LEVEL, act_shard_file, crc32c, plan_chunks
from .shardfile import build_index, contiguous_index


class ActFiles:
    """The open activation files of ``layers`` inside the partial directory ``partial``."""

    def __init__(
        self,
        partial: Path,
        layers: list[int],
        *,
        d_model: int,
        np_dtype: np.dtype,
        row_bytes: int,
        target_rows: int,
        rows_per_chunk: int | None,
        compression: str | None,
    ):
        self.layers, self.d_model, self.np_dtype = layers, d_model, np_dtype
        self.row_bytes, self.target_rows, self.rows_per_chunk = row_bytes, target_rows, rows_per_chunk
        self.compression = compression
        self.files: dict = {}
        self.ino: dict[int, int] = {}  # each file's inode: the commit checks it is still the one written
        try:
            for layer in layers:
                f = act_shard_file(partial, layer)
                f.parent.mkdir(parents=True)
                self.files[layer] = open(f, "wb")
                self.ino[layer] = os.fstat(self.files[layer].fileno()).st_ino
        except BaseException:
            self.close()
            raise
        self.crc = {layer: 0 for layer in layers}  # running crc32c and size of each acts file
        self.nbytes = {layer: 0 for layer in layers}
        self._pending: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}  # zstd mode only
        self._pending_rows = 0
        self._index: dict[int, list[tuple[int, int]]] = {layer: [] for layer in layers}  # zstd mode only
        self._zstd = None

    def _put(self, layer: int, data: bytes | np.ndarray) -> None:
        self.files[layer].write(data if isinstance(data, bytes) else data.data)
        self.crc[layer] = crc32c(data, self.crc[layer])
        self.nbytes[layer] += len(data) if isinstance(data, bytes) else data.nbytes

    def write_rows(self, encoded: dict[int, np.ndarray], n: int) -> None:
        """The n rows of one sequence, per layer (stored representation)."""
        if self.compression is None:
            for layer, raw in encoded.items():
                self._put(layer, raw)
            return
        for layer, raw in encoded.items():
            self._pending[layer].append(raw)
        self._pending_rows += n
        rpc = self.target_rows
        if self._pending_rows >= rpc:
            full = self._pending_rows // rpc * rpc
            for layer in self.layers:
                rows = np.concatenate(self._pending[layer])
                for start in range(0, full, rpc):
                    self._write_chunk(layer, rows[start : start + rpc])
                self._pending[layer] = [rows[full:]] if full < len(rows) else []
            self._pending_rows -= full

    def _write_chunk(self, layer: int, rows: np.ndarray) -> None:
        if self._zstd is None:
            from numcodecs import Zstd

            self._zstd = Zstd(level=ZSTD_LEVEL)
        data = bytes(self._zstd.encode(np.ascontiguousarray(rows).tobytes()))
        self._index[layer].append((self.nbytes[layer], len(data)))
        self._put(layer, data)

    def finish(self, T: int) -> tuple[int, int]:
        """Pad to whole inner chunks and append each file's index (T rows written); -> (rows_per_chunk,
        n_chunks). The files are flushed, not closed: fsynced with the rest of the tree at commit."""
        if self.compression is None:
            if self.rows_per_chunk:
                rpc, n_chunks = self.rows_per_chunk, -(-T // self.rows_per_chunk)
            else:
                rpc, n_chunks = plan_chunks(T, self.target_rows)
            index = contiguous_index(n_chunks, rpc * self.row_bytes)
            pad = bytes((rpc * n_chunks - T) * self.row_bytes)
        else:
            rpc, n_chunks = self.target_rows, -(-T // self.target_rows)
        for layer in self.layers:
            f = self.files[layer]
            if self.compression is None:
                self._put(layer, pad)
                idx = index
            else:
                if self._pending_rows:
                    rows = np.concatenate(self._pending[layer])
                    padded = np.zeros((rpc, self.d_model), dtype=self.np_dtype)
                    padded[: len(rows)] = rows
                    self._write_chunk(layer, padded)
                idx = np.asarray(self._index[layer], dtype="<u8")
                assert idx.shape == (n_chunks, 2), (idx.shape, n_chunks)
            self._put(layer, build_index(idx))
            f.flush()  # fsynced with the rest of the tree at commit, closed after the check
        return rpc, n_chunks

    def manifest(self) -> dict[str, dict]:
        """{path inside the shard: {"bytes", "crc32c"}} of every acts file."""
        return {
            act_shard_file(Path(), layer).as_posix(): {"bytes": self.nbytes[layer], "crc32c": self.crc[layer]}
            for layer in self.layers
        }

    def inodes(self) -> dict[str, int]:
        return {act_shard_file(Path(), layer).as_posix(): self.ino[layer] for layer in self.layers}

    def close(self) -> None:
        for f in self.files.values():
            if not f.closed:
                f.close()
