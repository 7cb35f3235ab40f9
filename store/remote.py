"""Stores on object storage: any fsspec URL (s3://bucket/path, gs://, az://, memory://) instead of a directory.

An object store has no rename and no directories, so a remote shard commits by the order of its objects
(FORMAT.md, schema 3): its data objects first, the group's ``zarr.json`` (which holds the file manifest with
every size and crc32c) last; a shard counts once that object exists, and the objects of a shard prefix
without it are a crashed writer's, ignored by readers and removed when that writer starts again.

Readers keep a local *mirror* of a remote store (``mirror_dir``): store.json, the writer records and each
committed shard's small objects (zarr.json files and the per-token arrays, ~5 bytes a token), laid out as a
local store so that every check of a local store runs on it unchanged. Activations are never mirrored: they
are read by range requests through the bounded block cache (blockcache.py). Credentials and endpoints come
from fsspec's usual sources (AWS_* environment variables, ~/.aws, fsspec config such as
FSSPEC_S3_ENDPOINT_URL); nothing of them is written into the store.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastsae.atomic import write_atomic

from .errors import StoreError, StoreNotFoundError
from .format import SHARD_RE, SKIPPED_JSONL, STORE_JSON, WRITER_RECORD_RE, ZARR_JSON

URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
ACT_DATA_RE = re.compile(r"^acts/layer_\d+/c/0/0$")  # activation objects: read by range, never mirrored
CACHE_ENV = "FASTSAE_STORE_CACHE"  # where mirrors and block caches live (default ~/.cache/fastsae/stores)


class StoreRemoteError(StoreError, OSError):
    """The object store refused or failed a request (credentials, bucket, endpoint, network)."""


def is_url(root: Any) -> bool:
    """Whether ``root`` names an object store (an fsspec URL other than file://) rather than a directory."""
    return isinstance(root, str) and bool(URL_RE.match(root)) and not root.startswith("file://")


def store_location(root: str | os.PathLike) -> str | Path:
    """A store argument as the store functions take it: a URL string (no trailing slash) or a Path."""
    if is_url(root):
        return str(root).rstrip("/")
    return Path(root[len("file://") :] if isinstance(root, str) and root.startswith("file://") else root)


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "fastsae" / "stores")


def mirror_dir(url: str) -> Path:
    """The local folder of a remote store's mirror, staging area and block cache (one per URL)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", url.split("://", 1)[-1])[-48:]
    return cache_root() / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{name}"


class RemoteRoot:
    """The objects under one store URL, addressed by their path inside the store ("shard-.../zarr.json")."""

    def __init__(self, url: str, storage_options: dict | None = None):
        from fsspec.core import url_to_fs

        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        try:
            self.fs, base = url_to_fs(self.url, **(storage_options or {}))
        except (ImportError, ValueError) as e:
            raise StoreRemoteError(f"store {self.url}: cannot open this URL ({e})") from None
        self.base = base.rstrip("/")
        self.etags: dict[str, str] = {}  # of the last listing's objects, where the backend gives them

    def __repr__(self) -> str:
        return f"RemoteRoot({self.url})"

    def key(self, rel: str) -> str:
        return f"{self.base}/{rel}"

    @contextmanager
    def _errors(self, what: str):
        try:
            yield
        except FileNotFoundError:
            raise
        except StoreError:
            raise
        except Exception as e:  # botocore's credential errors are no OSError: one line either way
            raise StoreRemoteError(f"store {self.url}: {what} failed ({type(e).__name__}: {e})") from None

    def listing(self, prefix: str = "") -> dict[str, int]:
        """{path inside the store: size} of every object (under ``prefix``), listed now (never from a listings
        cache)."""
        where = self.key(prefix) if prefix else self.base
        with self._errors("listing"):
            self.fs.invalidate_cache(where)
            try:
                found = self.fs.find(where, detail=True)
            except FileNotFoundError:
                return {}
        n = len(self.base) + 1
        mine = {k[n:]: v for k, v in found.items() if k.startswith(self.base + "/")}
        self.etags = {k: str(v.get("ETag") or v.get("etag") or "") for k, v in mine.items()}
        return {k: int(v["size"]) for k, v in mine.items()}

    def cat(self, rel: str) -> bytes:
        with self._errors(f"reading {rel}"):
            return self.fs.cat_file(self.key(rel))

    def cat_many(self, rels: list[str]) -> dict[str, bytes]:
        if not rels:
            return {}
        with self._errors(f"reading {len(rels)} objects"):
            got = self.fs.cat([self.key(r) for r in rels], on_error="raise")
        return {r: got[self.key(r)] for r in rels}

    def read_ranges(self, rels: list[str], starts: list[int], stops: list[int]) -> list[bytes]:
        """Byte ranges [start, stop) of objects, requested concurrently (one range request each)."""
        with self._errors(f"reading {len(rels)} byte ranges"):
            out = self.fs.cat_ranges([self.key(r) for r in rels], starts, stops, on_error="raise")
        for r, a, b, data in zip(rels, starts, stops, out, strict=True):
            if isinstance(data, BaseException):
                raise StoreRemoteError(f"store {self.url}: reading {r} [{a}, {b}) failed ({data})")
            if len(data) != b - a:
                raise StoreRemoteError(f"store {self.url}: {r} [{a}, {b}) returned {len(data)} bytes")
        return out

    def put_bytes(self, rel: str, data: bytes) -> None:
        with self._errors(f"writing {rel}"):
            self.fs.pipe_file(self.key(rel), data)

    def put_file(self, local: Path, rel: str) -> None:
        with self._errors(f"uploading {rel}"):
            self.fs.put_file(os.fspath(local), self.key(rel))

    def put_files(self, pairs: list[tuple[Path, str]]) -> None:
        """Uploads (local file, object) pairs concurrently; every one has been written when it returns."""
        if pairs:
            with self._errors(f"uploading {len(pairs)} objects"):
                self.fs.put([os.fspath(p) for p, _ in pairs], [self.key(r) for _, r in pairs])

    def remove(self, rels: list[str]) -> None:
        if rels:
            with self._errors(f"removing {len(rels)} objects"):
                self.fs.rm([self.key(r) for r in rels])


def shard_objects(listing: dict[str, int]) -> dict[str, dict[str, int]]:
    """{shard name: {path inside the shard: size}} of every shard prefix, committed or not."""
    out: dict[str, dict[str, int]] = {}
    for rel, size in listing.items():
        head, _, rest = rel.partition("/")
        if rest and SHARD_RE.match(head):
            out.setdefault(head, {})[rest] = size
    return out


def committed(shards: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """The shards whose manifest object (the group zarr.json) exists: schema 3's commit point."""
    return {name: objs for name, objs in shards.items() if ZARR_JSON in objs}


def uncommitted(shards: dict[str, dict[str, int]]) -> list[str]:
    return sorted(name for name, objs in shards.items() if ZARR_JSON not in objs)


@contextmanager
def _mirror_lock(root: Path):
    """Ranks of one node share a mirror: one refreshes it at a time."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".mirror.lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class Mirror:
    """A remote store's local mirror (see the module doc), refreshed from one listing at each open."""

    def __init__(self, remote: RemoteRoot, listing: dict[str, int], path: Path):
        self.remote, self.listing, self.path = remote, listing, path
        self.shards = shard_objects(listing)

    @property
    def uncommitted(self) -> list[str]:
        return uncommitted(self.shards)

    @classmethod
    def sync(cls, url: str, *, storage_options: dict | None = None, fresh: bool = False) -> Mirror:
        """Lists the store and brings the mirror up to date; ``fresh``: re-download every mirrored object
        (verify: the checksums are then those of the objects as they are now)."""
        remote = RemoteRoot(url, storage_options)
        listing = remote.listing()
        if STORE_JSON not in listing:
            raise StoreNotFoundError(f"store not found: {remote.url} has no {STORE_JSON}")
        path = mirror_dir(remote.url) / "mirror"
        mirror = cls(remote, listing, path)
        with _mirror_lock(path.parent):
            if fresh:
                shutil.rmtree(path, ignore_errors=True)
            mirror._refresh()
        return mirror

    def _refresh(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        tops = (STORE_JSON, SKIPPED_JSONL)
        top = [r for r in self.listing if "/" not in r and (r in tops or WRITER_RECORD_RE.match(r))]
        for rel, data in self.remote.cat_many(top).items():  # small, and they change: always fetched
            write_atomic(self.path / rel, data, fsync=False)
        for p in self.path.iterdir():
            if (p.name in tops or WRITER_RECORD_RE.match(p.name)) and p.name not in self.listing:
                p.unlink()
        done = committed(self.shards)
        for p in self.path.iterdir():  # shards gone (or no longer committed) from the remote
            if SHARD_RE.match(p.name) and p.name not in done:
                shutil.rmtree(p, ignore_errors=True)
        # a mirrored shard whose manifest object has the same ETag (else: the same bytes) is current: committed
        # shards are immutable, so an open of an unchanged store fetches no shard object
        tags_file = self.path / ".etags.json"
        try:
            tags = json.loads(tags_file.read_text())
        except (OSError, ValueError):
            tags = {}
        etag = {name: self.remote.etags.get(f"{name}/{ZARR_JSON}", "") for name in done}
        current = {
            name for name in done
            if etag[name] and tags.get(name) == etag[name] and (self.path / name / ZARR_JSON).is_file()
        }  # fmt: skip
        heads = self.remote.cat_many([f"{name}/{ZARR_JSON}" for name in sorted(set(done) - current)])
        todo = []
        for name, objs in sorted(done.items()):
            if name in current:
                continue
            local, head = self.path / name, heads[f"{name}/{ZARR_JSON}"]
            if (local / ZARR_JSON).is_file() and (local / ZARR_JSON).read_bytes() == head:
                continue
            shutil.rmtree(local, ignore_errors=True)
            todo += [(name, rel) for rel in objs if rel != ZARR_JSON and not ACT_DATA_RE.match(rel)]
        if todo:
            got = self.remote.cat_many([f"{name}/{rel}" for name, rel in todo])
            for (name, rel), data in zip(todo, got.values(), strict=True):
                dest = self.path / name / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(dest, data, fsync=False)
        for name in sorted(
            set(done) - current
        ):  # the manifest last, as on the remote: a mirrored shard is whole
            local = self.path / name / ZARR_JSON
            if not local.is_file() or local.read_bytes() != heads[f"{name}/{ZARR_JSON}"]:
                local.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(local, heads[f"{name}/{ZARR_JSON}"], fsync=False)
        write_atomic(tags_file, json.dumps({n: t for n, t in etag.items() if t}), fsync=False)

    def object_sizes(self, shard: str) -> dict[str, int]:
        return dict(self.shards.get(shard, {}))


class RemoteFile:
    """One object of a remote shard, as the index checks and the value scan read it."""

    def __init__(self, remote: RemoteRoot, rel: str, size: int | None):
        self.remote, self.rel, self._size = remote, rel, size
        self.name = rel.rsplit("/", 1)[-1]

    def size(self) -> int:
        if self._size is None:
            raise FileNotFoundError(self.rel)
        return self._size

    def read(self, start: int, stop: int) -> bytes:
        return self.remote.read_ranges([self.rel], [start], [stop])[0]


class RemoteShard:
    """What a Shard opened from a mirror needs of its remote original: object sizes, activation reads."""

    def __init__(self, remote: RemoteRoot, name: str, objects: dict[str, int], cache: Any):
        self.remote, self.name, self.objects, self.cache = remote, name, objects, cache

    def file(self, rel: str) -> RemoteFile:
        return RemoteFile(self.remote, f"{self.name}/{rel}", self.objects.get(rel))

    def rows(self, layer: int, shape: tuple[int, int], np_dtype: Any, *, version: int | None = None):
        """The layer's rows through the block cache; ``version`` (the file's crc32c) keys its cached blocks,
        so a shard harvested again under the same name never meets the old one's blocks."""
        from .blockcache import RemoteRows

        rel = f"acts/layer_{layer}/c/0/0"
        if version is None:  # schema 1: no checksum; the object's ETag (or size) stands in
            version = self.remote.etags.get(f"{self.name}/{rel}") or self.objects.get(rel)
        tag = re.sub(r"[^A-Za-z0-9]", "", str(version))[:32]
        return RemoteRows(
            self.cache, f"{self.name}/{rel}", key=f"{self.name}.{layer}.{tag}", num_rows=shape[0],
            d_model=shape[1], dtype=np_dtype,
        )  # fmt: skip

    def zarr_store(self):
        """The shard as a read-only zarr FsspecStore (compressed activations are decoded by zarr)."""
        from zarr.storage import FsspecStore

        # its own file system instance, made by zarr on zarr's event loop (fsspec's sync one is another loop)
        url = f"{self.remote.url}/{self.name}"
        return FsspecStore.from_url(url, storage_options=self.remote.storage_options or None, read_only=True)


def clean_uncommitted(url: str, *, writer: int, storage_options: dict | None = None) -> list[str]:
    """Removes the objects of ``writer``'s uncommitted shards (a kill -9 between its first data object and its
    manifest). Only the caller's own writer: another writer's uncommitted shard may be one it is uploading now
    (writer ids are unique per run, as torchrun ranks are). Returns the shard names cleaned."""
    remote = RemoteRoot(url, storage_options)
    shards = shard_objects(remote.listing())
    gone = [n for n in uncommitted(shards) if int(SHARD_RE.match(n).group(1)) == writer]
    remote.remove([f"{n}/{rel}" for n in gone for rel in shards[n]])
    return gone


__all__ = [
    "Mirror",
    "RemoteFile",
    "RemoteRoot",
    "RemoteShard",
    "StoreRemoteError",
    "clean_uncommitted",
    "is_url",
    "mirror_dir",
    "store_location",
]
