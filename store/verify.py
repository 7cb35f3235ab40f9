"""Full integrity check of a store directory (verify_store): every check of quick_check, plus every byte of
every activation file read once for its crc32c and its values."""

from __future__ import annotations

import os
from pathlib import Path

from .blockcache import BlockCache
from .checks import check_small, meta_consistency, vocab_size_of
from .completeness import store_completeness
from .declared import check_declared, walk_shard
from .errors import StoreCorruptError, StoreError, StoreNotFoundError
from .format import ATTRS_KEY, ZARR_JSON, list_partials, read_json, read_store_json, scan_shards
from .reader import Shard, check_sequence_ranges
from .remote import Mirror, RemoteShard, is_url
from .scan import scan_acts


def verify_shard(shard: Shard, *, check_values: bool = True, vocab_size: int | None = None) -> None:
    """Checks one opened shard's arrays completely; raises StoreCorruptError with a one-line message naming
    what is wrong (and, for a bad value, the token and its sequence)."""
    if shard.remote is None:  # object stores have no symbolic links
        walk_shard(shard.path)  # a symbolic link anywhere inside the shard, even where nothing reads
    check_declared(shard.path, shard.attrs[ATTRS_KEY], tree=shard.objects)  # every layer's file size, too
    check_small(shard, vocab_size=vocab_size)
    for layer in shard.layers:
        scan_acts(shard, layer, values=check_values)


def verify_store(
    root: str | os.PathLike, *, check_values: bool = True, storage_options: dict | None = None
) -> dict:
    """Full integrity check. Returns a report dict (with 'warnings', e.g. leftover .partial dirs, unknown
    completeness, shards without checksums, and 'complete'); raises StoreCorruptError (``.problems``: one line
    per damaged shard/array, missing shard or unfinished writer) on any damage or an incomplete store.
    ``check_values=False``: everything but the activation files' full read (crc32c and values).

    ``root`` may be a URL: its small objects are downloaded afresh into the mirror and checked there, the
    activation objects are read by range requests (nothing of them is kept)."""
    remote_of = None
    if is_url(root):
        mirror = Mirror.sync(str(root), storage_options=storage_options, fresh=True)
        cache = BlockCache(mirror.remote, mirror.path.parent / "blocks")
        name, root = mirror.remote.url, mirror.path
        leftovers = mirror.uncommitted

        def remote_of(p: Path) -> RemoteShard:
            return RemoteShard(mirror.remote, p.name, mirror.object_sizes(p.name), cache)
    else:
        root = name = Path(root)
        if not root.is_dir():
            raise StoreNotFoundError(f"store not found: {root} is not a directory")
        leftovers = [p.name for p in list_partials(root)]
    problems: list[str] = []
    meta: dict = {}
    try:
        meta = read_store_json(root)
    except StoreError as e:
        problems.append(str(e))
    warnings = [
        f"leftover {'uncommitted' if remote_of else 'partial'} shard {p} (a crashed writer; the next harvest "
        "removes it)"
        for p in leftovers
    ]
    vocab = vocab_size_of(meta)
    dirs, link_problems = scan_shards(root)
    problems += link_problems
    shards: list[Shard] = []
    for p in dirs:
        try:
            shard = Shard.open(p, remote=remote_of(p) if remote_of else None)
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
    completeness = store_completeness(root, shards, where=str(name))
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
        raise StoreCorruptError(f"store {name}: {head}", problems)
    return {
        "path": str(name),
        "ok": True,
        "shards": len(shards),
        "sequences": sum(sh.num_sequences for sh in shards),
        "tokens": sum(sh.num_tokens for sh in shards),
        "complete": completeness.state,
        "warnings": warnings,
    }
