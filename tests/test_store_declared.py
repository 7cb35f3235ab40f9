"""inspect validates before it reports: edited counts and shapes fail in one line with no big allocation (in
inspect, verify and open_store); symbolic links never lead out of the store; quick_check's cheap checks."""

from __future__ import annotations

import json
import os
import shutil
import tracemalloc

import numpy as np
import pytest
from typer.testing import CliRunner

from fastsae import store as fstore
from fastsae.cli import app
from fastsae.store import StoreCorruptError, open_store, verify_store
from tests.test_store import META, _no_fsync, to_schema_1, write_store  # noqa: F401  (autouse fixture)

SHARD = "shard-00000-000001.zarr"
runner = CliRunner()


@pytest.fixture(params=[2, 1], ids=["schema2", "schema1"])
def store(tmp_path, request):
    root = tmp_path / "s"
    write_store(root, [[40, 9], [30, 17, 5]], dtype="bfloat16", rows_per_chunk=16)
    if request.param == 1:
        to_schema_1(root)
    return root


def edit_json(path, fn) -> None:
    obj = json.loads(path.read_text())
    fn(obj)
    path.write_text(json.dumps(obj))


def refused_by_every_command(root, *needles: str, at_open: bool = True) -> None:
    """inspect and verify exit 2 with one error line naming every needle, and allocate little on the way;
    open_store refuses it too (``at_open``), else quick_check does."""
    for cmd in ("inspect", "verify"):
        tracemalloc.start()
        r = runner.invoke(app, [cmd, str(root)])
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert r.exit_code == 2 and "Traceback" not in r.output, (cmd, r.output)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and all(n in lines[0] for n in needles), (cmd, lines)
        assert peak < 64 * 2**20, f"{cmd} allocated {peak / 2**20:.0f} MiB"
    with pytest.raises(StoreCorruptError):
        fstore.quick_check(open_store(root)) if not at_open else open_store(root)


def _attrs(root):
    return root / SHARD / "zarr.json"


def test_edited_token_count(store):
    edit_json(_attrs(store), lambda g: g["attributes"]["fastsae"].update(num_tokens=62))
    refused_by_every_command(store, SHARD)


def test_edited_sequence_count(store):
    edit_json(_attrs(store), lambda g: g["attributes"]["fastsae"].update(num_sequences=2))
    refused_by_every_command(store, SHARD)


