"""quick_check: verify's cheap checks, no activation read (declared.py's size checks, the small arrays' content
and checksums, the activation files' indexes, metadata consistency). verify.py adds what needs a full read."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from .declared import check_declared, where, zstd_chunks
from .errors import StoreCorruptError
from .format import ATTRS_KEY, DTYPES, ZARR_JSON, act_array_name, file_crc32c
from .shardfile import check_compressed_index, check_shard_index, memmappable
from .token_types import NUM_TOKEN_TYPES

if TYPE_CHECKING:
    from .reader import Shard, Store


def check_small(shard: Shard, *, vocab_size: int | None = None) -> None:
    """The small arrays' content: checksums (schema 2), offsets, token types and ids in range, doc starts,
    sources. Reads T * 5 bytes and the offsets, never an activation. Raises StoreCorruptError."""
    what = f"shard {shard.name}"
    T = shard.num_tokens
    shard.offsets  # noqa: B018  (validates monotone offsets ending at T)
    types = shard.token_types
    if T and int(types.max()) >= NUM_TOKEN_TYPES:
        bad = int(np.argmax(types >= NUM_TOKEN_TYPES))
        raise StoreCorruptError(
            f"{what} array token_types: invalid value {int(types[bad])} at token {bad} "
            f"(valid: 0..{NUM_TOKEN_TYPES - 1}; {shard.locate(bad)})"
        )
    ids = shard.token_ids
    limit = vocab_size if vocab_size else np.iinfo(np.int32).max + 1
    if T and (int(ids.min()) < 0 or int(ids.max()) >= limit):
        bad = int(np.argmax((ids < 0) | (ids >= limit)))
        valid = f"0..{vocab_size - 1}, the tokenizer's vocabulary" if vocab_size else ">= 0"
        raise StoreCorruptError(
            f"{what} array token_ids: invalid id {int(ids[bad])} at token {bad} (valid: {valid}; "
            f"{shard.locate(bad)})"
        )
    starts = np.asarray(shard.doc_starts)
    if len(starts) and ((np.diff(starts) <= 0).any() or starts[0] < 0 or starts[-1] >= T):
        raise StoreCorruptError(f"{what} array doc_starts: not strictly increasing within [0, {T})")
    if (np.asarray(shard.sources) < 0).any() or (np.asarray(shard.doc_sources) < 0).any():
        raise StoreCorruptError(f"{what}: negative entries in sources/doc_sources")
    for layer in shard.layers if shard.dtype in ("fp8_e4m3", "fp8_e5m2") else []:
        check_scales(shard, layer)
    # then their bytes: content that passes the checks above may still have been changed
    for rel, entry in shard.files.items():
        if rel.startswith("acts/") and not rel.endswith(("_scale/c/0", ZARR_JSON)):
            continue  # activation data: verify's full read
        if file_crc32c(shard.path / rel) != entry["crc32c"]:
            raise StoreCorruptError(f"{where(what, rel)} was changed after writing (crc32c mismatch)")


def check_scales(shard: Shard, layer: int) -> None:
    """An fp8 layer's per-token scales: finite and >= 0 (0: an all-zero row, whose q verify's full read checks)."""
    sc = np.asarray(shard.scales(layer))
    bad = ~(np.isfinite(sc) & (sc >= 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise StoreCorruptError(
            f"shard {shard.name} array acts/layer_{layer}_scale: scale {float(sc[i])!r} at token {i} is not "
            f"finite and >= 0 ({shard.locate(i)})"
        )


def check_acts_index(shard: Shard, layers: Iterable[int]) -> None:
    """The shard index (entries, crc32c) of each layer's activation file: 16 bytes per inner chunk read."""
    for layer in layers:
        if layer not in shard.layers:
            continue
        name = act_array_name(layer)
        what = f"shard {shard.name} array {name}"
        np_dtype, itemsize = DTYPES[shard.dtype]
        meta, path = shard._array_meta(name), shard.act_file(layer)
        plan = memmappable(meta, (shard.num_tokens, shard.d_model), np_dtype)
        if plan is not None:
            check_shard_index(
                path, rows_per_chunk=plan[0], n_chunks=plan[1], row_bytes=itemsize * shard.d_model, what=what
            )
        elif (zplan := zstd_chunks(meta, (shard.num_tokens, shard.d_model), np_dtype)) is not None:
            check_compressed_index(path, zplan[1], what)


def vocab_size_of(meta: dict) -> int | None:
    tok = meta.get("tokenizer")
    size = tok.get("vocab_size") if isinstance(tok, dict) else None
    return size if type(size) is int and size > 0 else None


def quick_check(store: Store, *, layers: Iterable[int] | None = None) -> list[str]:
    """verify's cheap checks on an open store, no activation read: (at open already) declared shapes and
    counts vs file sizes, no symbolic links, attribute and zarr.json checksums; here the small arrays' checksums,
    offsets monotone and ending at each shard's token count, token types in range, token ids below the
    tokenizer's vocabulary size (store.json), doc starts, sources, and layers/d_model/dtype agreeing with
    store.json; the activation files of ``layers`` (None: all) have their exact sizes and index crc32c.
    Returns warnings; raises StoreCorruptError (``.problems``: one line each)."""
    problems, warnings = [], []
    vocab = vocab_size_of(store.meta)
    for shard in store.shards:
        try:
            check_declared(shard.path, shard.attrs[ATTRS_KEY], act_layers=layers, tree=shard.objects)
            check_acts_index(shard, shard.layers if layers is None else layers)
            check_small(shard, vocab_size=vocab)
        except StoreCorruptError as e:
            problems.append(str(e))
    problems += meta_consistency(store.meta, store.shards)
    if vocab is None and store.shards:
        warnings.append("store.json names no tokenizer vocab_size: token ids are checked against int32 only")
    if problems:
        head = problems[0] if len(problems) == 1 else f"{len(problems)} problems, first: {problems[0]}"
        raise StoreCorruptError(f"store {store.path}: {head}", problems)
    return warnings


def meta_consistency(meta: dict, shards: list[Shard]) -> list[str]:
    """Shards agree with each other and with store.json on layers, d_model and dtype."""
    problems = []
    kinds = {(tuple(sh.layers), sh.d_model, sh.dtype) for sh in shards}
    if len(kinds) > 1:
        problems.append(f"shards disagree on (layers, d_model, dtype): {sorted(kinds)}")
    for key in ("layers", "d_model", "dtype"):
        if key in meta and shards and len(kinds) == 1:
            value = {"layers": shards[0].layers, "d_model": shards[0].d_model, "dtype": shards[0].dtype}[key]
            if meta[key] != value:
                problems.append(f"store.json says {key} = {meta[key]!r}, the shards have {value!r}")
    return problems
