"""Full integrity check (verify_store) and summary (summarize_store) of a store directory."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .dtypes import all_finite
from .errors import StoreCorruptError, StoreError, StoreNotFoundError
from .format import (
    DTYPES,
    SKIPPED_JSONL,
    SMALL_ARRAYS,
    STORE_JSON,
    ZARR_JSON,
    act_array_name,
    act_shard_file,
    list_partials,
    list_shards,
    read_json,
    read_store_json,
)
from .reader import Shard, check_sequence_ranges, open_store
from .shardfile import check_compressed_index, check_shard_index, memmappable
from .token_types import NUM_TOKEN_TYPES, TokenType

BLOCK_BYTES = 64 * 2**20  # acts are streamed through the finiteness check in blocks of about this size


def _open_zarr(shard_dir: Path, name: str | None) -> Any:
    import zarr
    from zarr.storage import LocalStore

    store = LocalStore(shard_dir, read_only=True)
    if name is None:
        return zarr.open_group(store, mode="r", zarr_format=3)
    return zarr.open_array(store, path=name, mode="r", zarr_format=3)


def _verify_acts(shard: Shard, layer: int, *, check_values: bool) -> None:
    name = act_array_name(layer)
    what = f"shard {shard.name} array {name}"
    try:
        arr = _open_zarr(shard.path, name)
    except Exception as e:  # any failure to parse the metadata is damage
        raise StoreCorruptError(f"{what}: zarr cannot open it ({type(e).__name__}: {e})") from None
    np_dtype, itemsize = DTYPES[shard.dtype]
    if tuple(arr.shape) != (shard.num_tokens, shard.d_model) or np.dtype(arr.dtype) != np_dtype:
        raise StoreCorruptError(
            f"{what}: shape {list(arr.shape)} dtype {arr.dtype}, expected "
            f"{[shard.num_tokens, shard.d_model]} {np_dtype} ({shard.dtype})"
        )
    meta = read_json(shard.path / name / ZARR_JSON, what=what)
    if meta.get("attributes", {}).get("fastsae_dtype") != shard.dtype:
        raise StoreCorruptError(f"{what}: attribute fastsae_dtype != {shard.dtype!r}")
    plan = memmappable(meta, tuple(arr.shape), np_dtype)
    path = act_shard_file(shard.path, layer)
    if plan is not None:
        check_shard_index(
            path, rows_per_chunk=plan[0], n_chunks=plan[1], row_bytes=itemsize * shard.d_model, what=what
        )
    else:
        inner = (
            arr.metadata.codecs[0].chunk_shape[0] if hasattr(arr.metadata.codecs[0], "chunk_shape") else None
        )
        if inner is not None:
            check_compressed_index(path, -(-int(arr.metadata.chunk_grid.chunk_shape[0]) // int(inner)), what)
    if not check_values:
        return
    raw = shard.raw_acts(layer)
    block = max(1, BLOCK_BYTES // (itemsize * shard.d_model))
    for start in range(0, shard.num_tokens, block):
        try:
            rows = np.asarray(raw[start : start + block])
        except Exception as e:  # decode errors of compressed chunks
            raise StoreCorruptError(
                f"{what}: rows {start}.. cannot be decoded ({type(e).__name__}: {e})"
            ) from None
        if not all_finite(rows, shard.dtype):
            bad = start + int(np.argmax(~np.isfinite(_as_float(rows, shard.dtype)).all(axis=1)))
            raise StoreCorruptError(f"{what}: non-finite values (NaN/inf) at token {bad}")


def _as_float(rows: np.ndarray, dtype: str) -> np.ndarray:
    return (rows.astype(np.uint32) << 16).view(np.float32) if dtype == "bfloat16" else rows


def _verify_small(shard: Shard) -> None:
    T, S = shard.num_tokens, shard.num_sequences
    D = None
    for name, (np_dtype, trailing) in SMALL_ARRAYS.items():
        what = f"shard {shard.name} array {name}"
        try:
            arr = _open_zarr(shard.path, name)
        except Exception as e:  # any failure to parse the metadata is damage
            raise StoreCorruptError(f"{what}: zarr cannot open it ({type(e).__name__}: {e})") from None
        n = {"token_ids": T, "token_types": T, "offsets": S + 1, "sources": S}.get(name, D)
        if name == "doc_starts":
            D = n = int(arr.shape[0]) if arr.ndim == 1 else -1
        if tuple(arr.shape) != (n, *trailing) or np.dtype(arr.dtype) != np_dtype:
            raise StoreCorruptError(
                f"{what}: shape {list(arr.shape)} dtype {arr.dtype}, expected {[n, *trailing]} {np_dtype}"
            )
        shard.small_array(name)  # file size check
    shard.offsets  # noqa: B018  (validates monotone offsets ending at T)
    types = shard.token_types
    if T and int(types.max()) >= NUM_TOKEN_TYPES:
        bad = int(np.argmax(types >= NUM_TOKEN_TYPES))
        raise StoreCorruptError(
            f"shard {shard.name} array token_types: invalid value {int(types[bad])} at token {bad} "
            f"(valid: 0..{NUM_TOKEN_TYPES - 1})"
        )
    starts = np.asarray(shard.doc_starts)
    if len(starts) and ((np.diff(starts) <= 0).any() or starts[0] < 0 or starts[-1] >= T):
        raise StoreCorruptError(
            f"shard {shard.name} array doc_starts: not strictly increasing within [0, {T})"
        )
    if (np.asarray(shard.sources) < 0).any() or (np.asarray(shard.doc_sources) < 0).any():
        raise StoreCorruptError(f"shard {shard.name}: negative entries in sources/doc_sources")


def _open_shard(path: Path) -> Shard:
    try:
        group_meta = read_json(path / ZARR_JSON, what=f"shard {path.name}")
        _open_zarr(path, None)
    except StoreNotFoundError as e:
        raise StoreCorruptError(str(e)) from None
    except StoreCorruptError:
        raise
    except Exception as e:  # any failure to parse the metadata is damage
        raise StoreCorruptError(
            f"shard {path.name}: zarr cannot open the group ({type(e).__name__}: {e})"
        ) from None
    return Shard(path, group_meta)


def verify_shard(shard: Shard, *, check_values: bool = True) -> None:
    """Checks one shard's arrays completely; raises StoreCorruptError with a one-line message naming what is wrong."""
    _verify_small(shard)
    for layer in shard.layers:
        _verify_acts(shard, layer, check_values=check_values)


