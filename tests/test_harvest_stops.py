"""`fastsae harvest` stopped early: by SIGTERM (exit 143) or by a disk that fills up (one line naming the path
and the space a shard takes). Either way the open shard is dropped, no temp file is left, committed shards
stay, and the same command run again resumes to the bytes of an uninterrupted run."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastsae.cli import app
from fastsae.store import open_store
from tests._tiny_models import save_tiny_model, tiny_tokenizer
from tests.test_harvest_store import assert_same_store, write_chats

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("stops")
    return {
        "model": save_tiny_model("llama", root / "llama", tiny_tokenizer("llama")),
        "chats": write_chats(root / "chats.jsonl"),
        "many": write_chats(root / "many.jsonl", n=120, seed=2),
    }


@pytest.fixture(autouse=True)
def fastsae_logging():
    log = logging.getLogger("fastsae")
    handlers, level = list(log.handlers), log.level
    yield
    log.handlers[:], log.level = handlers, level


def args_for(env, out: Path, data: str = "chats") -> list[str]:
    return ["harvest", "--out", str(out), "--model", str(env["model"]), "--data", str(env[data]), "--layers", "1,2",
            "--dtype", "float32", "--no-progress", "--device", "cpu", "--threads", "1", "--batch-tokens", "512",
            "--sort-window", "4", "--shard-tokens", "300"]  # fmt: skip


def data_digests(store: Path) -> dict[str, str]:
    """sha256 of every file in the shards but their group zarr.json (it holds when and where it was written)."""
    out = {}
    for path in sorted(store.glob("shard-*.zarr/**/*")):
        rel = path.relative_to(store).as_posix()
        if path.is_file() and not (rel.count("/") == 1 and rel.endswith("/zarr.json")):
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def leftovers(out: Path) -> list[str]:
    """What a cleanly stopped writer must not leave: partial shards, temp files, its lock."""
    return sorted(
        p.name for p in out.iterdir() if p.name.startswith((".partial-", ".writer-")) or ".tmp" in p.name
    )


def assert_resumes_to_the_reference(env, out: Path, ref: Path, data: str = "chats") -> None:
    committed = open_store(out).num_sequences
    res = runner.invoke(app, args_for(env, out, data))  # the same command again
    assert res.exit_code == 0, res.output
    assert f"(resumed after {committed})" in res.stdout
    assert_same_store(ref, out, exact=True)
    assert data_digests(out) == data_digests(ref) != {}


_TERM_AT = """
import os, signal, sys
import fastsae.harvest.runner as runner
from fastsae.cli import main

run, at, sent = runner.run_harvest, int(sys.argv[1]), []

def term_at(index):  # SIGTERM to this process once this sequence is in the open shard
    if index >= at and not sent:
        sent.append(index)
        os.kill(os.getpid(), signal.SIGTERM)

runner.run_harvest = lambda cfg, **kw: run(cfg, on_sequence_stored=term_at, **kw)
sys.argv = ["fastsae", *sys.argv[2:]]
main()
"""


@pytest.mark.slow  # a subprocess that imports torch + transformers, then three harvests of 120 chats
def test_sigterm_drops_the_open_shard_exits_143_and_resumes_identically(env, tmp_path):
    ref = tmp_path / "ref"
    assert runner.invoke(app, args_for(env, ref, "many")).exit_code == 0
    out = tmp_path / "termed"
    proc = subprocess.run(
        [sys.executable, "-c", _TERM_AT, "13", *args_for(env, out, "many")],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    committed = open_store(out).num_sequences
    assert 0 < committed < 120
    assert f"warning: harvest of {out} stopped by SIGTERM with {committed} sequences committed" in proc.stderr
    assert not leftovers(out), leftovers(out)
    assert_resumes_to_the_reference(env, out, ref, "many")


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB tmpfs (needs root; skipped where mount is not permitted), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _disk_full_line(res, out: Path) -> str:
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: disk full while writing "), res.stderr
    assert "Traceback" not in res.output and str(out) in lines[0]
    return lines[0]


def test_a_full_disk_is_one_line_and_a_resume_is_identical(env, tmp_path, small_disk):
    ref = tmp_path / "ref"
    assert runner.invoke(app, args_for(env, ref, "many")).exit_code == 0
    out = small_disk / "store"
    line = _disk_full_line(runner.invoke(app, args_for(env, out, "many")), out)
    assert "MiB free now; each shard takes about" in line and "committed average" in line
    assert "run the same command again to resume" in line
    assert not leftovers(out), leftovers(out)
    assert 0 < open_store(out).num_sequences < 120  # committed data survives and reads back
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    assert_resumes_to_the_reference(env, out, ref, "many")


def test_a_disk_full_before_the_first_write_leaves_no_temp_file(env, small_disk):
    with open(small_disk / "filler", "wb") as f:  # fill the disk to its last byte
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    out = small_disk / "store"
    line = _disk_full_line(runner.invoke(app, args_for(env, out)), out)
    assert "each shard takes at least" in line and "bytes per token" in line
    assert not (out.exists() and leftovers(out)), leftovers(out)
