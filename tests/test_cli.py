"""The `fastsae` app: one error handler for every command, one logging setup (rank-aware), --version."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastsae.cli import app
from fastsae.errors import FastSAEError, InputError, ResourceError, UsageError, one_line
from tests.test_store import _no_fsync, write_store  # noqa: F401  (autouse fixture)

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def one_error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_every_project_error_derives_from_the_root_and_its_builtin():
    from fastsae.chats import NothingUsableError, RecordError, SourceError, SourceNotFoundError
    from fastsae.harvest.config import HarvestConfigError, HarvestError
    from fastsae.store.errors import StoreCorruptError, StoreError, StoreExistsError, StoreNotFoundError
    from fastsae.train.config import TrainConfigError, TrainError
    from fastsae.train.selection import LayerNotFoundError, ReaderError
    from fastsae.train.trainer import NonFiniteError

    builtin = {
        UsageError: ValueError, InputError: ValueError, ResourceError: OSError,
        StoreNotFoundError: FileNotFoundError, StoreCorruptError: ValueError, StoreExistsError: FileExistsError,
        HarvestConfigError: ValueError, SourceError: ValueError, SourceNotFoundError: FileNotFoundError,
        RecordError: ValueError, NothingUsableError: ValueError, TrainConfigError: ValueError,
        ReaderError: ValueError,
        LayerNotFoundError: ValueError, NonFiniteError: FloatingPointError,
    }  # fmt: skip
    for cls in (*builtin, StoreError, HarvestError, TrainError):
        assert issubclass(cls, FastSAEError), cls
    for cls, base in builtin.items():
        assert issubclass(cls, base), (cls, base)
    assert issubclass(HarvestConfigError, UsageError) and issubclass(TrainConfigError, UsageError)


def test_each_stage_error_is_one_line_exit_2(tmp_path):
    # store, train and harvest errors raised by the real commands, printed by the one handler
    assert "store not found" in one_error_line(runner.invoke(app, ["inspect", str(tmp_path / "nope")]))
    train = ["train", "--store", str(tmp_path), "--layer", "0", "--out", str(tmp_path / "o")]
    assert "--holdout" in one_error_line(runner.invoke(app, [*train, "--holdout", "1.5"]))
    harvest = ["harvest", "--out", str(tmp_path / "h"), "--data", str(tmp_path / "missing.jsonl")]
    assert "missing.jsonl" in one_error_line(runner.invoke(app, harvest))
    assert "--writer" in one_error_line(runner.invoke(app, [*harvest, "--writer", "3"]))
    assert not (tmp_path / "h").exists() and not (tmp_path / "o").exists()


def test_usage_errors_keep_clicks_form(tmp_path):
    r = runner.invoke(app, ["train", "--no-such-flag"])
    assert r.exit_code == 2 and "No such option" in r.stderr and "Traceback" not in r.output


def test_a_message_is_printed_on_one_line():
    assert one_line(UsageError("--foo: bad\n  value")) == "--foo: bad value"
    assert one_line(InputError()) == "InputError"


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"fastsae-instruct {metadata.version('fastsae-instruct')}"


@pytest.fixture
def store_with_leftover(tmp_path):
    write_store(tmp_path, [[5]], d_model=8)
    (tmp_path / ".partial-00000-000001.zarr").mkdir()  # what a crashed writer leaves: verify warns
    return tmp_path


@pytest.fixture
def fastsae_logging():
    log = logging.getLogger("fastsae")
    handlers, level = list(log.handlers), log.level
    yield
    log.handlers[:], log.level = handlers, level


def test_diagnostics_go_through_logging(store_with_leftover, fastsae_logging, monkeypatch):
    r = runner.invoke(app, ["verify", str(store_with_leftover)])
    assert r.exit_code == 0 and r.stdout.startswith("OK: 1 shards"), r.output
    lines = r.stderr.strip().splitlines()
    assert all(line.startswith("warning: ") for line in lines), lines
    assert any(
        line.startswith("warning: leftover partial shard .partial-00000-000001.zarr") for line in lines
    )
    quiet = runner.invoke(app, ["--log-level", "error", "verify", str(store_with_leftover)])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    monkeypatch.setenv("FASTSAE_LOG_LEVEL", "error")
    assert runner.invoke(app, ["verify", str(store_with_leftover)]).stderr == ""


def test_log_lines_name_the_rank_when_several_run(store_with_leftover, fastsae_logging, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    lines = runner.invoke(app, ["verify", str(store_with_leftover)]).stderr.strip().splitlines()
    assert lines and all(line.startswith("[rank 3] warning: ") for line in lines), lines
    monkeypatch.setenv("WORLD_SIZE", "1")
    lines = runner.invoke(app, ["verify", str(store_with_leftover)]).stderr.strip().splitlines()
    assert lines and all(line.startswith("warning: ") for line in lines), lines


def test_ctrl_c_exits_130_quietly(tmp_path):
    # a real train run far from its end, interrupted by SIGINT once it trains: 130, no traceback, no "Aborted!"
    from tests.test_train_store import make_store

    store, out = make_store(tmp_path / "store"), tmp_path / "out"
    args = ["train", "--store", str(store), "--layer", "3", "--out", str(out), "--expansion", "2", "--tokens", "1e9",
            "--batch-size", "64", "--buffer-tokens", "1024", "--chunk-tokens", "64", "--init-sample-tokens", "512",
            "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastsae", *args], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not (out / "run.json").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "Aborted" not in err and "error:" not in err


def test_installed_command_prints_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fastsae", "verify", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: store not found"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
