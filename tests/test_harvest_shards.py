"""A shard's size is what --shard-tokens says (plus at most one sequence, never split), whatever the sort
window; a harvest stopped inside a window resumes to the same bytes as an uninterrupted run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fastsae.cli import app
from fastsae.harvest.runner import run_harvest
from fastsae.store import open_store
from tests.test_harvest_stops import data_digests
from tests.test_harvest_store import assert_same_store, cfg_for, env  # noqa: F401  (module fixture)

runner = CliRunner()


def check_shard_sizes(store_path: Path, shard_tokens: int) -> list[int]:
    """Every shard holds >= shard_tokens tokens, and fewer before its last sequence; the last may hold fewer."""
    shards = open_store(store_path).shards
    for i, shard in enumerate(shards):
        lengths = np.diff(shard.offsets)
        assert shard.num_tokens - lengths[-1] < shard_tokens, (shard.name, shard.num_tokens, lengths[-1])
        if i < len(shards) - 1:
            assert shard.num_tokens >= shard_tokens, (shard.name, shard.num_tokens)
    return [s.num_sequences for s in shards]


@pytest.mark.parametrize("packing", ["conversation", "block"])
def test_a_shard_holds_shard_tokens_plus_at_most_one_sequence(env, tmp_path, packing):  # noqa: F811
    out = tmp_path / "out"
    args = ["harvest", "--out", str(out), "--model", str(env["models"]["llama"]), "--data", str(env["chats"]),
            "--layers", "1", "--dtype", "float32", "--no-progress", "--device", "cpu", "--threads", "1",
            "--sort-window", "16", "--shard-tokens", "300", "--packing", packing, "--context-size", "64"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    counts = check_shard_sizes(out, 300)
    windows = -(-sum(counts) // 16)
    assert len(counts) > windows  # shards close inside windows, not at their ends
    if packing == "block":  # 64-token blocks: 5 make the first shard of >= 300 tokens
        assert counts[:-1] == [5] * (len(counts) - 1)


class _Stop(Exception):
    pass


def test_a_harvest_stopped_inside_a_window_resumes_to_the_same_bytes(env, tmp_path):  # noqa: F811
    cfg = cfg_for(env, tmp_path / "ref", shard_tokens=300, sort_window=16, threads=1)
    run_harvest(cfg)
    check_shard_sizes(Path(cfg.out), 300)
    stopped = dataclasses.replace(cfg, out=str(tmp_path / "stopped"))

    def stop_at(index: int) -> None:
        if index == 10:
            raise _Stop

    with pytest.raises(_Stop):
        run_harvest(stopped, on_sequence_stored=stop_at)
    committed = open_store(stopped.out).num_sequences
    assert 0 < committed <= 10 and committed % cfg.sort_window  # the stop cut the first window
    assert not [p for p in Path(stopped.out).iterdir() if p.name.startswith(".partial-")]
    result = run_harvest(stopped)
    assert result.resumed_from == committed and result.sequences == 24 - committed
    assert_same_store(cfg.out, stopped.out, exact=True)
    assert data_digests(Path(stopped.out)) == data_digests(Path(cfg.out)) != {}
