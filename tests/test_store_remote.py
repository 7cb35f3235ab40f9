"""Stores on object storage, against a real S3-compatible server on loopback (moto, tests/_s3_server.py):
written and read through s3://, committed by their manifest object, uncommitted shards ignored and cleaned,
verify/inspect on the bucket, the remote reader's batches equal the local memmap reader's."""

from __future__ import annotations

import json
import pickle
import uuid

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fastsae.cli import app
from fastsae.store import (
    StoreCorruptError,
    begin_writer,
    open_store,
    quick_check,
    summarize_store,
    verify_store,
)
from fastsae.store.remote import RemoteRoot, shard_objects
from fastsae.train.reader import ActivationReader
from tests._reader_stores import build_store

pytest_plugins = ["tests._s3_server"]  # its fixtures: s3 (the server), s3_url (a fresh prefix)
runner = CliRunner()


@pytest.fixture(scope="module")
def base(s3, tmp_path_factory):
    """The same small bf16 store written to S3 and to a local directory (once: the tests that change the bucket
    work on a copy)."""
    url = f"s3://{s3['bucket']}/base-{uuid.uuid4().hex[:8]}"
    local = tmp_path_factory.mktemp("remote-twin") / "local"
    return build_store(url, dtype="bfloat16"), build_store(local, dtype="bfloat16"), url


@pytest.fixture
def twins(base, s3_url):
    """(the S3 store, its local twin, the URL of this test's own server-side copy of the S3 store)."""
    root = RemoteRoot(base[2])
    root.fs.copy(root.base, RemoteRoot(s3_url).base, recursive=True)
    return base[0], base[1], s3_url


