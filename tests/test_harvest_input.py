"""`fastsae harvest` on input that yields nothing: one line saying what was found, exit 2, nothing written;
content sniffing (gzip bytes by their magic, a JSON array in a .jsonl file) reads what the name hides."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fastsae.cli import app
from fastsae.store import open_store
from tests._tiny_models import save_tiny_model, tiny_tokenizer
from tests.test_harvest_store import write_chats

runner = CliRunner()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("input")
    chats = write_chats(root / "chats.jsonl")
    return {
        "root": root,
        "model": save_tiny_model("llama", root / "llama", tiny_tokenizer("llama")),
        "chats": chats,
        "objects": [
            json.loads(line) for line in chats.read_text().splitlines() if line.startswith('{"messages": [{')
        ],
    }


@pytest.fixture(autouse=True)
def fastsae_logging():
    log = logging.getLogger("fastsae")
    handlers, level = list(log.handlers), log.level
    yield
    log.handlers[:], log.level = handlers, level


def harvest(env, out: Path, *data: Path, extra: tuple[str, ...] = ()):
    args = ["harvest", "--out", str(out), "--model", str(env["model"]), "--layers", "1,2", "--dtype", "float32",
            "--no-progress", "--device", "cpu", "--threads", "1", "--batch-tokens", "512", "--sort-window", "8"]  # fmt: skip
    for d in data:
        args += ["--data", str(d)]
    return runner.invoke(app, [*args, *extra])


def one_error(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def _parquet(path: Path, table: dict) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(table), path)
    return path


def _bad_inputs(env, d: Path) -> dict[str, tuple[Path, list[str]]]:
    """name -> (file, words its one error line must hold)"""
    objs = env["objects"]
    (d / "arrays.jsonl").write_text("[1, 2]\n" * 37)  # JSON lines that are arrays, not objects
    (d / "strings.jsonl").write_text('"just a string"\n' * 5)
    (d / "string_messages.jsonl").write_text(
        "".join(json.dumps({"messages": json.dumps(o["messages"])}) + "\n" for o in objs)
    )
    (d / "empty.jsonl").write_bytes(b"")
    (d / "binary.jsonl").write_bytes(bytes(range(256)) * 4)
    (d / "five.parquet").write_bytes(b"hello")
    return {
        "arrays": (d / "arrays.jsonl", ["arrays.jsonl: 0 usable records of 37 (37 not_an_object", "one JSON object per line", '"messages"']),
        "strings": (d / "strings.jsonl", ["0 usable records of 5 (5 not_an_object"]),
        "string messages": (d / "string_messages.jsonl", [f"0 usable records of {len(objs)} ({len(objs)} bad_messages", "'messages' is a str, not a list"]),
        "empty": (d / "empty.jsonl", ["empty.jsonl: the file holds no records (it is empty or blank)"]),
        "binary": (d / "binary.jsonl", ["0 usable records of", "undecodable"]),
        "wrong columns": (_parquet(d / "cols.parquet", {"foo": [1, 2, 3], "bar": ["a", "b", "c"]}), ["0 usable records of 3 (3 unknown_schema", "its columns are foo, bar"]),
        "five bytes": (d / "five.parquet", ["five.parquet: not a Parquet file"]),
    }  # fmt: skip


def test_input_that_yields_nothing_is_one_line_and_writes_nothing(env, tmp_path):
    for name, (path, words) in _bad_inputs(env, tmp_path).items():
        out = tmp_path / f"out-{path.stem}"
        line = one_error(harvest(env, out, path))
        for word in words:
            assert word in line, (name, line)
        assert not out.exists(), f"{name}: nothing may be written, found {sorted(out.iterdir())}"


def test_input_that_yields_nothing_leaves_an_existing_store_untouched(env, tmp_path):
    out = tmp_path / "store"
    assert harvest(env, out, env["chats"], extra=("--limit", "4")).exit_code == 0
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    (tmp_path / "empty.jsonl").write_bytes(b"")
    assert "nothing was harvested" in one_error(
        harvest(env, out, tmp_path / "empty.jsonl", extra=("--limit", "4"))
    )
    after = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before
    assert open_store(out).num_sequences == 4


def _same_sequences(a: Path, b: Path) -> None:
    sa, sb = open_store(a), open_store(b)
    assert sa.num_sequences == sb.num_sequences > 0
    for i in range(sa.num_sequences):
        x, y = sa.sequence(i), sb.sequence(i)
        np.testing.assert_array_equal(x.token_ids, y.token_ids)
        np.testing.assert_array_equal(x.acts(2), y.acts(2))


def test_gzip_bytes_named_jsonl_are_read_through_gzip(env, tmp_path):
    named = tmp_path / "chats.jsonl"  # gzip bytes, plain name
    named.write_bytes(gzip.compress(env["chats"].read_bytes()))
    res = harvest(env, tmp_path / "gz", named)
    assert res.exit_code == 0, res.output
    assert "holds gzip-compressed bytes: read through gzip" in res.stderr
    assert harvest(env, tmp_path / "plain", env["chats"]).exit_code == 0
    _same_sequences(tmp_path / "gz", tmp_path / "plain")
    assert open_store(tmp_path / "gz").meta["data"][0]["compressed"] is True


def test_a_json_array_in_a_jsonl_file_is_read_as_a_list(env, tmp_path):
    array = json.dumps(env["objects"], indent=1)  # pretty-printed over many lines
    (tmp_path / "array.jsonl").write_text(array)
    (tmp_path / "array.json").write_text(array)
    res = harvest(env, tmp_path / "from-jsonl", tmp_path / "array.jsonl")
    assert res.exit_code == 0, res.output
    assert "is one JSON array, not JSON lines: read as a list" in res.stderr
    assert harvest(env, tmp_path / "from-json", tmp_path / "array.json").exit_code == 0
    _same_sequences(tmp_path / "from-jsonl", tmp_path / "from-json")
    assert open_store(tmp_path / "from-jsonl").num_sequences == len(env["objects"])


def test_a_gzip_stream_that_breaks_off_is_one_line(env, tmp_path):
    data = gzip.compress(env["chats"].read_bytes() * 4)
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    line = one_error(harvest(env, tmp_path / "out", tmp_path / "cut.jsonl.gz"))
    assert "cut.jsonl.gz: cannot be read to the end" in line


def test_a_spec_that_yields_nothing_beside_a_good_one_is_a_warning(env, tmp_path):
    (tmp_path / "strings.jsonl").write_text('"just a string"\n' * 3)
    res = harvest(env, tmp_path / "out", env["chats"], tmp_path / "strings.jsonl")
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning: ")]
    assert any("strings.jsonl: 0 usable records of 3 (3 not_an_object" in w for w in warnings), res.stderr
