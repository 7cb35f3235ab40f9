"""One committed shard of a store (a Zarr v3 group): Shard, and ZarrRows for compressed activations.

Activations of uncompressed shards are np.memmap views of the zarr shard file (the data region is one
row-major [T_pad, d_model] matrix); compressed shards fall back to zarr reads. A remote shard (a store on
object storage, see reader.py) is opened from its local mirror, its activations read by range requests through
the block cache (blockcache.py) or, compressed, through zarr's FsspecStore. Arrays are opened lazily, each
checked against the shard's declared sizes and manifest when first read.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .dtypes import is_fp8, to_float32
from .errors import StoreCorruptError
from .format import (
    ATTRS_KEY,
    DTYPES,
    FILES_KEY,
    SCALE_DTYPE,
    SMALL_ARRAYS,
    SUPPORTED_SCHEMA_VERSIONS,
    ZARR_JSON,
    act_array_name,
    act_shard_file,
    read_json,
    scale_array_name,
    scale_file,
    small_chunk_file,
    tree_bytes,
)
from .sequence import Sequence, TokenLocation
from .shardfile import check_compressed_index, check_shard_index, memmappable, zstd_chunks

if TYPE_CHECKING:
    from .remote import RemoteFile, RemoteShard

_SHARD_KEYS = ("num_sequences", "num_tokens", "first_sequence", "layers", "d_model", "dtype")


class ZarrRows:
    """Row access over a (compressed) zarr acts array with the same indexing as the memmap path:
    ``a[start:stop]`` and ``a[int64_sorted_rows]`` -> np.ndarray."""

    def __init__(self, array: Any):
        self.array = array
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice | int | np.integer):
            return np.asarray(self.array[key])
        rows = np.asarray(key, dtype=np.int64)
        return np.asarray(self.array.get_orthogonal_selection((rows, slice(None))))


class Shard:
    """One committed shard (a Zarr v3 group). Arrays are opened lazily and read-only."""

    def __init__(self, path: Path, group_meta: dict):
        self.path = Path(path)
        self.name = self.path.name
        attrs = group_meta.get("attributes")
        info = attrs.get(ATTRS_KEY) if isinstance(attrs, dict) else None
        if not isinstance(info, dict) or any(k not in info for k in _SHARD_KEYS):
            raise StoreCorruptError(f"shard {self.name}: zarr.json lacks the '{ATTRS_KEY}' attributes")
        if info.get("schema_version") not in SUPPORTED_SCHEMA_VERSIONS:
            raise StoreCorruptError(
                f"shard {self.name}: schema_version {info.get('schema_version')!r} unsupported"
            )
        if info["dtype"] not in DTYPES:
            raise StoreCorruptError(f"shard {self.name}: unknown dtype {info['dtype']!r}")
        self.attrs: dict = attrs
        self.schema_version: int = info["schema_version"]
        self.files: dict[str, dict] = info.get(FILES_KEY) or {}  # schema 2: {path: {"bytes", "crc32c"}}
        self._metas: dict[str, dict] = {}  # array zarr.json, read (and checked) once
        self.first_sequence = int(info["first_sequence"])
        self.num_sequences = int(info["num_sequences"])
        self.num_tokens = int(info["num_tokens"])
        self.layers = [int(x) for x in info["layers"]]
        self.d_model = int(info["d_model"])
        self.dtype: str = info["dtype"]
        self._acts: dict[int, Any] = {}
        self._small: dict[str, np.ndarray] = {}
        self.remote: RemoteShard | None = None  # set for a shard of a store on object storage

    @property
    def objects(self) -> dict[str, int] | None:
        """A remote shard's {object path inside the shard: size} (the checks' sizes); None for a local one."""
        return None if self.remote is None else self.remote.objects

    def act_file(self, layer: int) -> Path | RemoteFile:
        """The activation file of ``layer``: a Path, or a remote shard's object (its size, its byte ranges)."""
        if self.remote is None:
            return act_shard_file(self.path, layer)
        return self.remote.file(act_shard_file(Path(), layer).as_posix())

    def row_source(self, layer: int):
        """The layer's rows behind one interface (store/rows.py): in place from the memmap, or read."""
        from .rows import row_source

        return row_source(self.raw_acts(layer), self.scales(layer), self.dtype)

    def __getstate__(self) -> dict:  # pickle without memmaps (they would be pickled as full copies)
        state = dict(self.__dict__)
        state["_acts"], state["_small"] = {}, {}
        return state

    @classmethod
    def open(cls, path: str | os.PathLike, *, remote: RemoteShard | None = None) -> Shard:
        """Opens a committed shard after checking its files against its attributes (declared.check_files: an
        lstat per file; the activation files' sizes are checked when each layer is first read). ``remote``:
        ``path`` is the mirror of a remote shard, whose objects' sizes are the ones checked."""
        from .declared import check_files, stat_files

        path = Path(path)
        if ZARR_JSON not in stat_files(path, [ZARR_JSON]):
            raise StoreCorruptError(f"shard {path.name}: missing {ZARR_JSON} (not a shard, or damaged)")
        shard = cls(path, read_json(path / ZARR_JSON, what=f"shard {path.name}"))
        shard.remote = remote
        check_files(path, shard.attrs[ATTRS_KEY], act_layers=(), tree=shard.objects)
        return shard

    def __repr__(self) -> str:
        return f"Shard({self.name}, sequences={self.num_sequences}, tokens={self.num_tokens})"

    @property
    def sequence_range(self) -> tuple[int, int]:
        return self.first_sequence, self.first_sequence + self.num_sequences

    def _array_meta(self, name: str) -> dict:
        """The array's zarr.json (checked against its crc32c in the manifest, schema 2), read once."""
        from .declared import parse_array_meta

        if name not in self._metas:
            rel, what = f"{name}/{ZARR_JSON}", f"shard {self.name} array {name}"
            try:
                raw = (self.path / rel).read_bytes()
            except FileNotFoundError:
                raise StoreCorruptError(f"{what}: {rel} is missing") from None
            self._metas[name] = parse_array_meta(raw, rel, what, self.files)
        return self._metas[name]

    def small_array(self, name: str) -> np.ndarray:
        """token_ids, token_types, offsets, sources, doc_starts or doc_sources (memmap, read-only)."""
        if name in self._small:
            return self._small[name]
        np_dtype, trailing = SMALL_ARRAYS[name]
        meta = self._array_meta(name)
        shape = tuple(meta.get("shape", ()))
        what = f"shard {self.name} array {name}"
        if len(shape) != 1 + len(trailing) or tuple(shape[1:]) != trailing:
            raise StoreCorruptError(
                f"{what}: shape {list(shape)} is not [n{', ' + str(trailing[0]) if trailing else ''}]"
            )
        from .declared import small_layout_ok

        if shape[0] == 0:
            arr = np.zeros(shape, dtype=np_dtype)
        elif small_layout_ok(meta, shape, np_dtype):
            f = small_chunk_file(self.path, name)
            expected = int(np.prod(shape)) * np_dtype.itemsize
            size = f.stat().st_size if f.exists() else -1
            if size != expected:
                raise StoreCorruptError(f"{what}: chunk file is {max(size, 0)} bytes, expected {expected}")
            arr = np.memmap(f, dtype=np_dtype, mode="r", shape=shape)
        else:  # never read through zarr at a declared shape: the format has one layout for these
            raise StoreCorruptError(f"{what}: dtype, chunks or codecs differ from the format's")
        self._small[name] = arr
        return arr

    def _zarr_array(self, name: str) -> Any:
        import zarr
        from zarr.storage import LocalStore

        if self.remote is not None:
            store: Any = self.remote.zarr_store()
        else:
            store = LocalStore(self.path, read_only=True)
        try:
            return zarr.open_array(store, path=name, mode="r")
        except (FileNotFoundError, ValueError, KeyError, TypeError) as e:
            raise StoreCorruptError(f"shard {self.name} array {name}: cannot open with zarr ({e})") from None

    @cached_property
    def offsets(self) -> np.ndarray:  # [S+1] shard-local token offsets
        off = np.array(self.small_array("offsets"))
        if (
            off.shape != (self.num_sequences + 1,)
            or off[0] != 0
            or off[-1] != self.num_tokens
            or (np.diff(off) <= 0).any()
        ):
            raise StoreCorruptError(
                f"shard {self.name} array offsets: not strictly increasing from 0 to "
                f"num_tokens={self.num_tokens} over {self.num_sequences} sequences"
            )
        return off

    @property
    def token_ids(self) -> np.ndarray:  # [T] int32
        return self.small_array("token_ids")

    @property
    def token_types(self) -> np.ndarray:  # [T] uint8
        return self.small_array("token_types")

    @property
    def sources(self) -> np.ndarray:  # [S, 2] int64
        return self.small_array("sources")

    @property
    def doc_starts(self) -> np.ndarray:  # [D] int64 shard-local
        return self.small_array("doc_starts")

    @property
    def doc_sources(self) -> np.ndarray:  # [D, 2] int64
        return self.small_array("doc_sources")

    def raw_acts(self, layer: int) -> Any:
        """[T, d_model] in stored representation: np.memmap when uncompressed, else a ZarrRows wrapper."""
        if layer in self._acts:
            return self._acts[layer]
        if layer not in self.layers:
            raise KeyError(f"layer {layer} not in shard {self.name} (layers {self.layers})")
        name = act_array_name(layer)
        what = f"shard {self.name} array {name}"
        meta = self._array_meta(name)
        np_dtype, itemsize = DTYPES[self.dtype]
        shape = (self.num_tokens, self.d_model)
        if tuple(meta.get("shape", ())) != shape:
            raise StoreCorruptError(f"{what}: shape {meta.get('shape')} != expected {list(shape)}")
        plan = memmappable(meta, shape, np_dtype)
        if plan is not None:
            path = self.act_file(layer)
            check_shard_index(
                path, rows_per_chunk=plan[0], n_chunks=plan[1], row_bytes=itemsize * self.d_model, what=what
            )
            if (
                self.remote is not None
            ):  # cached blocks are keyed by the file's crc32c: a new shard is new data
                entry = self.files.get(act_shard_file(Path(), layer).as_posix())
                arr: Any = self.remote.rows(layer, shape, np_dtype, version=entry and entry.get("crc32c"))
            else:
                arr = np.memmap(path, dtype=np_dtype, mode="r", shape=shape)
        else:
            zplan = zstd_chunks(meta, shape, np_dtype)
            if zplan is None:
                raise StoreCorruptError(f"{what}: chunks or codecs differ from the format's")
            check_compressed_index(self.act_file(layer), zplan[1], what)
            arr = ZarrRows(self._zarr_array(name))
        self._acts[layer] = arr
        return arr

    def scales(self, layer: int) -> np.ndarray | None:
        """fp8 layers: the per-token float32 scales [T] (memmap, read-only; x = scale * value(q)); else None."""
        if not is_fp8(self.dtype):
            return None
        name = scale_array_name(layer)
        if name in self._small:
            return self._small[name]
        if layer not in self.layers:
            raise KeyError(f"layer {layer} not in shard {self.name} (layers {self.layers})")
        from .declared import small_layout_ok

        what = f"shard {self.name} array {name}"
        T = self.num_tokens
        meta = self._array_meta(name)
        if meta.get("shape") != [T] or not small_layout_ok(meta, (T,), SCALE_DTYPE):
            raise StoreCorruptError(
                f"{what}: shape, dtype, chunks or codecs differ from the format's ([{T}])"
            )
        f = scale_file(self.path, layer)
        size = f.stat().st_size if f.exists() else -1
        if size != T * SCALE_DTYPE.itemsize:
            raise StoreCorruptError(f"{what}: chunk file is {max(size, 0)} bytes, expected {T * 4}")
        self._small[name] = arr = np.memmap(f, dtype=SCALE_DTYPE, mode="r", shape=(T,))
        return arr

    def acts(self, layer: int) -> np.ndarray | Any:
        """float32/float16: same as raw_acts; bfloat16, fp8: decoded float32 copy of the whole shard layer."""
        raw = self.raw_acts(layer)
        if is_fp8(self.dtype):
            return to_float32(raw[:], self.dtype, self.scales(layer))
        return to_float32(raw[:], self.dtype) if self.dtype == "bfloat16" else raw

    def sequence(self, i: int, *, index: int | None = None) -> Sequence:
        return Sequence(self, i, self.first_sequence + i if index is None else index)

    def locate(self, row: int) -> TokenLocation:
        """Which sequence holds shard-local token ``row``, and where in it."""
        if not 0 <= row < self.num_tokens:
            raise IndexError(f"token {row} out of range for shard {self.name} ({self.num_tokens} tokens)")
        local = int(np.searchsorted(self.offsets, row, side="right")) - 1
        ds, src_row = (int(x) for x in self.sources[local])
        return TokenLocation(
            shard=self.name, row=int(row), sequence=self.first_sequence + local,
            position=int(row - self.offsets[local]), length=int(self.offsets[local + 1] - self.offsets[local]),
            source=(ds, src_row),
        )  # fmt: skip

    def bytes(self) -> int:
        return tree_bytes(self.path) if self.remote is None else sum(self.remote.objects.values())