def test_a_remote_store_reads_as_its_local_twin(twins):
    remote, local, _ = twins
    url = remote.url
    assert len(remote.shards) == len(local.shards) == 3
    assert remote.meta["schema_version"] == 3 and all(sh.schema_version == 3 for sh in remote.shards)
    for a, b in zip(remote.shards, local.shards, strict=True):
        assert a.name == b.name and a.files == b.files  # same bytes, same checksums
        for name in ("token_ids", "token_types", "offsets", "sources"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        for layer in remote.layers:
            np.testing.assert_array_equal(a.raw_acts(layer)[:], b.raw_acts(layer)[:])
            rows = np.array([0, 3, 4, a.num_tokens - 1])
            np.testing.assert_array_equal(a.raw_acts(layer)[rows], b.raw_acts(layer)[rows])
    assert remote.sequence(20).acts(3).tolist() == local.sequence(20).acts(3).tolist()
    copy = pickle.loads(pickle.dumps(remote))  # a Store sent to another process reads on there
    np.testing.assert_array_equal(copy.shards[1].raw_acts(1)[2:9], local.shards[1].raw_acts(1)[2:9])
    assert remote.fingerprint != "" and quick_check(remote) == quick_check(local)
    objects = RemoteRoot(url).listing()
    assert not any(".partial" in k or ".lock" in k for k in objects)  # staging stays local


def test_the_remote_reader_equals_the_local_one_and_reuses_its_cache(twins):
    remote, local, url = twins
    kw = dict(layer=1, batch_size=16, buffer_tokens=64, chunk_tokens=32, token_types="-special", seed=3)
    # bitwise: the same rows in the same order, decoded the same way (only where the bytes come from differs)
    want = torch.cat(list(ActivationReader(local, epochs=2, **kw)))
    fresh = open_store(url)
    got = torch.cat(list(ActivationReader(fresh, epochs=1, **kw)))
    first = (fresh.cache.stats.hits, fresh.cache.stats.misses)
    assert first[1] > 0 and torch.equal(got, want[: len(got)])
    again = ActivationReader(fresh, epochs=2, **kw)
    assert torch.equal(torch.cat(list(again)), want)
    assert fresh.cache.stats.misses == first[1]  # epochs 2 and 3: every block from the cache
    small = open_store(url, cache_bytes=1)  # a cache of one block: bounded, still correct
    assert torch.equal(torch.cat(list(ActivationReader(small, epochs=2, **kw))), want)
    assert len(list(small.cache.folder.glob("*.blk"))) <= 2


def test_uncommitted_shards_are_ignored_and_their_writer_removes_them(twins):
    remote, local, url = twins
    root = RemoteRoot(url)
    shard = shard_objects(root.listing())["shard-00000-000000.zarr"]
    for rel in shard:  # a writer killed between its data objects and its manifest
        if rel != "zarr.json":
            root.put_bytes(f"shard-00001-000000.zarr/{rel}", root.cat(f"shard-00000-000000.zarr/{rel}"))
    s = open_store(url)
    assert [sh.name for sh in s.shards] == [sh.name for sh in remote.shards]
    assert s.uncommitted == ["shard-00001-000000.zarr"]
    report = verify_store(url)
    assert any("uncommitted shard shard-00001-000000.zarr" in w for w in report["warnings"])
    assert summarize_store(url)["partial_shards"] == 1
    begin_writer(url, writer=0, num_writers=2)  # another writer's leftovers are not writer 0's to remove
    assert open_store(url).uncommitted == ["shard-00001-000000.zarr"]
    removed = begin_writer(url, writer=1, num_writers=2)
    assert [p.name for p in removed] == ["shard-00001-000000.zarr"]
    assert open_store(url).uncommitted == [] and "shard-00001-000000.zarr" not in shard_objects(
        root.listing()
    )


def test_verify_and_inspect_on_a_bucket(twins):
    remote, local, url = twins
    res = runner.invoke(app, ["inspect", url, "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout[res.stdout.index("{") :])
    assert info["path"] == url and info["shards"] == 3 and info["tokens"] == local.num_tokens
    assert info["bytes"] == sum(sh.bytes() for sh in remote.shards) + len(RemoteRoot(url).cat("store.json"))
    # what differs from the local twin: a digit or two of the crc and timestamps in the JSON objects
    assert abs(info["bytes"] - summarize_store(local.path)["bytes"]) < 64
    res = runner.invoke(app, ["verify", url])
    assert res.exit_code == 0 and "OK: 3 shards" in res.stdout, res.output
    rel = "shard-00000-000001.zarr/acts/layer_3/c/0/0"
    root = RemoteRoot(url)
    data = bytearray(root.cat(rel))
    data[100] ^= 0x40  # one activation bit changed in the bucket: same size, index intact
    root.put_bytes(rel, bytes(data))
    quick_check(open_store(url))  # the cheap checks read no activation
    with pytest.raises(StoreCorruptError, match="shard-00000-000001.zarr array acts/layer_3"):
        verify_store(url)
    res = runner.invoke(app, ["verify", url])
    assert res.exit_code == 2 and "crc32c" in res.output
    root.put_bytes(rel, bytes(data[:-8]))  # truncated: open_store's size checks name it
    with pytest.raises(StoreCorruptError, match="layer_3"):
        open_store(url).shards[1].raw_acts(3)


def test_a_missing_store_or_bucket_is_one_line(s3, s3_url):
    res = runner.invoke(app, ["inspect", s3_url])
    assert res.exit_code == 2 and "store not found" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["verify", "s3://no-such-bucket-fastsae/x"])
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_a_shard_harvested_again_under_its_name_is_not_read_from_the_old_cache(twins, tmp_path):
    remote, local, url = twins
    s = open_store(url)
    old = s.shards[0].raw_acts(1)[:]  # its blocks are in the cache now
    root = RemoteRoot(url)
    root.remove([k for k in root.listing() if k.startswith("shard-")])
    other = build_store(url, dtype="bfloat16", seed=1)  # the same names, other values
    np.testing.assert_array_equal(other.shards[0].raw_acts(1)[:], open_store(url).shards[0].raw_acts(1)[:])
    assert not np.array_equal(other.shards[0].raw_acts(1)[: len(old)], old)


def test_a_compressed_remote_store_reads_through_zarrs_fsspec_store(s3_url, tmp_path):
    remote = build_store(s3_url, dtype="bfloat16", compression="zstd", shards=1)
    local = build_store(tmp_path / "z", dtype="bfloat16", compression="zstd", shards=1)
    rows = np.array([0, 2, 3, 17, remote.num_tokens - 1])
    np.testing.assert_array_equal(remote.shards[0].raw_acts(3)[rows], local.shards[0].raw_acts(3)[rows])
    kw = dict(layer=1, batch_size=16, buffer_tokens=64, chunk_tokens=32, epochs=1, seed=3)
    assert torch.equal(
        torch.cat(list(ActivationReader(remote, **kw))), torch.cat(list(ActivationReader(local, **kw)))
    )
    assert verify_store(s3_url)["ok"]


def test_a_writer_may_finish_before_an_earlier_one_has_committed(s3_url):
    """Two writers of a store on S3: writer 1 commits and finishes while writer 0 has committed nothing yet. Its
    finish records its shards and reports the store incomplete (it does not trip over the missing sequences)."""
    from fastsae.store import ShardWriter, finish_writer

    for w in (0, 1):
        begin_writer(s3_url, writer=w, num_writers=2)
    with ShardWriter(s3_url, writer=1, seq=0, first_sequence=5, layers=[1], d_model=4, dtype="float32",
                     meta={"identity": {"test": 1}}) as sw:  # fmt: skip
        sw.append(token_ids=np.arange(3), token_types=np.full(3, 4, np.uint8),
                  acts={1: np.ones((3, 4), np.float32)}, source=(0, 5))  # fmt: skip
    done = finish_writer(s3_url, writer=1, num_writers=2)
    assert done.state == "incomplete", done
    record = json.loads(RemoteRoot(s3_url).cat("writer-00001.json"))
    assert record["state"] == "finished" and list(record["shards"]) == ["shard-00001-000000.zarr"]
