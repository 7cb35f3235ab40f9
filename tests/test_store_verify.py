"""verify_store finds damage: each kind of damage gives a one-line problem naming the shard/array."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from fastsae.store import StoreCorruptError, open_store, verify_store
from fastsae.store.format import index_nbytes
from tests.test_store import _no_fsync, write_store  # noqa: F401  (autouse fixture)

SHARD = "shard-00000-000000.zarr"


@pytest.fixture
def store(tmp_path):
    write_store(tmp_path, [[40, 90, 7], [11, 5]], dtype="bfloat16", rows_per_chunk=16)
    assert verify_store(tmp_path)["ok"]
    return tmp_path


def act_file(root, layer=2, shard=SHARD):
    return root / shard / "acts" / f"layer_{layer}" / "c" / "0" / "0"


def problems(root) -> list[str]:
    with pytest.raises(StoreCorruptError) as e:
        verify_store(root)
    assert all("\n" not in p for p in e.value.problems)
    return e.value.problems


def test_truncated_shard_file(store):
    f = act_file(store)
    os.truncate(f, f.stat().st_size - 100)
    (p,) = problems(store)
    assert SHARD in p and "acts/layer_2" in p and "bytes, expected" in p
    with pytest.raises(StoreCorruptError, match="truncated"):
        open_store(store).sequence(0).acts(2)


def test_flipped_index_bytes(store):
    f = act_file(store, layer=5)
    n_chunks = -(-137 // 16)
    with open(f, "r+b") as fh:
        fh.seek(f.stat().st_size - index_nbytes(n_chunks) + 3)
        b = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([b[0] ^ 0xFF]))
    (p,) = problems(store)
    assert SHARD in p and "acts/layer_5" in p and "crc32c" in p


def test_deleted_array(store):
    shutil.rmtree(store / SHARD / "token_types")
    (p,) = problems(store)
    assert SHARD in p and "token_types" in p


def test_deleted_chunk_file(store):
    (store / SHARD / "token_ids" / "c" / "0").unlink()
    (p,) = problems(store)
    assert "token_ids" in p and "chunk file" in p


def test_corrupt_group_zarr_json(store):
    (store / SHARD / "zarr.json").write_text('{"zarr_format": 3, "node_')
    (p, *_) = problems(store)
    assert SHARD in p and "zarr.json" in p
    with pytest.raises(StoreCorruptError):
        open_store(store)


def test_corrupt_array_zarr_json(store):
    path = store / "shard-00000-000001.zarr" / "acts" / "layer_2" / "zarr.json"
    meta = json.loads(path.read_text())
    meta["shape"] = [15, 24]
    path.write_text(json.dumps(meta))
    (p,) = problems(store)
    assert "shard-00000-000001.zarr" in p and "acts/layer_2" in p and "shape" in p


def test_nan_in_activations(store):
    f = act_file(store)
    mm = np.memmap(f, dtype=np.uint16, mode="r+", shape=(137, 24))
    mm[100, 3] = 0x7FC0  # bf16 NaN
    mm.flush()
    del mm
    (p,) = problems(store)
    assert "acts/layer_2" in p and "non-finite" in p and "token 100" in p


def test_invalid_token_type(store):
    f = store / SHARD / "token_types" / "c" / "0"
    data = bytearray(f.read_bytes())
    data[5] = 42
    f.write_bytes(bytes(data))
    (p,) = problems(store)
    assert "token_types" in p and "42" in p


def test_bad_offsets(store):
    f = store / SHARD / "offsets" / "c" / "0"
    off = np.frombuffer(f.read_bytes(), dtype="<i8").copy()
    off[1], off[2] = off[2], off[1]
    f.write_bytes(off.tobytes())
    (p,) = problems(store)
    assert "offsets" in p


def test_overlapping_and_missing_shards(tmp_path):
    write_store(tmp_path, [[3, 3]], writer=0)
    write_store(tmp_path, [[3, 3]], writer=1, first_sequence=1)
    write_store(tmp_path, [[3]], writer=2, first_sequence=9)
    ps = problems(tmp_path)
    assert any("shard-00000-000000.zarr and shard-00001-000000.zarr overlap" in p for p in ps)
    assert any("sequences [3, 9) are missing" in p and "shard-00002-000000.zarr" in p for p in ps)


def test_missing_store_json(store):
    (store / "store.json").unlink()
    (p,) = problems(store)
    assert "store.json" in p


def test_unsupported_schema_version(store):
    meta = json.loads((store / "store.json").read_text())
    meta["schema_version"] = 99
    (store / "store.json").write_text(json.dumps(meta))
    (p,) = problems(store)
    assert "schema_version 99" in p


def test_compressed_store_truncated(tmp_path):
    write_store(tmp_path, [[40, 90]], dtype="float16", compression="zstd", rows_per_chunk=16)
    assert verify_store(tmp_path)["ok"]
    f = act_file(tmp_path)
    os.truncate(f, f.stat().st_size - 50)
    (p,) = problems(tmp_path)
    assert "acts/layer_2" in p


def test_partial_dir_is_a_warning_not_damage(store):
    (store / ".partial-shard-00003-000000.zarr" / "acts").mkdir(parents=True)
    report = verify_store(store)
    assert report["ok"] and [w for w in report["warnings"] if "partial" in w]
