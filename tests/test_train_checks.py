"""`fastsae train` checks what it reads, through the real CLI: verify's cheap checks before the first step
(token types and ids in range, sizes, metadata), the store complete by its writers' records unless
--allow-incomplete, and a bad activation met while training named by its shard and sequence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fastsae.cli import app
from fastsae.store import begin_writer, finish_writer, init_store, open_store
from fastsae.store.format import act_shard_file, small_chunk_file
from tests.test_train_store import make_store

VOCAB = 1000  # make_store's token ids are below it


def complete_store(root: Path, **kw) -> Path:
    """make_store's store as harvest leaves it: store.json names the tokenizer's vocabulary size and the writer's
    record lists its shards (the store is complete)."""
    layers = kw.get("layers", (3,))
    init_store(root, meta={
        "model": "synthetic", "identity": {"model": "synthetic"}, "tokenizer": {"vocab_size": VOCAB},
        "layers": list(layers), "d_model": kw.get("d", 16), "dtype": kw.get("dtype", "float32"),
    })  # fmt: skip
    make_store(root, **kw)
    finish_writer(root, writer=0, num_writers=1)
    return root


def invoke(*args: str):
    return CliRunner().invoke(app, ["train", *args])


def base(store, out, *extra) -> list[str]:
    return ["--store", str(store), "--layer", "3", "--out", str(out), "--tokens", "640", "--batch-size", "64",
            "--no-progress", "--buffer-tokens", "512", "--chunk-tokens", "64", "--init-sample-tokens", "512",
            "--expansion", "2", *extra]  # fmt: skip


def one_line_error(result, *, code: int = 2) -> str:
    """The one `error: ...` line of a failed command (nothing else on stderr, no traceback)."""
    assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return complete_store(tmp_path_factory.mktemp("checks") / "store")


@pytest.fixture
def copy(store, tmp_path):
    dst = tmp_path / "store"
    shutil.copytree(store, dst)
    return dst


def shard_dirs(root: Path) -> list[Path]:
    return sorted(root.glob("shard-*.zarr"))


def test_a_complete_store_trains_without_a_warning(store, tmp_path):
    r = invoke(*base(store, tmp_path / "o"))
    assert r.exit_code == 0, r.stderr
    assert "warning" not in r.stderr, r.stderr


def test_a_token_type_out_of_range_is_refused_before_training(copy, tmp_path):
    types = np.memmap(small_chunk_file(shard_dirs(copy)[1], "token_types"), dtype=np.uint8, mode="r+")
    types[7] = 200
    types.flush()
    line = one_line_error(invoke(*base(copy, tmp_path / "o")))
    assert "token_types" in line and "invalid value 200 at token 7" in line and "shard-00000-000001" in line
    assert not (tmp_path / "o").exists()


def test_a_token_id_beyond_the_vocabulary_is_refused(copy, tmp_path):
    ids = np.memmap(small_chunk_file(shard_dirs(copy)[0], "token_ids"), dtype=np.int32, mode="r+")
    ids[3] = VOCAB + 5
    ids.flush()
    line = one_line_error(invoke(*base(copy, tmp_path / "o")))
    assert f"invalid id {VOCAB + 5} at token 3" in line and "vocabulary" in line
    assert not (tmp_path / "o").exists()


def test_token_ids_truncated_to_half_are_refused(copy, tmp_path):
    f = small_chunk_file(shard_dirs(copy)[0], "token_ids")
    with open(f, "r+b") as fh:
        fh.truncate(f.stat().st_size // 2)
    line = one_line_error(invoke(*base(copy, tmp_path / "o")))
    assert "token_ids" in line and "truncated" in line
    assert not (tmp_path / "o").exists()


def test_a_token_byte_changed_in_range_is_caught_by_its_checksum(copy, tmp_path):
    types = np.memmap(small_chunk_file(shard_dirs(copy)[0], "token_types"), dtype=np.uint8, mode="r+")
    types[11] = 1 if types[11] != 1 else 2  # a valid type: only the checksum tells
    types.flush()
    line = one_line_error(invoke(*base(copy, tmp_path / "o")))
    assert "token_types" in line and "crc32c" in line


def test_store_json_disagreeing_with_the_shards_is_refused(copy, tmp_path):
    meta = json.loads((copy / "store.json").read_text())
    meta["d_model"] = 32
    (copy / "store.json").write_text(json.dumps(meta))
    line = one_line_error(invoke(*base(copy, tmp_path / "o")))
    assert "store.json says d_model = 32" in line and "16" in line


# ---------------------------------------------------------------- completeness (issue 11, point 2)
def test_a_store_missing_its_last_shard_is_refused_naming_it(copy, tmp_path):
    last = shard_dirs(copy)[-1]
    shutil.rmtree(last)
    line = one_line_error(invoke(*base(copy, tmp_path / "o")))
    assert "incomplete" in line and last.name in line and "--allow-incomplete" in line
    assert not (tmp_path / "o").exists()


def test_allow_incomplete_trains_on_what_is_there_and_says_so(copy, tmp_path):
    shutil.rmtree(shard_dirs(copy)[-1])
    r = invoke(*base(copy, tmp_path / "o", "--allow-incomplete"))
    assert r.exit_code == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 1 and "incomplete" in warnings[0], r.stderr
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["complete"] and run["store"]["num_sequences"] == open_store(copy).num_sequences


def test_a_store_whose_writer_has_not_finished_is_refused(tmp_path):
    root = make_store(tmp_path / "store")
    begin_writer(root, writer=0, num_writers=1)  # a harvest that started (again) and has not ended
    line = one_line_error(invoke(*base(root, tmp_path / "o")))
    assert "writer 0 of 1 has not finished" in line and "--allow-incomplete" in line


def test_a_store_without_writer_records_trains_with_a_warning(tmp_path):
    root = make_store(tmp_path / "store")  # ShardWriter alone: no records, completeness unknown
    r = invoke(*base(root, tmp_path / "o"))
    assert r.exit_code == 0, r.stderr
    assert any(ln.startswith("warning: ") and "completeness unknown" in ln for ln in r.stderr.splitlines())


# ---------------------------------------------------------------- bad values met while training (point 3)
@pytest.mark.parametrize("value", [1e27, float("nan"), float("-inf")])
def test_a_bad_activation_is_named_by_its_shard_and_sequence(copy, tmp_path, value):
    shard = open_store(copy).shards[1]
    local = 3
    lo, hi = int(shard.offsets[local]), int(shard.offsets[local + 1])
    acts = np.memmap(act_shard_file(shard.path, 3), dtype=np.float32, mode="r+", shape=(shard.num_tokens, 16))
    acts[lo:hi, 5] = value  # a damaged sequence (flipped exponent bits); sizes and small arrays intact
    acts.flush()
    # a whole epoch: the damaged rows are met, in the init sample, the held-out set or a training batch
    line = one_line_error(invoke(*base(copy, tmp_path / "o", "--tokens", "6400")))
    sequence = shard.first_sequence + local
    assert f"shard {shard.name} row {lo}: sequence {sequence}, token 0 of {hi - lo}" in line, line
    assert "layer 3" in line and "fastsae verify" in line
    assert "non-finite loss" not in line