def verify_store(root: str | os.PathLike, *, check_values: bool = True) -> dict:
    """Full integrity check. Returns a report dict (with 'warnings', e.g. leftover .partial dirs); raises
    StoreCorruptError (``.problems``: one line per damaged shard/array) on any damage."""
    root = Path(root)
    if not root.is_dir():
        raise StoreNotFoundError(f"store not found: {root} is not a directory")
    problems: list[str] = []
    try:
        read_store_json(root)
    except StoreError as e:
        problems.append(str(e))
    warnings = [
        f"leftover partial shard {p.name} (a crashed writer; clean_partial removes it)"
        for p in list_partials(root)
    ]
    shards: list[Shard] = []
    for p in list_shards(root):
        try:
            shard = _open_shard(p)
        except StoreCorruptError as e:
            problems.append(str(e))
            continue
        shards.append(shard)  # its sequence range counts even if its arrays are damaged
        try:
            verify_shard(shard, check_values=check_values)
        except StoreCorruptError as e:
            problems.append(str(e))
    shards.sort(key=lambda sh: (sh.first_sequence, sh.name))
    problems += check_sequence_ranges(shards)
    kinds = {(tuple(sh.layers), sh.d_model, sh.dtype) for sh in shards}
    if len(kinds) > 1:
        problems.append(f"shards disagree on (layers, d_model, dtype): {sorted(kinds)}")
    if problems:
        head = problems[0] if len(problems) == 1 else f"{len(problems)} problems, first: {problems[0]}"
        raise StoreCorruptError(f"store {root}: {head}", problems)
    return {
        "path": str(root),
        "ok": True,
        "shards": len(shards),
        "sequences": sum(sh.num_sequences for sh in shards),
        "tokens": sum(sh.num_tokens for sh in shards),
        "warnings": warnings,
    }


def _skipped_counts(path: Path) -> dict[str, int] | None:
    if not path.exists():
        return None
    counts: Counter[str] = Counter()
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                reason = rec.get("reason", "unknown") if isinstance(rec, dict) else "unknown"
            except json.JSONDecodeError:
                reason = "unparseable"
            counts[str(reason)] += 1
    return dict(counts)


def summarize_store(root: str | os.PathLike) -> dict:
    """Model, layers, d_model, dtype, sequences, tokens, bytes, bytes/token, overhead ratio, token-type counts,
    data provenance and skipped counts (from skipped.jsonl, if present)."""
    s = open_store(root)
    meta, identity = s.meta, s.meta.get("identity") or {}
    type_counts = np.zeros(256, dtype=np.int64)
    for sh in s.shards:
        t = sh.token_types
        for start in range(0, sh.num_tokens, 2**24):
            type_counts += np.bincount(np.asarray(t[start : start + 2**24]), minlength=256)
    nbytes = sum(sh.bytes() for sh in s.shards) + (s.path / STORE_JSON).stat().st_size
    per_token = nbytes / s.num_tokens if s.num_tokens else None
    payload = DTYPES[s.dtype][1] * s.d_model * len(s.layers) if s.dtype and s.d_model else None
    token_types = {tt.name: int(type_counts[tt]) for tt in TokenType}
    if type_counts[NUM_TOKEN_TYPES:].any():
        token_types["INVALID"] = int(type_counts[NUM_TOKEN_TYPES:].sum())
    model = meta.get("model") or identity.get("model") or identity.get("model_id")
    revision = meta.get("revision")
    if isinstance(model, dict):  # harvest writes {"name", "revision", "commit", ...}
        revision = revision or model.get("revision") or model.get("commit")
        model = model.get("name") or model.get("id")
    revision = revision or identity.get("revision")
    return {
        "path": str(s.path),
        "model": model,
        "revision": revision,
        "layers": s.layers,
        "d_model": s.d_model,
        "dtype": s.dtype,
        "shards": len(s.shards),
        "sequences": s.num_sequences,
        "tokens": s.num_tokens,
        "bytes": nbytes,
        "bytes_per_token": per_token,
        # bytes/token / (dtype bytes x d_model x layers): 1.0 = nothing but the activations
        "overhead_ratio": per_token / payload if per_token and payload else None,
        "token_types": token_types,
        "data": meta.get("data"),
        "skipped": _skipped_counts(s.path / SKIPPED_JSONL),
        "partial_shards": len(list_partials(s.path)),
        "fingerprint": s.fingerprint,
    }
