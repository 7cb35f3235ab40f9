"""Every byte covered by a checksum: a flipped activation mantissa, a value of 1e27 and a flipped token id fail
`fastsae verify` naming the shard, file or sequence; the reader's memmap path stays a zero-copy view; a bad
value is located by shard and sequence (Store.locate, find_bad_activation)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fastsae import store as fstore
from fastsae.cli import app
from fastsae.store import ShardWriter, open_store, verify_store
from tests.test_store import META, _no_fsync, to_schema_1, write_store  # noqa: F401  (autouse fixture)

SHARD = "shard-00000-000001.zarr"
runner = CliRunner()


def verify_errors(root) -> list[str]:
    r = runner.invoke(app, ["verify", str(root)])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    return r.stderr.strip().splitlines()


@pytest.fixture(params=["bfloat16", "float32"])
def store(tmp_path, request):
    write_store(tmp_path, [[40, 9], [30, 17, 5]], dtype=request.param, rows_per_chunk=16)
    assert runner.invoke(app, ["verify", str(tmp_path)]).exit_code == 0
    return tmp_path


def act_file(root, layer=5):
    return root / SHARD / "acts" / f"layer_{layer}" / "c" / "0" / "0"


def test_flipped_activation_mantissa_bit(store):
    s = open_store(store)
    dtype = np.dtype(np.uint16 if s.dtype == "bfloat16" else np.uint32)
    mm = np.memmap(act_file(store), dtype=dtype, mode="r+", shape=(52, 24))
    before = float(s.shards[1].acts(5)[33, 7])
    mm[33, 7] ^= 1  # lowest mantissa bit: still finite and plausible
    mm.flush()
    del mm
    assert float(open_store(store).shards[1].acts(5)[33, 7]) != before
    (line,) = verify_errors(store)
    assert SHARD in line and "acts/layer_5" in line and "crc32c mismatch" in line, line


def test_absurd_value_is_named_with_its_sequence(store):
    s = open_store(store)
    raw = s.shards[1].raw_acts(5)
    value = np.array([[1e27]], np.float32)
    stored = value.view(np.uint32) >> 16 if s.dtype == "bfloat16" else value
    mm = np.memmap(act_file(store), dtype=raw.dtype, mode="r+", shape=raw.shape)
    mm[40, 2] = stored.astype(raw.dtype)[0, 0]  # row 40 = token 10 of the shard's 2nd sequence (global 3)
    mm.flush()
    del mm
    (line,) = verify_errors(store)
    assert line.startswith(f"error: shard {SHARD} array acts/layer_5: value "), line
    assert "e+26 beyond |x| <= 1e+06 at token 40" in line or "1e+27 beyond" in line, line  # bf16 rounds
    assert "sequence 3, token 10 of 17" in line and "crc32c does not match" in line, line
    bad = fstore.find_bad_activation(open_store(store), 5)
    assert (bad.location.shard, bad.location.sequence, bad.location.position) == (SHARD, 3, 10)
    assert (
        bad.value == pytest.approx(1e27, rel=1e-2)
        and fstore.find_bad_activation(open_store(store), 2) is None
    )


def test_absurd_value_written_so_is_flagged(tmp_path):
    x = np.ones((6, 4), np.float32)
    x[4, 1] = -3e9  # finite, so the writer takes it: a forward pass gone wrong
    with ShardWriter(tmp_path, writer=0, seq=0, first_sequence=0, layers=[0], d_model=4, meta=META) as w:
        w.append(token_ids=np.arange(2), token_types=np.ones(2), acts={0: x[:2]}, source=(0, 0))
        w.append(token_ids=np.arange(4), token_types=np.ones(4), acts={0: x[2:]}, source=(0, 7))
    (line,) = verify_errors(tmp_path)
    assert "value -3e+09" in line and "sequence 1, token 2 of 4, from dataset 0 row 7" in line, line
    assert "crc32c matches: written so" in line, line
    assert runner.invoke(app, ["verify", "--quick", str(tmp_path)]).exit_code == 0  # values: full read only


def test_non_finite_value(store):
    s = open_store(store)
    raw = s.shards[1].raw_acts(5)
    mm = np.memmap(act_file(store), dtype=raw.dtype, mode="r+", shape=raw.shape)
    mm[3, 0] = 0x7F80 if s.dtype == "bfloat16" else np.inf
    mm.flush()
    del mm
    (line,) = verify_errors(store)
    assert "non-finite value at token 3" in line and "sequence 2, token 3 of 30" in line, line


def test_flipped_token_id(store):
    f = store / SHARD / "token_ids" / "c" / "0"
    ids = np.frombuffer(f.read_bytes(), dtype="<i4").copy()
    ids[20] ^= 1 << 3  # still a valid id
    f.write_bytes(ids.tobytes())
    (line,) = verify_errors(store)
    assert (
        f"shard {SHARD} array token_ids: chunk file c/0 was changed after writing (crc32c mismatch)" in line
    )
    r = runner.invoke(app, ["inspect", str(store)])  # a cheap check: inspect sees it too
    assert r.exit_code == 2 and "token_ids" in r.stderr and "crc32c" in r.stderr, r.output
    with pytest.raises(fstore.StoreCorruptError, match="token_ids.*crc32c"):
        fstore.quick_check(open_store(store))


@pytest.mark.parametrize("name", ["offsets", "sources", "doc_starts", "token_types"])
def test_every_small_array_is_checksummed(store, name):
    f = next((store / SHARD / name / "c").rglob("*"))
    while f.is_dir():
        f = next(f.iterdir())
    data = bytearray(f.read_bytes())
    data[-1] ^= 0x01  # offsets/doc_starts: moves the last value by one, still increasing
    f.write_bytes(bytes(data))
    (line, *_) = verify_errors(store)
    assert SHARD in line and name in line, line


def test_compressed_shard_checksum(tmp_path):
    write_store(tmp_path, [[40, 90]], dtype="float16", compression="zstd", rows_per_chunk=16)
    assert verify_store(tmp_path)["ok"]
    f = tmp_path / "shard-00000-000000.zarr" / "acts" / "layer_2" / "c" / "0" / "0"
    data = bytearray(f.read_bytes())
    data[len(data) // 3] ^= 0x10
    f.write_bytes(bytes(data))
    (line,) = verify_errors(tmp_path)
    assert "acts/layer_2" in line, line


def test_schema_1_store_reads_and_verifies_without_checksums(store):
    truth = open_store(store)
    want = [np.asarray(truth.sequence(i).raw_acts(5)).copy() for i in range(5)]
    to_schema_1(store)
    s = open_store(store)
    assert [sh.schema_version for sh in s.shards] == [1, 1] and not s.shards[0].files
    for i in range(5):
        np.testing.assert_array_equal(s.sequence(i).raw_acts(5), want[i])
    r = runner.invoke(app, ["verify", str(store)])
    assert r.exit_code == 0 and "written before schema 2" in r.stderr, r.output


def test_memmap_read_path_is_still_a_zero_copy_view(store):
    s = open_store(store)
    raw = s.shards[1].raw_acts(5)
    assert isinstance(raw, np.memmap) and raw.shape == (52, 24)
    seq = s.sequence(3).raw_acts(5)
    assert np.shares_memory(seq, raw) and seq.base is not None


def test_locate_every_token(store):
    s = open_store(store)
    row = 0
    for i in range(s.num_sequences):
        q = s.sequence(i)
        for pos in range(len(q)):
            loc = s.locate(row)
            assert (loc.shard, loc.sequence, loc.position, loc.length) == (q.shard.name, i, pos, len(q))
            assert loc.source == q.source
            row += 1
    with pytest.raises(IndexError):
        s.locate(row)


def test_manifest_lists_every_file_of_the_shard(store):
    shard = store / SHARD
    info = json.loads((shard / "zarr.json").read_text())["attributes"]["fastsae"]
    on_disk = {p.relative_to(shard).as_posix() for p in shard.rglob("*") if p.is_file()}
    assert set(info["files"]) == on_disk - {"zarr.json"}
