"""Byte layout of an acts shard file (one zarr sharding-codec shard holding a whole [T, d_model] array):
inner chunks in row order, then the shard index ((offset, nbytes) uint64 LE per chunk) and its crc32c."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import StoreCorruptError
from .format import INDEX_ENTRY_BYTES, MAX_UINT64, crc32c, index_nbytes


def build_index(entries: np.ndarray) -> bytes:
    """[n, 2] (offset, nbytes) -> index bytes + crc32c, as zarr's sharding codec writes them (index_location end)."""
    idx = np.ascontiguousarray(entries, dtype="<u8").tobytes()
    return idx + np.array([crc32c(idx)], dtype="<u4").tobytes()


def contiguous_index(n_chunks: int, chunk_bytes: int) -> np.ndarray:  # [n, 2]
    return np.stack(
        [np.arange(n_chunks, dtype="<u8") * chunk_bytes, np.full(n_chunks, chunk_bytes, dtype="<u8")], axis=1
    )


def acts_chunks(
    meta: dict, shape: tuple[int, ...], np_dtype: np.dtype, *, compression: str | None
) -> tuple[int, int] | None:
    """(rows_per_chunk, n_chunks) if an acts array's zarr.json has fastsae's layout for ``compression`` (None
    or "zstd"), else None: one sharding_indexed codec whose shard holds the whole array, its index at the end
    with a crc32c, inner chunks of whole rows encoded by little-endian bytes (then zstd), the '/' chunk keys.
    The one parser of the acts arrays' codecs (memmappable and zstd_chunks are its two modes)."""
    inner_codecs = ["bytes"] if compression is None else ["bytes", compression]
    try:
        (codec,) = meta["codecs"]
        cfg = codec["configuration"]
        grid = meta["chunk_grid"]["configuration"]["chunk_shape"]
        inner = cfg["chunk_shape"]
        ok = (
            codec["name"] == "sharding_indexed"
            and cfg.get("index_location", "end") == "end"
            and [c["name"] for c in cfg["codecs"]] == inner_codecs
            and cfg["codecs"][0].get("configuration", {}).get("endian", "little") == "little"
            and [c["name"] for c in cfg["index_codecs"]] == ["bytes", "crc32c"]
            and np.dtype(meta["data_type"]) == np_dtype
            and list(inner[1:]) == list(shape[1:]) == list(grid[1:])
            and type(inner[0]) is int
            and inner[0] > 0
            and type(grid[0]) is int
            and grid[0] >= shape[0]
            and grid[0] % inner[0] == 0
            and meta["chunk_key_encoding"]["name"] == "default"
            and meta["chunk_key_encoding"].get("configuration", {}).get("separator", "/") == "/"
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return (inner[0], grid[0] // inner[0]) if ok else None


def memmappable(meta: dict, shape: tuple[int, ...], np_dtype: np.dtype) -> tuple[int, int] | None:
    """(rows_per_chunk, n_chunks) if this acts array has the uncompressed single-shard layout, else None."""
    return acts_chunks(meta, shape, np_dtype, compression=None)


def zstd_chunks(meta: dict, shape: tuple[int, int], np_dtype: np.dtype) -> tuple[int, int] | None:
    """(rows_per_chunk, n_chunks) of a zstd acts array in fastsae's layout, else None."""
    return acts_chunks(meta, shape, np_dtype, compression="zstd")


def file_size(path: Path | Any, what: str) -> int:
    """Size of a local file or of a remote object (remote.RemoteFile)."""
    try:
        return path.stat().st_size if isinstance(path, Path) else path.size()
    except FileNotFoundError:
        raise StoreCorruptError(f"{what}: shard file {path.name} is missing") from None


def read_index(path: Path | Any, size: int, n_chunks: int) -> tuple[bytes, int]:
    """(index entry bytes, stored crc32c) from the end of a file of ``size`` bytes: one read (or range)."""
    nidx = index_nbytes(n_chunks)
    if isinstance(path, Path):
        with open(path, "rb") as f:
            f.seek(size - nidx)
            tail = f.read(nidx)
    else:
        tail = path.read(size - nidx, size)
    return tail[: INDEX_ENTRY_BYTES * n_chunks], int(np.frombuffer(tail[-4:], dtype="<u4")[0])


def check_shard_index(
    path: Path | Any, *, rows_per_chunk: int, n_chunks: int, row_bytes: int, what: str
) -> None:
    """Checks size, crc32c and entries of an uncompressed acts shard file (local, or a remote object);
    raises StoreCorruptError."""
    chunk_bytes = rows_per_chunk * row_bytes
    expected = chunk_bytes * n_chunks + index_nbytes(n_chunks)
    size = file_size(path, what)
    if size != expected:
        raise StoreCorruptError(
            f"{what}: shard file is {size} bytes, expected {expected} (truncated or overwritten)"
        )
    idx_bytes, crc = read_index(path, size, n_chunks)
    if crc32c(idx_bytes) != crc:
        raise StoreCorruptError(f"{what}: shard index crc32c mismatch")
    idx = np.frombuffer(idx_bytes, dtype="<u8").reshape(n_chunks, 2)
    if not (
        np.array_equal(idx[:, 0], np.arange(n_chunks, dtype=np.uint64) * chunk_bytes)
        and (idx[:, 1] == chunk_bytes).all()
    ):
        raise StoreCorruptError(f"{what}: shard index entries do not describe contiguous inner chunks")


def check_compressed_index(path: Path | Any, n_chunks: int, what: str) -> None:
    size = file_size(path, what)
    nidx = index_nbytes(n_chunks)
    if size < nidx:
        raise StoreCorruptError(f"{what}: shard file is {size} bytes, smaller than its index ({nidx} bytes)")
    idx_bytes, crc = read_index(path, size, n_chunks)
    if crc32c(idx_bytes) != crc:
        raise StoreCorruptError(f"{what}: shard index crc32c mismatch")
    idx = np.frombuffer(idx_bytes, dtype="<u8").reshape(n_chunks, 2)
    present = idx[:, 0] != MAX_UINT64
    if (idx[present, 0] + idx[present, 1] > size - nidx).any():
        raise StoreCorruptError(f"{what}: shard index points past the data region (truncated file?)")
