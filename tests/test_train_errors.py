"""Bad input to `fastsae train`: one clear line on stderr ("error: ..."), exit code 2, no traceback,
before any training (nothing written to --out). Through the real app, whose one handler prints it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastsae.cli import app
from tests.test_train_checks import complete_store

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return complete_store(tmp_path_factory.mktemp("errors") / "store")


def invoke(*args: str):
    return CliRunner().invoke(app, ["train", *args])


def base(store, out, *extra):
    return ["--store", str(store), "--layer", "3", "--out", str(out), "--tokens", "640", "--batch-size", "64",
            "--no-progress", "--buffer-tokens", "512", "--chunk-tokens", "64", *extra]  # fmt: skip


def assert_one_line_error(result, needle: str):
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_missing_store(tmp_path):
    assert_one_line_error(invoke(*base(tmp_path / "nope", tmp_path / "o")), "not found")
    assert not (tmp_path / "o").exists()


def test_empty_store_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(invoke(*base(tmp_path / "empty", tmp_path / "o")), "error")


def test_store_without_shards(tmp_path):
    from fastsae.store import init_store

    init_store(tmp_path / "s", meta={"layers": [3], "d_model": 16, "dtype": "float32"})
    assert_one_line_error(invoke(*base(tmp_path / "s", tmp_path / "o")), "no committed shards")


def test_damaged_store(store, tmp_path):
    bad = tmp_path / "damaged"
    shutil.copytree(store, bad)
    act_file = next(
        p for p in sorted(bad.rglob("*")) if p.is_file() and "layer_3" in str(p) and p.name != "zarr.json"
    )
    with open(act_file, "r+b") as f:
        f.truncate(act_file.stat().st_size // 2)
    assert_one_line_error(invoke(*base(bad, tmp_path / "o")), "truncated")
    assert not (tmp_path / "o").exists()


def test_missing_layer(store, tmp_path):
    args = base(store, tmp_path / "o")
    args[args.index("--layer") + 1] = "7"
    assert_one_line_error(invoke(*args), "layer 7 is not in the store")


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--expansion", "0"], "--expansion"),
        (["--expansion", "two"], "--expansion"),
        (["--arch", "relu"], "unknown --arch"),
        (["--sparsity-coef", "-0.1"], "--sparsity-coef"),
        (["--arch", "topk", "--sparsity-coef", "0.01"], "makes no sense for topk"),
        (["--arch", "topk", "--k", "1000"], "k must be <= d_sae"),
        (["--lr", "0"], "--lr"),
        (["--token-types", "robot"], "unknown token type"),
    ],
)
def test_nonsense_settings(store, tmp_path, extra, needle):
    assert_one_line_error(invoke(*base(store, tmp_path / "o", *extra)), needle)
    assert not (tmp_path / "o").exists()


def test_output_folder_holding_another_config(store, tmp_path):
    out = tmp_path / "o"
    first = invoke(*base(store, out, "--expansion", "2", "--eval-every", "0"))
    assert first.exit_code == 0, first.stderr
    assert_one_line_error(invoke(*base(store, out, "--expansion", "4")), "holds another config")


def test_output_folder_with_foreign_files(store, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert_one_line_error(invoke(*base(store, out)), "not empty")


def test_real_cli_exit_code_and_stderr(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fastsae", "train", *base(tmp_path / "nope", tmp_path / "o")],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr
