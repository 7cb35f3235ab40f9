"""On-disk layout of a fastsae store: names, schema version, dtypes, and small file helpers.

Everything that knows a path or a byte layout lives here, so writer, reader and verifier agree.
See FORMAT.md for the layout in prose.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import stat
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from .errors import StoreCorruptError, StoreNotFoundError

# 3: object-store commit (a shard counts once its manifest object exists); 2: per-file checksums and writer
# records; 1 (no checksums, no records) and 2 are still read
SCHEMA_VERSION = 3
SUPPORTED_SCHEMA_VERSIONS = frozenset({1, 2, 3})
FORMAT_NAME = "fastsae-store"

STORE_JSON = "store.json"
SKIPPED_JSONL = "skipped.jsonl"
ZARR_JSON = "zarr.json"
SHARD_RE = re.compile(r"^shard-(\d{5,})-(\d{6,})\.zarr$")
PARTIAL_PREFIX = ".partial-"
PARTIAL_RE = re.compile(r"^\.partial-shard-(\d{5,})-(\d{6,})\.zarr$")
WRITER_RECORD_RE = re.compile(r"^writer-(\d{5,})\.json$")
ATTRS_KEY = "fastsae"  # group attribute holding the shard's own facts
FILES_KEY = "files"  # in ATTRS_KEY (schema 2): {path inside the shard: {"bytes": n, "crc32c": c}}
META_CRC_KEY = "meta_crc32c"  # in ATTRS_KEY (schema 2): crc32c of the canonical JSON of the rest of ATTRS_KEY
STORE_META_KEY = "store_meta"  # group attribute holding a copy of store.json

# stored dtype name -> (numpy dtype of the zarr array, bytes per element)
DTYPES: dict[str, tuple[np.dtype, int]] = {
    "float32": (np.dtype("<f4"), 4),
    "float16": (np.dtype("<f2"), 2),
    "bfloat16": (np.dtype("<u2"), 2),  # bit patterns; array attribute fastsae_dtype = "bfloat16"
    "fp8_e4m3": (np.dtype("u1"), 1),  # float8 e4m3fn bit patterns, one float32 scale per token (FP8_MAX)
    "fp8_e5m2": (np.dtype("u1"), 1),  # float8 e5m2 bit patterns, likewise
}
# fp8 dtypes: largest finite value, the value a row's max |x| maps to (x = scale * q); mantissa bits
FP8_MAX = {"fp8_e4m3": 448.0, "fp8_e5m2": 57344.0}
FP8_ROUNDINGS = ("stochastic", "nearest")  # stochastic: unbiased, keyed by position (stochastic_rounding.py)
FP8_MANTISSA_BITS = {"fp8_e4m3": 3, "fp8_e5m2": 2}
SCALE_DTYPE = np.dtype("<f4")

# small per-shard arrays: name -> (numpy dtype, trailing shape)
SMALL_ARRAYS: dict[str, tuple[np.dtype, tuple[int, ...]]] = {
    "token_ids": (np.dtype("<i4"), ()),  # [T]
    "token_types": (np.dtype("u1"), ()),  # [T]
    "offsets": (np.dtype("<i8"), ()),  # [S+1]
    "sources": (np.dtype("<i8"), (2,)),  # [S, 2]
    "doc_starts": (np.dtype("<i8"), ()),  # [D]
    "doc_sources": (np.dtype("<i8"), (2,)),  # [D, 2]
}

COMPRESSIONS = (None, "zstd")
ZSTD_LEVEL = 3
TARGET_CHUNK_BYTES = 256 * 1024  # inner chunk size the writer aims for when rows_per_chunk is not given
MAX_UINT64 = 2**64 - 1
# |activation| above this is damage or a broken forward pass, not data (verify flags it; float16 cannot exceed it)
MAX_ABS_ACTIVATION = 1e6
INDEX_ENTRY_BYTES = 16  # (offset, nbytes) as two little-endian uint64 per inner chunk
CRC_BYTES = 4


def shard_stem(writer: int, seq: int) -> str:
    return f"shard-{writer:05d}-{seq:06d}"


def shard_name(writer: int, seq: int) -> str:
    return shard_stem(writer, seq) + ".zarr"


def partial_name(writer: int, seq: int) -> str:
    return f"{PARTIAL_PREFIX}{shard_stem(writer, seq)}.zarr"


def writer_record_name(writer: int) -> str:
    return f"writer-{writer:05d}.json"


def writer_lock_name(writer: int) -> str:
    return f".writer-{writer:05d}.lock"


def act_array_name(layer: int) -> str:
    return f"acts/layer_{layer}"


def scale_array_name(layer: int) -> str:
    """The per-token float32 scales of an fp8 layer: [T], one uncompressed chunk (FORMAT.md)."""
    return f"acts/layer_{layer}_scale"


def scale_file(shard_dir: Path, layer: int) -> Path:
    return shard_dir / "acts" / f"layer_{layer}_scale" / "c" / "0"


def act_shard_file(shard_dir: Path, layer: int) -> Path:
    """The single shard file of ``acts/layer_<L>``: chunk key c/0/0 (default '/' chunk key encoding)."""
    return shard_dir / "acts" / f"layer_{layer}" / "c" / "0" / "0"


def small_chunk_file(shard_dir: Path, name: str) -> Path:
    """The single chunk file of a small array (chunk shape == array shape, no compression)."""
    ndim = 1 + len(SMALL_ARRAYS[name][1])
    return shard_dir.joinpath(name, "c", *(["0"] * ndim))


def index_nbytes(n_chunks: int) -> int:
    return INDEX_ENTRY_BYTES * n_chunks + CRC_BYTES


def dtype_info(dtype: str) -> tuple[np.dtype, int]:
    if dtype not in DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def auto_rows_per_chunk(row_bytes: int) -> int:
    """Rows per inner chunk for ~TARGET_CHUNK_BYTES chunks (power of two in [16, 4096])."""
    rows = max(1, TARGET_CHUNK_BYTES // max(1, row_bytes))
    return int(min(4096, max(16, 1 << (rows.bit_length() - 1))))


def plan_chunks(num_rows: int, target_rows: int) -> tuple[int, int]:
    """(rows_per_chunk, n_chunks) for num_rows rows: at most target_rows per chunk, padding < n_chunks rows."""
    n_chunks = max(1, -(-num_rows // target_rows))
    return max(1, -(-num_rows // n_chunks)), n_chunks


def crc32c(data: bytes | np.ndarray, crc: int = 0) -> int:
    """crc32c of bytes or of a C-contiguous array's bytes (no copy), continuing from ``crc``."""
    import google_crc32c

    return int(google_crc32c.extend(crc, data))


