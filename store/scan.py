"""Full reads of activation files: their crc32c (schema 2) and their values (finite, |x| <= MAX_ABS_ACTIVATION).

verify reads each uncompressed acts file once, in blocks, for both. ``find_bad_activation`` is the value scan
alone, for a caller that met a bad value (train's non-finite batch) and wants its shard and sequence.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .declared import zstd_chunks
from .dtypes import is_fp8, to_float32
from .errors import StoreCorruptError
from .format import DTYPES, MAX_ABS_ACTIVATION, act_array_name, act_shard_file, crc32c, file_crc32c
from .shardfile import check_compressed_index, check_shard_index, memmappable

if TYPE_CHECKING:
    from .reader import Shard, Store, TokenLocation

BLOCK_BYTES = 16 * 2**20  # activation files are scanned in blocks of about this size


def _bf16_bound_bits(bound: float) -> int:
    """Largest bfloat16 magnitude bit pattern whose value is <= bound (the top half of float32(bound))."""
    return int(np.array(bound, dtype=np.float32).view(np.uint32)) >> 16


_STEP = 1 << 18  # elements per pass of the scan, through one reused buffer that stays in cache


def first_bad_row(
    rows: np.ndarray, dtype: str, bound: float = MAX_ABS_ACTIVATION
) -> tuple[int, float] | None:
    """(row, value) of the first row of ``rows`` (stored representation, [n, d], C-contiguous) holding NaN,
    inf or a value with |x| > bound; None if there is none."""
    flat = np.ascontiguousarray(rows).reshape(-1)
    if not flat.size:
        return None
    bf16 = dtype == "bfloat16"
    limit = _bf16_bound_bits(bound) if bf16 else np.float32(bound)  # float16 would round 1e6 to inf
    tmp = np.empty(min(_STEP, flat.size), dtype=flat.dtype)
    for a in range(0, flat.size, _STEP):
        part = flat[a : a + _STEP]
        mag = (
            np.bitwise_and(part, 0x7FFF, out=tmp[: part.size]) if bf16 else np.abs(part, out=tmp[: part.size])
        )
        if not mag.max() <= limit:  # NaN compares False
            k = a + int(np.argmax(~(mag <= limit)))
            i, j = divmod(k, rows.shape[1])
            return i, float(to_float32(rows[i : i + 1, j : j + 1], dtype)[0, 0])
    return None


def _bad_row(
    rows: np.ndarray, shard: Shard, layer: int, start: int, bound: float
) -> tuple[int, float] | None:
    """first_bad_row of stored rows [start, start + n); fp8 rows are decoded with their scales first, and a row
    of scale 0 must be all zero (q = 0)."""
    if not is_fp8(shard.dtype):
        return first_bad_row(rows, shard.dtype, bound)
    from .errors import StoreCorruptError

    sc = np.asarray(shard.scales(layer)[start : start + len(rows)])
    zero = sc == 0
    if zero.any() and (nz := np.flatnonzero(zero & ((rows & 0x7F).max(axis=1) > 0))).size:
        i = start + int(nz[0])
        raise StoreCorruptError(
            f"shard {shard.name} array acts/layer_{layer}: token {i} has scale 0 but non-zero values "
            f"({shard.locate(i)})"
        )
    return first_bad_row(to_float32(rows, shard.dtype, sc), "float32", bound)


def _describe(what: str, shard: Shard, row: int, value: float, bound: float) -> str:
    kind = "non-finite value" if not np.isfinite(value) else f"value {value:.3g} beyond |x| <= {bound:g}"
    return f"{what}: {kind} at token {row} ({shard.locate(row)})"


@dataclass(frozen=True)
class BadActivation:
    """A non-finite or absurd activation: where it is, its layer and value."""

    location: TokenLocation
    layer: int
    value: float

    def __str__(self) -> str:
        kind = "non-finite activation" if not np.isfinite(self.value) else f"activation {self.value:.3g}"
        return f"{kind} in layer {self.layer} at {self.location}"


def find_bad_activation(
    store: Store, layer: int, *, bound: float = MAX_ABS_ACTIVATION, rows_per_block: int | None = None
) -> BadActivation | None:
    """The first NaN, inf or |x| > bound of ``layer`` in store order (a full read of that layer), or None."""
    for shard in store.shards:
        raw = shard.raw_acts(layer)
        block = rows_per_block or max(1, BLOCK_BYTES // (DTYPES[shard.dtype][1] * shard.d_model))
        for start in range(0, shard.num_tokens, block):
            bad = first_bad_row(np.asarray(raw[start : start + block]), shard.dtype, bound)
            if bad is not None:
                return BadActivation(shard.locate(start + bad[0]), layer, bad[1])
    return None


def _remote_crc32c(obj) -> int:
    crc, size = 0, obj.size()
    for a in range(0, size, BLOCK_BYTES):
        crc = crc32c(obj.read(a, min(size, a + BLOCK_BYTES)), crc)
    return crc


def scan_acts(shard: Shard, layer: int, *, values: bool = True, bound: float = MAX_ABS_ACTIVATION) -> None:
    """Index crc and entries; with ``values``: every activation finite and |x| <= bound, and (schema 2) the file's
    crc32c equal to its manifest's. Raises StoreCorruptError naming the shard, array, token and sequence."""
    name = act_array_name(layer)
    what = f"shard {shard.name} array {name}"
    path = shard.act_file(layer)  # a Path, or a remote shard's object (read by range requests)
    entry = shard.files.get(act_shard_file(Path(), layer).as_posix())
    np_dtype, itemsize = DTYPES[shard.dtype]
    row_bytes = itemsize * shard.d_model
    T = shard.num_tokens
    meta = shard._array_meta(name)
    plan = memmappable(meta, (T, shard.d_model), np_dtype)
    block_rows = max(1, BLOCK_BYTES // row_bytes)
    if plan is None:
        zplan = zstd_chunks(meta, (T, shard.d_model), np_dtype)
        if zplan is None:
            raise StoreCorruptError(f"{what}: chunks or codecs differ from the format's")
        check_compressed_index(path, zplan[1], what)
        if not values:
            return
        crc = (file_crc32c(path) if isinstance(path, Path) else _remote_crc32c(path)) if entry else None
        raw = shard.raw_acts(layer)
        first = None
        for start in range(0, T, block_rows):
            try:
                rows = np.asarray(raw[start : start + block_rows])
            except Exception as e:  # decode errors of compressed chunks
                raise StoreCorruptError(
                    f"{what}: rows {start}.. cannot be decoded ({type(e).__name__}: {e})"
                ) from None
            if (bad := _bad_row(rows, shard, layer, start, bound)) is not None:
                first = (start + bad[0], bad[1])
                break
    else:
        check_shard_index(path, rows_per_chunk=plan[0], n_chunks=plan[1], row_bytes=row_bytes, what=what)
        if not values:
            return
        crc, first = 0, None
        step = block_rows * row_bytes

        def visit(a: int, block: np.ndarray) -> None:  # bytes [a, a + len(block)) of the file
            nonlocal crc, first
            if entry:
                crc = crc32c(block, crc)
            k = min(block_rows, T - a // row_bytes)
            if first is None and k > 0:
                rows = block[: k * row_bytes].view(np_dtype).reshape(k, shard.d_model)
                if (bad := _bad_row(rows, shard, layer, a // row_bytes, bound)) is not None:
                    first = (a // row_bytes + bad[0], bad[1])

        if not isinstance(path, Path):  # a remote object: one range request per block, nothing kept
            size = path.size()
            for a in range(0, size, step):
                visit(a, np.frombuffer(path.read(a, min(size, a + step)), dtype=np.uint8))
        else:
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                data = np.frombuffer(m, dtype=np.uint8)  # one pass over the mapped file: no copy
                for a in range(0, len(data), step):
                    visit(a, data[a : a + step])
                del data  # before the mapping closes
    crc_ok = entry is None or crc == entry["crc32c"]
    if first is not None:
        since = (
            "" if entry is None
            else "; the file's crc32c does not match: changed after writing" if not crc_ok
            else "; the file's crc32c matches: written so"
        )  # fmt: skip
        raise StoreCorruptError(_describe(what, shard, first[0], first[1], bound) + since)
    if not crc_ok:
        raise StoreCorruptError(f"{what}: shard file c/0/0 was changed after writing (crc32c mismatch)")
