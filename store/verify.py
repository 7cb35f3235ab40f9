"""Full integrity check of a store directory (verify_store): every check of quick_check, plus every byte of
every activation file read once for its crc32c and its values."""

from __future__ import annotations

import os
from pathlib import Path

from .checks import check_small, meta_consistency, vocab_size_of
from .completeness import store_completeness
from .declared import check_declared, walk_shard
from .errors import StoreCorruptError, StoreError, StoreNotFoundError
from .format import ATTRS_KEY, ZARR_JSON, list_partials, read_json, read_store_json, scan_shards
from .reader import Shard, check_sequence_ranges
from .scan import scan_acts


def verify_shard(shard: Shard, *, check_values: bool = True, vocab_size: int | None = None) -> None:
    """Checks one opened shard's arrays completely; raises StoreCorruptError with a one-line message naming
    what is wrong (and, for a bad value, the token and its sequence)."""
    walk_shard(shard.path)  # a symbolic link anywhere inside the shard, even where nothing reads
    check_declared(shard.path, shard.attrs[ATTRS_KEY])  # every layer's file size, too
    check_small(shard, vocab_size=vocab_size)
    for layer in shard.layers:
        scan_acts(shard, layer, values=check_values)


def verify_store(root: str | os.PathLike, *, check_values: bool = True) -> dict:
    """Full integrity check. Returns a report dict (with 'warnings', e.g. leftover .partial dirs, unknown
    completeness, shards without checksums, and 'complete'); raises StoreCorruptError (``.problems``: one line
    per damaged shard/array, missing shard or unfinished writer) on any damage or an incomplete store.
    ``check_values=False``: everything but the activation files' full read (crc32c and values)."""
    root = Path(root)
    if not root.is_dir():
        raise StoreNotFoundError(f"store not found: {root} is not a directory")
    problems: list[str] = []
    meta: dict = {}
    try:
        meta = read_store_json(root)
    except StoreError as e:
        problems.append(str(e))
    warnings = [
        f"leftover partial shard {p.name} (a crashed writer; the next harvest removes it)"
        for p in list_partials(root)
    ]
    vocab = vocab_size_of(meta)
    dirs, link_problems = scan_shards(root)
    problems += link_problems
    shards: list[Shard] = []
    for p in dirs:
        try:
            shard = Shard.open(p)
        except StoreError as e:
            problems.append(str(e))
            try:  # its sequence range still counts if its attributes can be read
                shards.append(Shard(p, read_json(p / ZARR_JSON, what=f"shard {p.name}")))
            except StoreError:
                pass
            continue
        shards.append(shard)
        try:
            verify_shard(shard, check_values=check_values, vocab_size=vocab)
        except StoreCorruptError as e:
            problems.append(str(e))
    shards.sort(key=lambda sh: (sh.first_sequence, sh.name))
    completeness = store_completeness(root, shards)
    if completeness.state == "incomplete":
        problems.insert(0, completeness.message)
    elif completeness.state == "unknown":
        warnings.append(completeness.message)
    problems += [
        p for p in check_sequence_ranges(shards) if not (completeness.missing and "are missing" in p)
    ]
    problems += meta_consistency(meta, shards)
    if vocab is None and shards:
        warnings.append("store.json names no tokenizer vocab_size: token ids were checked against int32 only")
    old = [sh.name for sh in shards if not sh.files]
    if old:
        warnings.append(
            f"{len(old)} shards (first {old[0]}) were written before schema 2: their activation and token "
            "bytes have no checksums"
        )
    if problems:
        head = problems[0] if len(problems) == 1 else f"{len(problems)} problems, first: {problems[0]}"
        raise StoreCorruptError(f"store {root}: {head}", problems)
    return {
        "path": str(root),
        "ok": True,
        "shards": len(shards),
        "sequences": sum(sh.num_sequences for sh in shards),
        "tokens": sum(sh.num_tokens for sh in shards),
        "complete": completeness.state,
        "warnings": warnings,
    }
