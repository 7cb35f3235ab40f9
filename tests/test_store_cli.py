"""store.cli inspect/verify through typer's CliRunner and the real app (its one handler prints errors)."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from fastsae.cli import app
from tests.test_store import META, _no_fsync, write_store  # noqa: F401  (autouse fixture)

runner = CliRunner()


@pytest.fixture
def store(tmp_path):
    write_store(tmp_path, [[30, 20], [10]], dtype="bfloat16", d_model=32)
    (tmp_path / "skipped.jsonl").write_text(
        json.dumps({"dataset": 0, "row": 3, "reason": "empty_messages"}) + "\n"
        + json.dumps({"dataset": 0, "row": 9, "reason": "too_long"}) + "\n"
    )  # fmt: skip
    return tmp_path


def test_inspect_text(store):
    r = runner.invoke(app, ["inspect", str(store)])
    assert r.exit_code == 0, r.output
    out = r.stdout
    for needle in ("synthetic/tiny", "layers:         2, 5", "d_model:        32", "bfloat16", "conversations:  3",
                   "tokens:         60", "bytes/token", "ASSISTANT", "demo", "skipped:        2"):  # fmt: skip
        assert needle in out, (needle, out)


def test_inspect_json(store):
    r = runner.invoke(app, ["inspect", str(store), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["tokens"] == 60 and info["sequences"] == 3 and info["layers"] == [2, 5]
    assert sum(info["token_types"].values()) == 60
    assert info["skipped"] == {"empty_messages": 1, "too_long": 1}
    assert info["bytes_per_token"] == pytest.approx(info["bytes"] / 60)
    assert info["overhead_ratio"] == pytest.approx(info["bytes_per_token"] / (2 * 32 * 2))


def test_verify_ok_and_damaged(store):
    r = runner.invoke(app, ["verify", str(store)])
    assert r.exit_code == 0 and r.stdout.startswith("OK: 2 shards"), r.output
    assert runner.invoke(app, ["verify", str(store), "--quick"]).exit_code == 0
    f = store / "shard-00000-000000.zarr" / "acts" / "layer_5" / "c" / "0" / "0"
    os.truncate(f, 10)
    r = runner.invoke(app, ["verify", str(store)])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: shard shard-00000-000000.zarr array acts/layer_5"
    ), lines
    assert "Traceback" not in r.output


def test_missing_store(tmp_path):
    for cmd in ("inspect", "verify"):
        r = runner.invoke(app, [cmd, str(tmp_path / "nope")])
        assert r.exit_code == 2 and r.stderr.startswith("error: store not found"), r.output
        assert len(r.stderr.strip().splitlines()) == 1


def test_inspect_harvest_style_meta(tmp_path):
    from fastsae.store import init_store

    meta = {
        "identity": META["identity"],
        "model": {"name": "HuggingFaceTB/SmolLM2-135M-Instruct", "revision": None, "commit": "abc123"},
        "data": [{"spec": "demo", "kind": "jsonl", "path": "/d/demo.jsonl", "sha256": "f" * 64}],
    }
    init_store(tmp_path, meta=meta)
    write_store(tmp_path, [[4]], d_model=8)
    r = runner.invoke(app, ["inspect", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "model:          HuggingFaceTB/SmolLM2-135M-Instruct @ abc123" in r.stdout
    assert "[0] demo" in r.stdout and "sha256=ffffffffffffffff" in r.stdout
