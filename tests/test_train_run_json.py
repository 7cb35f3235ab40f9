"""Where a training run records its store: run.json and each SAE's fastsae.json name the store the user gave,
an s3:// URL for a store on object storage (a real S3-compatible server on loopback, tests/_s3_server.py),
never the local mirror the trainer reads it through; the fingerprint is the store's either way."""

from __future__ import annotations

import json

from fastsae.store import open_store
from fastsae.store.remote import mirror_dir
from fastsae.train.config import TrainConfig
from fastsae.train.trainer import train_saes
from tests._reader_stores import build_store

pytest_plugins = ["tests._s3_server"]  # its fixtures: s3 (the server), s3_url (a fresh prefix)


def _train(store: str, out) -> list:
    return train_saes(
        TrainConfig(
            store=store,
            layer=3,
            out=str(out),
            arch=("topk",),
            k=(4,),
            expansion=(2,),
            batch_size=32,
            tokens=32 * 8,
            lr=(1e-3,),
            buffer_tokens=128,
            chunk_tokens=16,
            holdout=0.2,
            log_every=4,
            eval_every=8,
            checkpoint_every=1000,
            progress=False,
            init_sample_tokens=64,
            device="cpu",
        )  # fmt: skip
    )


def test_a_run_from_s3_records_the_url_not_the_mirror(s3_url, tmp_path):
    store = build_store(s3_url, dtype="bfloat16")
    assert store.url == s3_url and mirror_dir(s3_url) in store.path.parents  # read through a local mirror
    (sae,) = _train(s3_url, tmp_path / "run")
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    extra = json.loads((sae / "fastsae.json").read_text())["extra"]
    for record in (run["store"], extra["store"]):
        assert record["path"] == s3_url
        assert record["fingerprint"] == open_store(s3_url).fingerprint
    assert run["config"]["store"] == s3_url and run["complete"]
    for text in ((tmp_path / "run" / "run.json").read_text(), (sae / "fastsae.json").read_text()):
        assert str(mirror_dir(s3_url)) not in text
    assert _train(s3_url, tmp_path / "run") == [sae]  # the same command again: complete, by fingerprint


def test_a_run_from_a_local_store_records_its_resolved_path(tmp_path, monkeypatch):
    build_store(tmp_path / "store", dtype="bfloat16")
    monkeypatch.chdir(tmp_path)
    (sae,) = _train("store", tmp_path / "run")
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["store"]["path"] == str((tmp_path / "store").resolve())
    assert run["store"]["fingerprint"] == open_store(tmp_path / "store").fingerprint
    assert json.loads((sae / "fastsae.json").read_text())["extra"]["store"] == run["store"]


def test_eval_and_features_find_a_store_on_s3_from_the_url_recorded(s3_url, tmp_path):
    """The analysis commands open the SAE's store from what train recorded: the s3:// URL, not a local folder."""
    from fastsae.interp.eval_config import EvalConfig
    from fastsae.interp.evaluate import load_entries
    from fastsae.interp.targets import read_target, recorded_store, same_location

    build_store(s3_url, dtype="bfloat16")
    (sae,) = _train(s3_url, tmp_path / "run")
    assert recorded_store(read_target(sae).store_identity) == s3_url
    assert same_location(s3_url + "/", s3_url) and not same_location(s3_url, str(tmp_path))
    (entry,) = load_entries(EvalConfig(sae=(str(sae),), out=str(tmp_path / "eval")))
    assert entry.store is not None and entry.store.url == s3_url
    assert entry.holdout is not None and len(entry.holdout) > 0
    assert recorded_store({"path": str(tmp_path / "gone")}) is None
