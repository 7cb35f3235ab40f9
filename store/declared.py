"""Declared sizes against the files, before anything is allocated or read.

``check_files`` runs at every open: the shard's attributes alone (counts, rows per chunk) give the exact size
of each data file, compared with lstat() of each file and of each directory on its way (a symbolic link
there is refused: nothing a shard holds is read from outside it; verify also walks the whole shard for
links). ``check_declared`` adds what quick_check and verify want: every array's zarr.json read, its crc32c
(schema 2), its shape and layout against the attributes.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .errors import StoreCorruptError
from .format import (
    DTYPES,
    FILES_KEY,
    FP8_MAX,
    META_CRC_KEY,
    SCALE_DTYPE,
    SMALL_ARRAYS,
    ZARR_JSON,
    act_array_name,
    crc32c,
    index_nbytes,
    meta_crc32c,
    scale_array_name,
)
from .shardfile import memmappable, zstd_chunks  # zstd_chunks re-exported: checks.py and scan.py

_SMALL_FILES = {name: "/".join([name, "c", *["0"] * (1 + len(t))]) for name, (_, t) in SMALL_ARRAYS.items()}


def act_rel(layer: int) -> str:
    return f"{act_array_name(layer)}/c/0/0"


def scale_rel(layer: int) -> str:
    return f"{scale_array_name(layer)}/c/0"


def stat_files(shard_dir: Path, rels: Iterable[str]) -> dict[str, int]:
    """{rel: size} of those of ``rels`` that exist as regular files; StoreCorruptError if one of them, or a
    directory on the way to it, is a symbolic link or not what it should be."""
    base = os.fspath(shard_dir) + "/"
    dirs: set[str] = set()
    out: dict[str, int] = {}
    for rel in rels:
        parts = rel.split("/")
        missing = False
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d in dirs:
                continue
            try:
                mode = os.lstat(base + d).st_mode
            except FileNotFoundError:
                missing = True
                break
            if not stat.S_ISDIR(mode):
                raise StoreCorruptError(f"shard {shard_dir.name}: {d} is {_kind(mode)}, not a directory")
            dirs.add(d)
        if missing:
            continue
        try:
            st = os.lstat(base + rel)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            raise StoreCorruptError(f"shard {shard_dir.name}: {rel} is {_kind(st.st_mode)}, not a file")
        out[rel] = st.st_size
    return out


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link (a shard's files must be inside it)"
    return "a directory" if stat.S_ISDIR(mode) else "a special file"


def walk_shard(shard_dir: Path) -> dict[str, int]:
    """{path inside the shard: size} of every file; StoreCorruptError for a symbolic link anywhere inside."""
    files: dict[str, int] = {}
    stack = [("", os.fspath(shard_dir))]
    while stack:
        prefix, path = stack.pop()
        with os.scandir(path) as it:
            for e in it:
                rel = prefix + e.name
                if e.is_symlink():
                    raise StoreCorruptError(
                        f"shard {shard_dir.name}: {rel} is a symbolic link; a shard's files must be inside it"
                    )
                if e.is_dir(follow_symlinks=False):
                    stack.append((rel + "/", e.path))
                else:
                    files[rel] = e.stat(follow_symlinks=False).st_size
    return files


def _count(info: dict, key: str, minimum: int, what: str) -> int:
    value = info.get(key)
    if type(value) is not int or value < minimum:
        raise StoreCorruptError(
            f"{what}: zarr.json attribute {key} = {value!r} is not an integer >= {minimum}"
        )
    return value


def where(what: str, rel: str) -> str:
    """'shard X array acts/layer_2: shard file c/0/0' for a file of an array, 'shard X: file rel' otherwise."""
    head, _, tail = rel.rpartition("/c/")
    if head and (head in SMALL_ARRAYS or head.startswith("acts/layer_")):
        shard_file = head.startswith("acts/") and not head.endswith("_scale")
        return f"{what} array {head}: {'shard file' if shard_file else 'chunk file'} c/{tail}"
    return f"{what}: file {rel}"


def expected_files(info: dict, what: str) -> tuple[dict[str, int], dict[str, int], list[str]]:
    """From the attributes alone: (exact sizes of data files, minimum sizes (zstd acts), zarr.json files)."""
    S = _count(info, "num_sequences", 1, what)
    T = _count(info, "num_tokens", S, what)
    d = _count(info, "d_model", 1, what)
    _count(info, "first_sequence", 0, what)
    layers = info.get("layers")
    if not isinstance(layers, list) or not layers or any(type(x) is not int or x < 0 for x in layers):
        raise StoreCorruptError(f"{what}: zarr.json attribute layers = {layers!r} is not a list of layer ids")
    D = _count(info, "num_docs", 0, what) if "num_docs" in info else None
    n_rows = {
        "token_ids": T,
        "token_types": T,
        "offsets": S + 1,
        "sources": S,
        "doc_starts": D,
        "doc_sources": D,
    }
    exact, minimum = {}, {}
    for name, (np_dtype, trailing) in SMALL_ARRAYS.items():
        if n_rows[name]:  # a zero-length array has no chunk file (None: not declared, schema 1)
            exact[_SMALL_FILES[name]] = n_rows[name] * (trailing[0] if trailing else 1) * np_dtype.itemsize
    metas = [f"{name}/{ZARR_JSON}" for name in SMALL_ARRAYS] + [
        f"{act_array_name(L)}/{ZARR_JSON}" for L in layers
    ]
    R = _count(info, "rows_per_chunk", 1, what)
    n = -(-T // R)
    row_bytes = DTYPES[info["dtype"]][1] * d
    if info.get("dtype") in FP8_MAX:  # fp8: one float32 scale per token and layer
        for layer in layers:
            exact[scale_rel(layer)] = T * SCALE_DTYPE.itemsize
            metas.append(f"{scale_array_name(layer)}/{ZARR_JSON}")
    for layer in layers:
        if info.get("compression") == "zstd":
            minimum[act_rel(layer)] = index_nbytes(n)
        else:
            exact[act_rel(layer)] = R * n * row_bytes + index_nbytes(n)
    return exact, minimum, metas


def check_files(
    shard_dir: Path,
    info: dict,
    *,
    act_layers: Iterable[int] | None = None,
    tree: dict[str, int] | None = None,
) -> dict[str, int]:
    """Every file the attributes imply is present with the size they imply; schema 2: the attributes' crc32c
    and every manifest file's size. ``act_layers``: the layers whose activation file sizes are checked (None:
    all; the others' files need only exist: each is checked when first read, so a damaged layer does not
    hide the intact ones). Returns the walk; raises StoreCorruptError naming the shard and file."""
    what = f"shard {shard_dir.name}"
    files = info.get(FILES_KEY)
    if info.get("schema_version", 1) >= 2:
        if info.get(META_CRC_KEY) != meta_crc32c(info):
            raise StoreCorruptError(
                f"{what}: zarr.json attributes were changed after writing (crc32c mismatch)"
            )
        if not isinstance(files, dict) or any(
            not isinstance(e, dict) or type(e.get("bytes")) is not int for e in files.values()
        ):
            raise StoreCorruptError(f"{what}: zarr.json attributes lack a valid file manifest ({FILES_KEY})")
    exact, minimum, metas = expected_files(info, what)
    lazy = {act_rel(L) for L in info["layers"] if act_layers is not None and L not in act_layers}
    if tree is None:
        tree = stat_files(shard_dir, dict.fromkeys([*exact, *minimum, *metas, *(files or {})]))
    for rel in [*exact, *minimum, *metas]:
        if rel not in tree:
            raise StoreCorruptError(f"{where(what, rel)} is missing")
        if rel in lazy:
            continue
        if rel in exact and tree[rel] != exact[rel]:
            raise StoreCorruptError(
                f"{where(what, rel)} is {tree[rel]} bytes, expected {exact[rel]} (truncated or overwritten)"
            )
        if rel in minimum and tree[rel] < minimum[rel]:
            raise StoreCorruptError(f"{where(what, rel)} is {tree[rel]} bytes, smaller than its index")
    for rel, entry in (files or {}).items():
        if rel not in tree:
            raise StoreCorruptError(f"{where(what, rel)} is missing")
        if rel.endswith(ZARR_JSON):
            continue  # an array's metadata: checked (crc32c, then shape) when the array is first read
        if rel not in lazy and (
            tree[rel] != entry["bytes"] or exact.get(rel, entry["bytes"]) != entry["bytes"]
        ):
            raise StoreCorruptError(
                f"{where(what, rel)} is {tree[rel]} bytes, its manifest says {entry['bytes']} "
                "(truncated or overwritten)"
            )
    if files is not None and (missing := sorted(({*exact, *minimum, *metas}) - set(files))):
        raise StoreCorruptError(f"{what}: the file manifest lacks {missing[0]}")
    return tree


def check_crc(raw: bytes, rel: str, what: str, files: dict) -> None:
    if rel in files and crc32c(raw) != files[rel]["crc32c"]:
        raise StoreCorruptError(f"{what}: {rel} was changed after writing (crc32c mismatch)")


def parse_array_meta(raw: bytes, rel: str, what: str, files: dict | None = None) -> dict:
    """An array's zarr.json: valid JSON object, and (``files``: schema 2) the crc32c its manifest records."""
    if files is not None:
        check_crc(raw, rel, what, files)
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreCorruptError(f"{what}: {rel} is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise StoreCorruptError(f"{what}: {rel} is not a JSON object")
    return meta


def small_layout_ok(meta: dict, shape: tuple[int, ...], np_dtype: np.dtype) -> bool:
    """One uncompressed chunk equal to the array shape, little-endian bytes: the layout FORMAT.md gives."""
    try:
        (codec,) = meta["codecs"]
        return (
            codec["name"] == "bytes"
            and codec.get("configuration", {}).get("endian", "little") == "little"
            and np.dtype(meta["data_type"]) == np_dtype
            and list(meta["chunk_grid"]["configuration"]["chunk_shape"]) == [max(1, shape[0]), *shape[1:]]
            and meta["chunk_key_encoding"]["name"] == "default"
            and meta["chunk_key_encoding"].get("configuration", {}).get("separator", "/") == "/"
        )
    except (KeyError, TypeError, ValueError):
        return False


def check_declared(
    shard_dir: Path,
    info: dict,
    *,
    act_layers: Iterable[int] | None = None,
    tree: dict[str, int] | None = None,
) -> dict[str, dict]:
    """check_files, then every array's zarr.json: its crc32c (schema 2), declared shape, dtype and layout as
    the attributes and FORMAT.md say. ``tree``: the files' sizes (a remote shard's objects) instead of lstat.
    Returns {array name: its zarr.json}; raises StoreCorruptError."""
    what = f"shard {shard_dir.name}"
    check_files(shard_dir, info, act_layers=act_layers, tree=tree)
    S, T, d = info["num_sequences"], info["num_tokens"], info["d_model"]
    files = info.get(FILES_KEY) or {}
    metas: dict[str, dict] = {}
    for name, (np_dtype, trailing) in SMALL_ARRAYS.items():
        arr_what, rel = f"{what} array {name}", f"{name}/{ZARR_JSON}"
        raw = (shard_dir / rel).read_bytes()
        meta = parse_array_meta(raw, rel, arr_what)
        n = {"token_ids": T, "token_types": T, "offsets": S + 1, "sources": S}.get(name, info.get("num_docs"))
        if n is None:  # schema 1 stores before num_docs: the doc arrays' shape, checked against their files
            n = meta.get("shape", [None])[0] if isinstance(meta.get("shape"), list) else None
        shape = (n, *trailing)
        if type(n) is not int or meta.get("shape") != list(shape):
            raise StoreCorruptError(f"{arr_what}: declared shape {meta.get('shape')} != {list(shape)}")
        if not small_layout_ok(meta, shape, np_dtype):
            raise StoreCorruptError(f"{arr_what}: dtype, chunks or codecs differ from the format's")
        check_crc(raw, rel, arr_what, files)  # after the shape: an edited shape is named as such
        metas[name] = meta
    np_act = DTYPES[info["dtype"]][0]
    for layer in info["layers"]:
        name = act_array_name(layer)
        arr_what, rel = f"{what} array {name}", f"{name}/{ZARR_JSON}"
        raw = (shard_dir / rel).read_bytes()
        meta = parse_array_meta(raw, rel, arr_what)
        if meta.get("shape") != [T, d]:
            raise StoreCorruptError(f"{arr_what}: declared shape {meta.get('shape')} != {[T, d]}")
        attrs = meta.get("attributes")
        if not isinstance(attrs, dict) or attrs.get("fastsae_dtype") != info["dtype"]:
            raise StoreCorruptError(f"{arr_what}: attribute fastsae_dtype != {info['dtype']!r}")
        plan = memmappable(meta, (T, d), np_act)
        if plan is None and info.get("compression") == "zstd":
            plan = zstd_chunks(meta, (T, d), np_act)
        if plan is None or plan[0] != info["rows_per_chunk"] or plan[1] != -(-T // plan[0]):
            raise StoreCorruptError(
                f"{arr_what}: chunks or codecs differ from the format's (or from {T} rows)"
            )
        check_crc(raw, rel, arr_what, files)
        metas[name] = meta
        if info["dtype"] in FP8_MAX:
            name = scale_array_name(layer)
            arr_what, rel = f"{what} array {name}", f"{name}/{ZARR_JSON}"
            raw = (shard_dir / rel).read_bytes()
            meta = parse_array_meta(raw, rel, arr_what)
            if meta.get("shape") != [T]:
                raise StoreCorruptError(f"{arr_what}: declared shape {meta.get('shape')} != {[T]}")
            if not small_layout_ok(meta, (T,), SCALE_DTYPE):
                raise StoreCorruptError(f"{arr_what}: dtype, chunks or codecs differ from the format's")
            check_crc(raw, rel, arr_what, files)
            metas[name] = meta
    return metas