@pytest.mark.parametrize("tokens", [10**6, 10**13])
def test_huge_declared_tokens(store, tokens):
    """Counts and every shape edited consistently: only the file sizes can tell, before any allocation."""
    d = 24

    def attrs(g):
        g["attributes"]["fastsae"].update(num_tokens=tokens)
        g["attributes"]["fastsae"].pop("meta_crc32c", None)  # as if the editor knew about it

    edit_json(_attrs(store), attrs)
    info = json.loads(_attrs(store).read_text())["attributes"]["fastsae"]
    info["meta_crc32c"] = fstore.format.meta_crc32c(info) if "files" in info else None
    if info["meta_crc32c"] is None:
        info.pop("meta_crc32c")
    edit_json(_attrs(store), lambda g: g["attributes"].update(fastsae=info))
    for name in ("token_ids", "token_types"):
        edit_json(store / SHARD / name / "zarr.json", lambda m: m.update(shape=[tokens]))
        edit_json(store / SHARD / name / "zarr.json", lambda m: m["chunk_grid"]["configuration"].update(
            chunk_shape=[tokens]))  # fmt: skip
    for layer in (2, 5):
        path = store / SHARD / "acts" / f"layer_{layer}" / "zarr.json"
        edit_json(path, lambda m: m.update(shape=[tokens, d]))
        edit_json(
            path, lambda m: m["chunk_grid"]["configuration"].update(chunk_shape=[-(-tokens // 16) * 16, d])
        )
    refused_by_every_command(store, SHARD)


def test_edited_array_shape(store):
    path = store / SHARD / "acts" / "layer_5" / "zarr.json"
    edit_json(path, lambda m: m.update(shape=[52 * 2**14, 24]))  # a 2 KB edit that used to size a 1.6 GB read
    refused_by_every_command(store, SHARD, "acts/layer_5", "shape", at_open=False)
    s = open_store(store)  # an array's zarr.json is read, and checked, when the array is first read
    with pytest.raises(StoreCorruptError, match=f"shard {SHARD} array acts/layer_5"):
        s.shards[1].raw_acts(5)
    assert s.shards[1].raw_acts(2).shape == (52, 24)


def test_edited_offsets_shape(store):
    edit_json(store / SHARD / "offsets" / "zarr.json", lambda m: m.update(shape=[2]))
    refused_by_every_command(store, SHARD, "offsets", at_open=False)
    with pytest.raises(StoreCorruptError, match=f"shard {SHARD} array offsets"):
        open_store(store).shards[1].offsets  # noqa: B018


def test_truncated_token_ids(store):
    f = store / SHARD / "token_ids" / "c" / "0"
    os.truncate(f, f.stat().st_size // 2)
    refused_by_every_command(store, SHARD, "token_ids", "bytes")


def test_invalid_token_type(store):
    f = store / SHARD / "token_types" / "c" / "0"
    data = bytearray(f.read_bytes())
    data[7] = 200
    f.write_bytes(bytes(data))
    refused_by_every_command(store, SHARD, "token_types", "200", at_open=False)
    with pytest.raises(StoreCorruptError, match="invalid value 200 at token 7"):
        fstore.quick_check(open_store(store))


def test_token_id_beyond_vocabulary(tmp_path):
    meta = {**META, "tokenizer": {"vocab_size": 40_000}}
    fstore.init_store(tmp_path, meta=meta)
    write_store(tmp_path, [[30, 20]])  # ids drawn below 50,000
    with pytest.raises(StoreCorruptError, match=r"token_ids: invalid id \d+ at token \d+ \(valid: 0..39999"):
        fstore.quick_check(open_store(tmp_path))
    r = runner.invoke(app, ["verify", "--quick", str(tmp_path)])
    assert r.exit_code == 2 and "the tokenizer's vocabulary" in r.stderr, r.output


def test_symlinked_shard_folder_is_refused(store, tmp_path):
    outside = tmp_path / "elsewhere"
    shutil.move(store / SHARD, outside)
    os.symlink(outside, store / SHARD)
    refused_by_every_command(store, SHARD, "symbolic link")
    with pytest.raises(StoreCorruptError, match=f"shard {SHARD} is a symbolic link"):
        open_store(store)


def test_symlinked_file_inside_a_shard_is_refused(store, tmp_path):
    f = store / SHARD / "acts" / "layer_2" / "c" / "0" / "0"
    outside = tmp_path / "acts.bin"
    shutil.move(f, outside)
    os.symlink(outside, f)
    refused_by_every_command(store, SHARD, "symbolic link")


def test_quick_check_passes_on_a_good_store(store):
    s = open_store(store)
    assert fstore.quick_check(s) == ["store.json names no tokenizer vocab_size: token ids are checked against "
                                     "int32 only"]  # fmt: skip
    assert verify_store(store)["ok"]
    assert np.asarray(s.sequence(2).raw_acts(2)).shape == (30, 24)


def test_truncated_activation_file_leaves_the_other_layers_readable(store):
    f = store / SHARD / "acts" / "layer_5" / "c" / "0" / "0"
    os.truncate(f, f.stat().st_size // 2)
    refused_by_every_command(store, SHARD, "acts/layer_5", "truncated", at_open=False)
    s = open_store(store)  # a layer's file is checked when that layer is read (or by quick_check)
    with pytest.raises(StoreCorruptError, match="acts/layer_5.*truncated"):
        s.shards[1].raw_acts(5)
    assert fstore.quick_check(s, layers=[2]) and s.shards[1].raw_acts(2).shape == (52, 24)
    with pytest.raises(StoreCorruptError, match="acts/layer_5"):
        fstore.quick_check(s)


def test_verify_refuses_a_symlink_anywhere_inside_a_shard(store, tmp_path):
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", store / SHARD / "acts" / "extra")  # read by nothing, still refused
    assert open_store(store).num_sequences == 5
    r = runner.invoke(app, ["verify", str(store)])
    assert r.exit_code == 2 and "acts/extra is a symbolic link" in r.stderr, r.output
