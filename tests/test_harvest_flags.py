"""`fastsae harvest` flags that make no sense: refused in one line before any work, or clamped with a warning;
an unsorted --layers is accepted, stored sorted, and the note says so."""

from __future__ import annotations

import logging

import pytest
import torch
from typer.testing import CliRunner

from fastsae.cli import app
from fastsae.harvest.config import MIN_BATCH_TOKENS, MIN_CONTEXT_SIZE
from fastsae.lm import available_cores
from fastsae.store import open_store
from tests._tiny_models import save_tiny_model, tiny_tokenizer
from tests.test_harvest_store import write_chats

runner = CliRunner()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("flags")
    return {
        "model": save_tiny_model("llama", root / "llama", tiny_tokenizer("llama")),
        "chats": write_chats(root / "chats.jsonl"),
    }


@pytest.fixture(autouse=True)
def restore():
    log = logging.getLogger("fastsae")
    handlers, level, threads = list(log.handlers), log.level, torch.get_num_threads()
    yield
    log.handlers[:], log.level = handlers, level
    torch.set_num_threads(threads)


def harvest(env, out, *extra: str):
    args = ["harvest", "--out", str(out), "--model", str(env["model"]), "--data", str(env["chats"]),
            "--layers", "1", "--dtype", "float32", "--no-progress", "--device", "cpu", "--limit", "4"]  # fmt: skip
    return runner.invoke(app, [*args, *extra])


SENSELESS = [
    (["--limit", "0"], ["--limit must be >= 1"]),
    (["--batch-tokens", "1"], [f"--batch-tokens must be 0 (auto) or >= {MIN_BATCH_TOKENS}", "--sort-window 1"]),
    (["--batch-tokens", str(MIN_BATCH_TOKENS - 1)], [f">= {MIN_BATCH_TOKENS}"]),
    (["--packing", "block", "--context-size", "1"], [f"--context-size must be >= {MIN_CONTEXT_SIZE}"]),
    (["--context-size", "0"], [f"--context-size must be >= {MIN_CONTEXT_SIZE}"]),
    (["--packing", "block", "--context-size", "256", "--batch-tokens", "128"], ["--context-size 256 in block mode"]),
    (["--device", "foo"], ["not a torch device"]),
    (["--device", "cuda"], ["no CUDA device"]),
]  # fmt: skip


@pytest.mark.parametrize("flags, words", SENSELESS, ids=[" ".join(flags) for flags, _ in SENSELESS])
def test_senseless_flags_are_one_line_and_write_nothing(env, tmp_path, flags, words):
    if flags == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "out"
    res = harvest(env, out, *flags)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.output, res.output
    for word in words:
        assert word in lines[0]
    assert not out.exists()


def test_the_floors_accept_their_own_value(env, tmp_path):
    res = harvest(env, tmp_path / "a", "--batch-tokens", str(MIN_BATCH_TOKENS), "--limit", "1")
    assert res.exit_code == 0, res.output
    res = harvest(env, tmp_path / "b", "--packing", "block", "--context-size", str(MIN_CONTEXT_SIZE))
    assert res.exit_code == 0, res.output
    assert open_store(tmp_path / "b").meta["context_size"] == MIN_CONTEXT_SIZE


def test_too_many_threads_are_clamped_with_a_warning(env, tmp_path):
    cores = available_cores()
    res = harvest(env, tmp_path / "out", "--threads", "1000")
    assert res.exit_code == 0, res.output
    assert f"warning: --threads 1000: this process may use {cores} cores; using {cores} threads" in res.stderr
    assert torch.get_num_threads() == cores
    res = harvest(env, tmp_path / "two", "--threads", "1")
    assert res.exit_code == 0 and "warning" not in res.stderr, res.output


def test_unsorted_layers_are_stored_sorted_and_the_note_says_so(env, tmp_path):
    res = harvest(env, tmp_path / "out", "--layers", "3,1")
    assert res.exit_code == 0, res.output
    assert "note: --layers 3,1: stored in ascending order, 1,3" in res.stderr
    store = open_store(tmp_path / "out")
    assert store.layers == [1, 3]
    assert (
        store.meta["layers"] == store.meta["config"]["layers"] == store.meta["identity"]["layers"] == [1, 3]
    )
    res = harvest(env, tmp_path / "out", "--layers", "1,3")  # the same store: resumes, no note
    assert res.exit_code == 0 and "note: --layers" not in res.stderr, res.output
