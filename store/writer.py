"""Writing a store: init_store (store.json) and ShardWriter (one atomically committed shard).

A ShardWriter holds its writer's lock (locking.py) while it streams activation rows (act_files.py) into the final
shard file of each ``acts/layer_<L>`` array inside ``.partial-<name>.zarr`` (nothing but the small per-token
arrays is held in RAM), a running crc32c of every byte beside. At commit it pads the data to whole inner
chunks, appends the sharding index + crc32c itself, writes the zarr.json metadata through zarr with the
shard's file manifest (size and crc32c of every file), checks every file is still there with its size,
fsyncs everything and renames the directory to ``shard-<writer>-<seq>.zarr`` in one os.replace. A kill at
any point leaves at most the ``.partial-*`` directory.

A store on object storage (``root`` an fsspec URL) has no rename: the partial is written in a local staging
folder (remote.mirror_dir) exactly as above, and its commit uploads the shard's data objects first and its
group zarr.json (the manifest) last, the object that makes it committed (schema 3, FORMAT.md). A kill before
that leaves objects without a manifest, which readers ignore and this writer's next begin_writer removes.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .act_files import ActFiles
from .commit import check_partial, metadata_entries
from .dtypes import Fp8Rows, all_finite, encode_acts, encode_fp8, fp8_row_keys, fp8_rows, is_fp8
from .errors import StoreExistsError, StoreWriteError
from .format import (
    ATTRS_KEY,
    COMPRESSIONS,
    DTYPES,
    FILES_KEY,
    FP8_ROUNDINGS,
    META_CRC_KEY,
    SCALE_DTYPE,
    SCHEMA_VERSION,
    SMALL_ARRAYS,
    STORE_JSON,
    STORE_META_KEY,
    ZARR_JSON,
    ZSTD_LEVEL,
    auto_rows_per_chunk,
    crc32c,
    fsync_path,
    fsync_tree,
    meta_crc32c,
    normalize_json,
    partial_name,
    read_store_json,
    scale_array_name,
    scale_file,
    shard_name,
    small_chunk_file,
)
from .identity import init_store
from .locking import WriterLock
from .token_types import NUM_TOKEN_TYPES


class ShardWriter:
    """Writes one shard of a store; see the module docstring. Use as a context manager: an exception
    aborts (removes the partial directory), a clean exit commits (or aborts if nothing was appended)."""

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        writer: int,
        seq: int,
        first_sequence: int,
        layers: Sequence[int],
        d_model: int,
        dtype: str = "float32",
        meta: Mapping[str, Any] | None = None,
        rows_per_chunk: int | None = None,
        compression: str | None = None,
        check_finite: bool = True,
        fp8_rounding: str = "stochastic",
    ):
        if dtype not in DTYPES:
            raise StoreWriteError(f"unsupported dtype {dtype!r}; expected one of {sorted(DTYPES)}")
        if compression == "none":
            compression = None
        if fp8_rounding not in FP8_ROUNDINGS:
            raise StoreWriteError(f"unsupported fp8_rounding {fp8_rounding!r}; expected one of {FP8_ROUNDINGS}")
        self.fp8_rounding = fp8_rounding  # how this writer rounds fp8 rows (pre-encoded Fp8Rows: the caller's)
        if compression not in COMPRESSIONS:
            raise StoreWriteError(f"unsupported compression {compression!r}; expected None or 'zstd'")
        layers = [int(layer) for layer in layers]
        if not layers or len(set(layers)) != len(layers) or min(layers) < 0:
            raise StoreWriteError(f"layers must be distinct non-negative ints, got {layers}")
        if int(d_model) <= 0 or writer < 0 or seq < 0 or first_sequence < 0:
            raise StoreWriteError("d_model must be > 0 and writer, seq, first_sequence >= 0")
        if rows_per_chunk is not None and rows_per_chunk <= 0:
            raise StoreWriteError(f"rows_per_chunk must be positive, got {rows_per_chunk}")
        from .remote import RemoteRoot, is_url, mirror_dir

        self.remote = RemoteRoot(str(root)) if is_url(root) else None
        self.root = Path(root) if self.remote is None else mirror_dir(self.remote.url) / "staging"
        self.store = self.root if self.remote is None else self.remote.url  # where store.json and shards go
        self.writer, self.seq, self.first_sequence = int(writer), int(seq), int(first_sequence)
        self.layers, self.d_model, self.dtype = layers, int(d_model), dtype
        self.compression = compression
        self.check_finite = check_finite
        self._np_dtype, itemsize = DTYPES[dtype]
        self._row_bytes = itemsize * self.d_model
        self._rows_per_chunk = rows_per_chunk
        self._target_rows = rows_per_chunk or auto_rows_per_chunk(self._row_bytes)
        if self.remote is not None:
            self.root.mkdir(parents=True, exist_ok=True)
            meta = {} if meta is None else meta  # init_store reads the remote store.json (or creates it)
        elif meta is None and not (self.root / STORE_JSON).exists():
            meta = {}
        if meta is not None:
            meta = {"layers": layers, "d_model": self.d_model, "dtype": dtype, **dict(meta)}
            self.meta = init_store(self.store, meta=meta)
        else:
            self.meta = read_store_json(self.root)
        self.name = shard_name(self.writer, self.seq)
        self.path = self.root / self.name
        if self._committed():
            raise StoreExistsError(f"shard {self._where()} is already committed; pick another writer/seq")
        self.partial_path = self.root / partial_name(self.writer, self.seq)
        self._acts: ActFiles | None = None
        self._dir_fd: int | None = None
        self._lock = WriterLock(self.root, self.writer)
        self._lock.acquire()  # before the partial exists: clean_partial never removes a live writer's work
        try:
            if self._committed():
                raise StoreExistsError(f"shard {self._where()} is already committed; pick another writer/seq")
            if self.partial_path.exists():  # left by a dead run of this same writer/seq
                shutil.rmtree(self.partial_path)
            self.partial_path.mkdir()
            # held open until commit: its inode (and the acts files') cannot be reused by a look-alike
            self._dir_fd = os.open(self.partial_path, os.O_RDONLY | os.O_DIRECTORY)
            self._dir_ino = os.fstat(self._dir_fd).st_ino
            self._acts = ActFiles(
                self.partial_path, layers, d_model=self.d_model, np_dtype=self._np_dtype,
                row_bytes=self._row_bytes, target_rows=self._target_rows, rows_per_chunk=self._rows_per_chunk,
                compression=compression,
            )  # fmt: skip
        except BaseException:
            self._close_handles()
            self._lock.release()
            raise
        self._scales: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}  # fp8: [n] float32 each
        self._token_ids: list[np.ndarray] = []
        self._token_types: list[np.ndarray] = []
        self._offsets = [0]
        self._sources: list[tuple[int, int]] = []
        self._doc_starts: list[int] = []
        self._doc_sources: list[tuple[int, int]] = []
        self._state = "open"

    def _where(self) -> str:
        return str(self.path) if self.remote is None else f"{self.remote.url}/{self.name}"

    def _committed(self) -> bool:
        if self.remote is None:
            return self.path.exists()
        try:
            self.remote.cat(f"{self.name}/{ZARR_JSON}")
        except FileNotFoundError:
            return False
        return True

    @property
    def num_tokens(self) -> int:
        return self._offsets[-1]

    @property
    def num_sequences(self) -> int:
        return len(self._offsets) - 1

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._state in ("committed", "aborted"):
            return
        if exc_type is None and self._state == "open" and self.num_sequences > 0:
            self.commit()
        else:
            self.abort()

    def append(
        self,
        *,
        token_ids: Any,
        token_types: Any,
        acts: Mapping[int, Any],
        source: tuple[int, int],
        doc_starts: Sequence[int] | None = None,
        doc_sources: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        """Append one sequence (a conversation, or a block of packed text)."""
        if self._state != "open":
            raise StoreWriteError(f"append on a {self._state} ShardWriter ({self.name})")
        where = f"{self.name} sequence {self.num_sequences}"
        ids = np.asarray(token_ids)
        types = np.asarray(token_types)
        n = ids.shape[0] if ids.ndim == 1 else -1
        if n <= 0 or types.shape != (n,):
            raise StoreWriteError(
                f"{where}: token_ids and token_types must be 1-D of equal non-zero length, "
                f"got {ids.shape} and {types.shape}"
            )
        if ids.dtype.kind not in "iu" or ids.min() < 0 or ids.max() > np.iinfo(np.int32).max:
            raise StoreWriteError(f"{where}: token_ids must be integers in [0, 2**31), got dtype {ids.dtype}")
        if types.size and (types.min() < 0 or types.max() >= NUM_TOKEN_TYPES):
            raise StoreWriteError(f"{where}: token_types outside 0..{NUM_TOKEN_TYPES - 1}")
        if set(acts) != set(self.layers):
            raise StoreWriteError(f"{where}: acts has layers {sorted(acts)}, writer expects {self.layers}")
        encoded, scales = {}, {}
        # stochastic rounding keyed by where each row sits: global sequence, token, layer (stochastic_rounding.py)
        seq = self.first_sequence + self.num_sequences

        def keys(layer: int):
            return fp8_row_keys(seq, n, layer) if self.fp8_rounding == "stochastic" else None
        for layer in self.layers:
            if is_fp8(self.dtype):
                a = acts[layer]  # Fp8Rows: encoded already (harvest, on its device)
                rows = isinstance(a, Fp8Rows)
                raw, scales[layer] = (
                    fp8_rows(a, where=f"{where}: acts[{layer}]") if rows else encode_fp8(a, self.dtype, keys=keys(layer))
                )
                if self.check_finite and not np.isfinite(scales[layer]).all():
                    raise StoreWriteError(f"{where}: acts[{layer}] contains NaN or inf")
            else:
                raw = encode_acts(acts[layer], self.dtype, fix_nan=not self.check_finite)
            if raw.shape != (n, self.d_model):
                raise StoreWriteError(
                    f"{where}: acts[{layer}] has shape {raw.shape}, expected {(n, self.d_model)}"
                )
            if self.check_finite and not is_fp8(self.dtype) and not all_finite(raw, self.dtype):
                raise StoreWriteError(f"{where}: acts[{layer}] contains NaN or inf")
            encoded[layer] = raw
        starts = [0] if doc_starts is None else [int(s) for s in doc_starts]
        if any(b <= a for a, b in zip(starts, starts[1:], strict=False)) or (
            starts and not 0 <= starts[0] <= starts[-1] < n
        ):
            raise StoreWriteError(
                f"{where}: doc_starts must be strictly increasing within [0, {n}), got {starts}"
            )
        src = (int(source[0]), int(source[1]))
        dsrc = [src] * len(starts) if doc_sources is None else [(int(a), int(b)) for a, b in doc_sources]
        if len(dsrc) != len(starts):
            raise StoreWriteError(f"{where}: {len(dsrc)} doc_sources for {len(starts)} doc_starts")
        if min(src) < 0 or any(min(d) < 0 for d in dsrc):
            raise StoreWriteError(f"{where}: source/doc_sources must be non-negative (dataset, row) pairs")
        try:
            self._write_rows(encoded, n)
        except BaseException:
            self._state = "failed"  # the files may hold part of this sequence: only abort() is left
            raise
        base = self.num_tokens
        for layer, scale in scales.items():
            self._scales[layer].append(scale)
        self._token_ids.append(ids.astype(np.int32))
        self._token_types.append(types.astype(np.uint8))
        self._offsets.append(base + n)
        self._sources.append(src)
        self._doc_starts.extend(base + s for s in starts)
        self._doc_sources.extend(dsrc)

    def _write_rows(self, encoded: dict[int, np.ndarray], n: int) -> None:
        self._acts.write_rows(encoded, n)

    def commit(self) -> Path:
        """Finalise index and metadata, fsync, and atomically rename into place. Returns the shard path."""
        if self._state != "open":
            raise StoreWriteError(f"commit on a {self._state} ShardWriter ({self.name})")
        if self.num_sequences == 0:
            raise StoreWriteError(f"{self.name}: nothing to commit (no sequences appended); call abort()")
        try:
            rpc, n_chunks = self._acts.finish(self.num_tokens)
            files = self._write_metadata(rpc, n_chunks)
            fsync_tree(self.partial_path)
            check_partial(self.partial_path, self._dir_ino, self._acts.inodes(), files, name=self.name)
            self._close_handles()
            if self._committed():
                raise StoreExistsError(f"shard {self._where()} appeared while writing; not overwriting it")
            if self.remote is None:
                os.replace(self.partial_path, self.path)
                fsync_path(self.root)
            else:
                self._upload(files)
        except BaseException:
            self.abort()
            raise
        self._state = "committed"
        self._lock.release()
        return self.path

    def _upload(self, files: dict[str, dict]) -> None:
        """Object-store commit: objects left by a dead run of this shard go, then every data object, then the
        group zarr.json holding the manifest, the last object, whose existence commits the shard."""
        from .remote import shard_objects

        stale = shard_objects(self.remote.listing(self.name)).get(self.name, {})
        self.remote.remove([f"{self.name}/{rel}" for rel in stale])
        self.remote.put_files([(self.partial_path / rel, f"{self.name}/{rel}") for rel in sorted(files)])
        self.remote.put_file(self.partial_path / ZARR_JSON, f"{self.name}/{ZARR_JSON}")
        shutil.rmtree(self.partial_path, ignore_errors=True)

    def _write_metadata(self, rpc: int, n_chunks: int) -> dict[str, dict]:
        """zarr.json of the group and arrays, the small arrays; returns the file manifest (in the attrs too)."""
        import zarr
        from zarr.codecs import ZstdCodec
        from zarr.storage import LocalStore

        T, S = self.num_tokens, self.num_sequences
        store = LocalStore(self.partial_path)
        attrs = {
            ATTRS_KEY: {
                "schema_version": SCHEMA_VERSION,
                "num_sequences": S,
                "num_tokens": T,
                "num_docs": len(self._doc_starts),
                "first_sequence": self.first_sequence,
                "writer": self.writer,
                "seq": self.seq,
                "layers": self.layers,
                "d_model": self.d_model,
                "dtype": self.dtype,
                "rows_per_chunk": rpc,
                "compression": self.compression,
                **({"fp8_rounding": self.fp8_rounding} if is_fp8(self.dtype) else {}),
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            },
            STORE_META_KEY: self.meta,
        }
        group = zarr.create_group(store, zarr_format=3, attributes=normalize_json(attrs))
        acts = group.create_group("acts")
        for layer in self.layers:
            acts.create_array(
                name=f"layer_{layer}",
                shape=(T, self.d_model),
                dtype=self._np_dtype,
                chunks=(rpc, self.d_model),
                shards=(rpc * n_chunks, self.d_model),
                compressors=None if self.compression is None else ZstdCodec(level=ZSTD_LEVEL),
                fill_value=0,
                attributes={"fastsae_dtype": self.dtype, "layer": layer},
                dimension_names=("token", "d_model"),
                config={"write_empty_chunks": True},
            )
        small = {
            "token_ids": np.concatenate(self._token_ids),
            "token_types": np.concatenate(self._token_types),
            "offsets": np.asarray(self._offsets, dtype=np.int64),
            "sources": np.asarray(self._sources, dtype=np.int64).reshape(S, 2),
            "doc_starts": np.asarray(self._doc_starts, dtype=np.int64),
            "doc_sources": np.asarray(self._doc_sources, dtype=np.int64).reshape(-1, 2),
        }
        files = self._acts.manifest()
        for layer in self.layers if is_fp8(self.dtype) else []:
            data = np.ascontiguousarray(np.concatenate(self._scales[layer]), dtype=SCALE_DTYPE)
            acts.create_array(
                name=f"layer_{layer}_scale",
                data=data,
                chunks=(T,),
                compressors=None,
                fill_value=0,
                attributes={
                    "fastsae_scale_of": scale_array_name(layer).removesuffix("_scale"),
                    "layer": layer,
                },
                dimension_names=("token",),
                config={"write_empty_chunks": True},
            )
            files[scale_file(Path(), layer).as_posix()] = {"bytes": data.nbytes, "crc32c": crc32c(data)}
        for name, data in small.items():
            np_dtype, trailing = SMALL_ARRAYS[name]
            data = np.ascontiguousarray(data, dtype=np_dtype)
            group.create_array(
                name=name,
                data=data,
                chunks=(max(1, data.shape[0]), *trailing),
                compressors=None,
                fill_value=0,
                config={"write_empty_chunks": True},
            )
            if data.shape[0]:  # a zero-length array has no chunk file
                rel = small_chunk_file(Path(), name).as_posix()
                files[rel] = {"bytes": data.nbytes, "crc32c": crc32c(data)}
        files.update(metadata_entries(self.partial_path))
        info = normalize_json({**attrs[ATTRS_KEY], FILES_KEY: dict(sorted(files.items()))})
        info[META_CRC_KEY] = meta_crc32c(info)
        group.update_attributes({ATTRS_KEY: info})
        return info[FILES_KEY]

    def _close_handles(self) -> None:
        if self._acts is not None:
            self._acts.close()
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def abort(self) -> None:
        """Close files and delete the partial directory. Safe to call more than once."""
        self._close_handles()
        if self._state != "committed":
            if self.partial_path.exists():
                shutil.rmtree(self.partial_path, ignore_errors=True)
            self._state = "aborted"
        self._lock.release()


__all__ = ["ShardWriter"]