def file_crc32c(path: Path, *, block: int = 16 * 2**20) -> int:
    """crc32c of a whole file: small ones read, larger ones through a read-only mapping (no copy)."""
    size = os.path.getsize(path)
    if size <= 2**20:
        return crc32c(Path(path).read_bytes())
    crc = 0
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        data = np.frombuffer(m, dtype=np.uint8)
        for a in range(0, size, block):
            crc = crc32c(data[a : a + block], crc)
        del data  # before the mapping closes
    return crc


def meta_crc32c(info: dict) -> int:
    """crc32c of a shard's fastsae attributes without META_CRC_KEY, as canonical JSON."""
    rest = {k: v for k, v in info.items() if k != META_CRC_KEY}
    return crc32c(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode())


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (directories: so renames/creations inside it are durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fsync_path(Path(dirpath) / name)
        fsync_path(Path(dirpath))


def tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            total += os.stat(os.path.join(dirpath, name)).st_size
    return total


def normalize_json(obj: Any) -> Any:
    """What obj looks like after a JSON round trip (tuples -> lists, numpy scalars -> Python)."""
    return json.loads(json.dumps(obj, default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json_atomic(path: Path, obj: Any, *, exclusive: bool = False) -> bool:
    """Write JSON via a unique temp file + fsync + rename. exclusive: never replace an existing file
    (uses link(2), atomic create-if-absent); returns False if the file already existed."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w") as f:  # a full disk fails here: the finally below removes the temp file
            json.dump(obj, f, indent=2, sort_keys=True, default=_json_default)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            except OSError:  # file systems without hard links: best effort
                if path.exists():
                    return False
                os.replace(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_path(path.parent)
    return True


def read_json(path: Path, *, what: str) -> dict:
    try:
        with open(path) as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise StoreNotFoundError(f"{what}: missing {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreCorruptError(f"{what}: {path.name} is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise StoreCorruptError(f"{what}: {path.name} is not a JSON object")
    return obj


def read_store_json(root: Path) -> dict:
    root = Path(root)
    if not root.is_dir():
        raise StoreNotFoundError(f"store not found: {root} is not a directory")
    meta = read_json(root / STORE_JSON, what=f"store {root}")
    version = meta.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise StoreCorruptError(
            f"store {root}: store.json schema_version {version!r} is not supported "
            f"(this fastsae reads {sorted(SUPPORTED_SCHEMA_VERSIONS)})"
        )
    return meta


def scan_shards(root: Path) -> tuple[list[Path], list[str]]:
    """(committed shard directories in name order, problems): a shard name that is a symbolic link or not a
    directory is a problem, never followed (the store root is a boundary)."""
    shards, problems = [], []
    for p in sorted(Path(root).iterdir()):
        if not SHARD_RE.match(p.name):
            continue
        if p.is_symlink():
            problems.append(
                f"shard {p.name} is a symbolic link (to {os.readlink(p)}); shards must be real directories "
                "inside the store"
            )
        elif not p.is_dir():
            problems.append(f"shard {p.name} is not a directory")
        else:
            shards.append(p)
    return shards, problems


def list_shards(root: Path) -> list[Path]:
    """Committed shard directories (name order; harvest order comes from their first_sequence). Raises
    StoreCorruptError for a shard name that is a symbolic link or not a directory."""
    shards, problems = scan_shards(root)
    if problems:
        raise StoreCorruptError(f"store {root}: {problems[0]}", problems)
    return shards


def lstat_inside(shard_dir: Path, rel: str, *, what: str) -> os.stat_result | None:
    """lstat of ``shard_dir/rel`` with no symbolic link on the way (None if it does not exist)."""
    path = shard_dir
    for part in rel.split("/"):
        path = path / part
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):
            raise StoreCorruptError(f"{what}: {rel} is a symbolic link; a shard's files must be inside it")
    return st


def list_partials(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).iterdir() if p.name.startswith(PARTIAL_PREFIX))
