"""Harvest to S3 and train from S3 (moto on loopback, tests/_s3_server.py), tiny Llama: the bucket holds the
same data as a local harvest, an SAE trained from the bucket equals one trained from the local copy, and a
harvest killed with SIGKILL mid-shard resumes against the bucket to the same store."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from fastsae.harvest.runner import run_harvest
from fastsae.store import open_store, verify_store
from fastsae.store.remote import RemoteRoot, shard_objects
from tests.test_harvest_store import ROOT, assert_same_store, cfg_for, env  # noqa: F401

pytest_plugins = ["tests._s3_server"]


@pytest.fixture(scope="module")
def harvested(env, s3, tmp_path_factory):  # noqa: F811
    """One harvest to a local directory and the same one to a bucket."""
    root = tmp_path_factory.mktemp("remote-harvest")
    url = f"s3://{s3['bucket']}/harvest"
    local = cfg_for(env, root / "local", dtype="bfloat16", shard_tokens=600)
    run_harvest(local)
    result = run_harvest(dataclasses.replace(local, out=url))
    return local, url, result


def test_harvest_to_s3_equals_a_local_harvest(harvested):
    local, url, result = harvested
    assert result.sequences == 24 and result.shards >= 3
    assert_same_store(local.out, url, exact=True)  # ids, types, offsets, sources, activations: bit for bit
    s = open_store(url, allow_incomplete=False)
    assert s.completeness.state == "complete" and s.uncommitted == []
    objects = RemoteRoot(url).listing()
    assert "skipped.jsonl" in objects and not any(".partial" in k or k.endswith(".lock") for k in objects)
    assert verify_store(url)["complete"] == "complete"


def _train(store: str, out, **kw):
    from fastsae.train.config import TrainConfig
    from fastsae.train.trainer import train_saes

    (sae,) = train_saes(
        TrainConfig(
            store=store,
            layer=1,
            out=str(out),
            arch=("topk",),
            k=(8,),
            expansion=(2,),
            batch_size=32,
            tokens=32 * 12,
            lr=(1e-3,),
            buffer_tokens=256,
            chunk_tokens=32,
            holdout=0.2,
            log_every=4,
            eval_every=6,
            checkpoint_every=1000,
            progress=False,
            init_sample_tokens=128,
        )  # fmt: skip
    )
    return {k: v for f in sorted(sae.glob("*.safetensors")) for k, v in load_file(f).items()}


def test_training_from_s3_gives_the_sae_a_local_copy_gives(harvested, tmp_path):
    local, url, _ = harvested
    a, b = _train(local.out, tmp_path / "from-local"), _train(url, tmp_path / "from-s3")
    # bitwise: the reader hands the same rows in the same order (only where its bytes come from differs), and
    # the training steps on one CPU thread pool are deterministic
    assert a.keys() == b.keys() and a
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


_KILL_SCRIPT = """
import json, os, signal, sys
from fastsae.harvest.config import HarvestConfig
from fastsae.harvest.runner import run_harvest

def kill_at(index):  # SIGKILL right after storing this sequence: in the middle of a shard
    if index >= int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)

run_harvest(HarvestConfig(**json.loads(sys.argv[1])), on_sequence_stored=kill_at)
"""


@pytest.mark.slow  # a subprocess that imports torch + transformers
def test_a_harvest_killed_mid_shard_resumes_against_s3(harvested, s3):
    local, _, _ = harvested
    url = f"s3://{s3['bucket']}/killed"
    cfg = dataclasses.replace(local, out=url)
    kw = {**dataclasses.asdict(cfg), "data": list(cfg.data), "layers": list(cfg.layers)}
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_SCRIPT, json.dumps(kw), "13"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == -9, proc.stderr[-2000:]
    killed = open_store(url)
    assert 0 < len(killed.shards) and killed.num_sequences <= 13
    assert killed.completeness.state == "incomplete"  # writer 0 is recorded as running
    # the harvest a kill leaves between a shard's data objects and its manifest: objects without one
    root = RemoteRoot(url)
    first = killed.shards[0].name
    stale = f"shard-00000-{len(killed.shards) + 5:06d}.zarr"
    for rel in shard_objects(root.listing())[first]:
        if rel != "zarr.json":
            root.put_bytes(f"{stale}/{rel}", root.cat(f"{first}/{rel}"))
    assert open_store(url).uncommitted == [stale]
    result = run_harvest(cfg)  # the same command again
    assert result.resumed_from == killed.num_sequences
    assert_same_store(local.out, url, exact=True)
    done = open_store(url, allow_incomplete=False)
    assert done.completeness.state == "complete" and done.uncommitted == []
