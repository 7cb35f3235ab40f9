"""`fastsae convert` (store/convert.py): a store written again in another dtype, shard for shard, with the
source's completeness; resumable; bad input refused in one line; local and S3 stores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from fastsae.cli import app
from fastsae.store import begin_writer, finish_writer, init_store, open_store, summarize_store, verify_store
from fastsae.store.convert import ConvertConfig, convert_store
from fastsae.store.dtypes import encode_fp8, fp8_shard_keys
from tests.test_store import META, _no_fsync, write_store  # noqa: F401  (autouse fixture)

pytest_plugins = ["tests._s3_server"]  # its fixtures: s3 (the server), s3_url (a fresh prefix)

runner = CliRunner()
SMALL = ("token_ids", "token_types", "offsets", "sources", "doc_starts", "doc_sources")


def harvested_like(root: Path, dtype: str = "float32", *, records: bool = True, seed: int = 0) -> Path:
    """Two writers' shards (writer 0: two, writer 1: one) with their records, and a skipped.jsonl."""
    meta = {**META, "layers": [2, 5], "d_model": 24, "dtype": dtype, "tokenizer": {"vocab_size": 50_000}}
    init_store(root, meta=meta | {"data": [f"chats-{seed}.jsonl"]})  # another seed: another source
    if records:
        for w in (0, 1):
            begin_writer(root, writer=w, num_writers=2)
    write_store(root, [[30, 20], [10, 7]], dtype=dtype, d_model=24, writer=0, seed=seed)
    write_store(root, [[12, 5, 9]], dtype=dtype, d_model=24, writer=1, first_sequence=4, seed=seed + 1)
    if records:
        for w in (0, 1):
            finish_writer(root, writer=w, num_writers=2)
    (root / "skipped.jsonl").write_text(json.dumps({"dataset": 0, "row": 3, "reason": "too_long"}) + "\n")
    return root


def convert(src, out, **kw):
    return convert_store(ConvertConfig(src=str(src), out=str(out), progress=False, **kw))


def assert_same_but_acts(a, b, layers=None) -> None:
    """Same shards (names, first_sequence, counts) and per-token arrays; ``b`` has ``layers`` (default a's)."""
    assert [s.name for s in a.shards] == [s.name for s in b.shards]
    assert b.layers == (layers or a.layers)
    for x, y in zip(a.shards, b.shards, strict=True):
        assert (x.first_sequence, x.num_sequences, x.num_tokens) == (
            y.first_sequence,
            y.num_sequences,
            y.num_tokens,
        )
        for name in SMALL:
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name), err_msg=f"{x.name} {name}")


def assert_same_acts(a, b) -> None:
    for x, y in zip(a.shards, b.shards, strict=True):
        for layer in a.layers:
            np.testing.assert_array_equal(np.asarray(x.raw_acts(layer)[:]), np.asarray(y.raw_acts(layer)[:]))
            if x.scales(layer) is not None:
                np.testing.assert_array_equal(np.asarray(x.scales(layer)), np.asarray(y.scales(layer)))


def test_float32_to_fp8_is_encode_fp8_of_the_rows_and_keeps_everything_else(tmp_path):
    src_path = harvested_like(tmp_path / "f32")
    res = convert(src_path, tmp_path / "fp8", dtype="fp8_e4m3")
    src, out = open_store(src_path), open_store(tmp_path / "fp8")
    assert (res.shards, res.kept, res.tokens) == (3, 0, src.num_tokens)
    assert out.dtype == "fp8_e4m3" and 0 < res.out_bytes < res.src_bytes
    assert_same_but_acts(src, out)
    for x, y in zip(src.shards, out.shards, strict=True):
        assert (y.attrs["fastsae"]["writer"], y.attrs["fastsae"]["seq"]) == (
            x.attrs["fastsae"]["writer"], x.attrs["fastsae"]["seq"],
        )  # fmt: skip
        for layer in src.layers:
            keys = fp8_shard_keys(x.first_sequence, x.offsets, layer)  # the writer's stochastic rounding
            q, scale = encode_fp8(np.asarray(x.raw_acts(layer)[:]), "fp8_e4m3", keys=keys)
            np.testing.assert_array_equal(np.asarray(y.raw_acts(layer)[:]), q)
            np.testing.assert_array_equal(np.asarray(y.scales(layer)), scale)
    drop = {"dtype", "converted_from", "created"}
    assert out.meta["identity"].pop("fp8_rounding") == "stochastic"  # as an fp8 harvest records it
    assert {k: v for k, v in out.meta.items() if k not in drop} == {
        k: v for k, v in src.meta.items() if k not in drop
    }
    assert out.meta["converted_from"] | {"store": None} == {
        "fingerprint": src.fingerprint, "dtype": "float32", "layers": [2, 5], "kept_layers": [2, 5], "store": None,
        "compression": "source", "fp8_rounding": "stochastic",
    }  # fmt: skip
    assert out.completeness.ok and out.completeness.message == src.completeness.message
    assert (tmp_path / "fp8" / "skipped.jsonl").read_bytes() == (src_path / "skipped.jsonl").read_bytes()
    assert verify_store(tmp_path / "fp8")["complete"] == "complete"
    assert summarize_store(tmp_path / "fp8")["warnings"] == summarize_store(src_path)["warnings"] == []
    assert sorted(p.name for p in (tmp_path / "fp8").glob("writer-*.json")) == [
        "writer-00000.json", "writer-00001.json",
    ]  # fmt: skip


def test_a_store_without_records_converts_to_one_without(tmp_path):
    src_path = harvested_like(tmp_path / "src", "bfloat16", records=False)
    convert(src_path, tmp_path / "out", dtype="fp8_e5m2")
    src, out = open_store(src_path), open_store(tmp_path / "out")
    assert src.completeness.state == out.completeness.state == "unknown"
    assert_same_but_acts(src, out)
    x = to_f32(src)
    y = to_f32(out)
    # e5m2 keeps 2 mantissa bits, rounded stochastically: within one step, 2^-2 of the row's max
    for layer in src.layers:
        err = np.abs(y[layer] - x[layer]).max(axis=1) / np.abs(x[layer]).max(axis=1)
        assert err.max() <= 2.0**-2


def to_f32(store) -> dict[int, np.ndarray]:
    return {
        L: np.concatenate([np.asarray(sh.acts(L), np.float32) for sh in store.shards]) for L in store.layers
    }


def test_the_command_layers_and_compression(tmp_path):
    src = harvested_like(tmp_path / "src", "bfloat16")
    args = ["convert", str(src), "--out", str(tmp_path / "out"), "--dtype", "fp8_e4m3", "--layers", "5",
            "--compression", "zstd", "--no-progress"]  # fmt: skip
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("converted 3 shards to fp8_e4m3") and "completeness: complete" in r.stdout
    out = open_store(tmp_path / "out")
    assert out.layers == [5] and out.meta["layers"] == [5] and out.meta["converted_from"]["layers"] == [2, 5]
    assert all(sh.attrs["fastsae"]["compression"] == "zstd" for sh in out.shards)
    assert_same_but_acts(open_store(src), out, layers=[5])
    r = runner.invoke(app, ["inspect", str(tmp_path / "out")])
    assert r.exit_code == 0 and "warning" not in r.stderr, r.output
    assert "complete:       complete" in r.stdout and "skipped:        1" in r.stdout
    r = runner.invoke(app, ["verify", str(tmp_path / "out")])
    assert r.exit_code == 0 and r.stdout.startswith("OK: 3 shards"), r.output
    r = runner.invoke(app, args)  # the same command again: nothing left to write
    assert r.exit_code == 0 and r.stdout.startswith("converted 0 shards, 3 kept"), r.output
    r = runner.invoke(app, [*args[:3], str(tmp_path / "near"), *args[4:], "--fp8-rounding", "nearest"])
    assert r.exit_code == 0, r.output
    near = open_store(tmp_path / "near")
    for a, b in zip(open_store(src).shards, near.shards, strict=True):  # round to nearest even, recorded
        assert b.attrs["fastsae"]["fp8_rounding"] == "nearest"
        q, _ = encode_fp8(np.asarray(a.acts(5), np.float32), "fp8_e4m3")
        np.testing.assert_array_equal(np.asarray(b.raw_acts(5)), q)
    # the same dtype is a conversion too when something else changes: here, the compression alone
    r = runner.invoke(app, ["convert", str(src), "--out", str(tmp_path / "zstd"), "--dtype", "bfloat16",
                            "--compression", "zstd", "--no-progress"])  # fmt: skip
    assert r.exit_code == 0, r.output
    zstd = open_store(tmp_path / "zstd")
    assert zstd.dtype == "bfloat16" and all(sh.attrs["fastsae"]["compression"] == "zstd" for sh in zstd.shards)
    for a, b in zip(open_store(src).shards, zstd.shards, strict=True):
        np.testing.assert_array_equal(np.asarray(a.raw_acts(2)), np.asarray(b.raw_acts(2)))


def test_an_interrupted_conversion_is_finished_by_the_same_command(tmp_path):
    src = harvested_like(tmp_path / "src", "bfloat16")
    convert(src, tmp_path / "whole", dtype="fp8_e4m3")
    convert(src, tmp_path / "cut", dtype="fp8_e4m3")
    cut = tmp_path / "cut"
    # what a kill while writing shard 00000-000001 leaves: the shard not committed, its partial directory,
    # and the writers' records as begin_writer left them
    shutil.move(cut / "shard-00000-000001.zarr", cut / ".partial-shard-00000-000001.zarr")
    for w in (0, 1):
        begin_writer(cut, writer=w, num_writers=2)
    assert open_store(cut, check_ranges=False).completeness.state == "incomplete"
    res = convert(src, cut, dtype="fp8_e4m3")
    assert (res.shards, res.kept) == (1, 2) and res.completeness == "complete"
    assert not list(cut.glob(".partial-*"))
    whole, done = open_store(tmp_path / "whole"), open_store(cut)
    assert_same_but_acts(whole, done)
    assert_same_acts(whole, done)
    assert whole.meta | {"created": 0} == done.meta | {"created": 0}
    assert verify_store(cut)["complete"] == "complete"


def one_error_line(r) -> str:
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.output, r.output
    return lines[0]


def test_bad_input_is_one_line_exit_2(tmp_path):
    src = harvested_like(tmp_path / "src", "bfloat16")
    out = tmp_path / "out"

    def run(*args, to=out):
        return one_error_line(
            runner.invoke(app, ["convert", *map(str, args), "--out", str(to), "--no-progress"])
        )

    assert str(tmp_path / "nope") in run(tmp_path / "nope")
    assert "--dtype 'int8'" in run(src, "--dtype", "int8")
    assert "bfloat16 already" in run(src, "--dtype", "bfloat16")
    assert "nothing would change" in run(src, "--dtype", "bfloat16", "--compression", "none")
    assert "layer 7 is not in SRC" in run(src, "--layers", "2,7")
    assert "--layers 'x'" in run(src, "--layers", "x")
    assert "--compression 'lz4'" in run(src, "--compression", "lz4")
    assert "SRC itself" in run(src, to=src) and "SRC itself" in run(src, to=src / "inner")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert "not a store" in run(src, to=tmp_path / "busy")
    assert runner.invoke(app, ["convert", str(src), "--out", str(out), "--no-progress"]).exit_code == 0
    line = run(src, "--dtype", "fp8_e5m2")
    assert "another conversion" in line and "dtype 'fp8_e4m3' != 'fp8_e5m2'" in line
    assert "layers [2, 5] != [2]" in run(src, "--layers", "2")
    plain = harvested_like(tmp_path / "plain", "float32", records=False)
    assert "not converted by fastsae convert" in run(src, to=plain)
    assert open_store(src).dtype == "bfloat16" and not list(src.glob(".partial-*"))


def test_a_different_source_is_refused(tmp_path):
    src = harvested_like(tmp_path / "src", "bfloat16")
    other = harvested_like(tmp_path / "other", "bfloat16", seed=7)
    convert(src, tmp_path / "out", dtype="fp8_e4m3")
    r = runner.invoke(app, ["convert", str(other), "--out", str(tmp_path / "out"), "--no-progress"])
    assert "source fingerprint" in one_error_line(r)


def test_a_bf16_harvest_converted_equals_an_fp8_harvest_of_the_same_model_in_bf16(tmp_path):
    from fastsae.harvest.config import HarvestConfig
    from fastsae.harvest.runner import run_harvest
    from tests._worlds import tiny_model
    from tests.test_harvest_store import write_chats

    model, chats = tiny_model(tmp_path), write_chats(tmp_path / "chats.jsonl", n=16)

    def harvest(name: str, dtype: str) -> Path:
        run_harvest(HarvestConfig(
            out=str(tmp_path / name), model=str(model), data=(str(chats),), layers=(1, 2), dtype=dtype,
            model_dtype="bfloat16", batch_tokens=512, shard_tokens=600, progress=False, device="cpu",
        ))  # fmt: skip
        return tmp_path / name

    bf16, fp8 = harvest("bf16", "bfloat16"), harvest("fp8", "fp8_e4m3")
    convert(bf16, tmp_path / "conv", dtype="fp8_e4m3")
    a, b = open_store(fp8), open_store(tmp_path / "conv")
    assert len(a.shards) > 1 and a.dtype == b.dtype == "fp8_e4m3"
    assert_same_but_acts(a, b)
    assert_same_acts(a, b)
    assert a.meta["identity"] == b.meta["identity"]  # a harvest --dtype fp8_e4m3 would resume into it
    assert a.completeness.message == b.completeness.message and b.completeness.ok
    assert (fp8 / "skipped.jsonl").read_bytes() == (tmp_path / "conv" / "skipped.jsonl").read_bytes()


def test_local_to_s3_and_back(tmp_path, s3_url):
    src = harvested_like(tmp_path / "src", "bfloat16")
    res = convert(src, s3_url, dtype="fp8_e4m3")
    assert (res.shards, res.completeness) == (3, "complete")
    local = tmp_path / "local"
    convert(src, local, dtype="fp8_e4m3")
    remote = open_store(s3_url)
    assert remote.completeness.ok and remote.completeness.message == open_store(src).completeness.message
    assert_same_but_acts(open_store(local), remote)
    assert_same_acts(open_store(local), remote)
    assert verify_store(s3_url)["complete"] == "complete"
    assert convert(src, s3_url, dtype="fp8_e4m3").kept == 3  # a rerun writes nothing
    r = runner.invoke(app, ["convert", str(src), "--out", s3_url, "--dtype", "fp8_e5m2", "--no-progress"])
    assert "another conversion" in one_error_line(r)
    back = tmp_path / "back"  # from the bucket: SRC may be a URL too
    convert(s3_url, back, dtype="float32")
    np.testing.assert_array_equal(to_f32(open_store(back))[2], to_f32(remote)[2])
    assert open_store(back).meta["converted_from"]["dtype"] == "fp8_e4m3"


def test_the_options_mirror_convert_config():
    """What tests/test_cli_options.py checks of the commands with a to_config module (store/cli.py also holds
    inspect and verify, so its function is convert_config)."""
    import typer

    from fastsae.store import cli

    cmd = typer.main.get_command(app).commands["convert"]
    assert {p.name for p in cmd.params} == set(cli.F.by_name)
    assert all(p.help == cli.F.help(p.name) for p in cmd.params)
    ctx = cmd.make_context("convert", ["SRC", "--out", "DST"])
    assert cli.convert_config(ctx.params) == ConvertConfig(src="SRC", out="DST")


def test_an_unfinished_source_converts_to_an_equally_unfinished_store(tmp_path, caplog):
    src = harvested_like(tmp_path / "src", "bfloat16", records=False)
    for w in (0, 1):
        begin_writer(src, writer=w, num_writers=2)
    finish_writer(src, writer=0, num_writers=2)  # writer 1's harvest still running, or stopped
    res = convert(src, tmp_path / "out", dtype="fp8_e4m3")
    a, b = open_store(src).completeness, open_store(tmp_path / "out").completeness
    assert res.completeness == a.state == b.state == "incomplete" and a.unfinished == b.unfinished == (1,)
    assert any("writer 1 of 2 has not finished" in r.getMessage() for r in caplog.records)
    finish_writer(src, writer=1, num_writers=2)  # its harvest ended with no more shards: the same source
    res = convert(src, tmp_path / "out", dtype="fp8_e4m3")
    assert (res.shards, res.kept, res.completeness) == (0, 3, "complete")
    assert open_store(tmp_path / "out").completeness.message == open_store(src).completeness.message


def test_a_source_that_lost_a_shard_is_refused(tmp_path):
    src = harvested_like(tmp_path / "src", "bfloat16")
    shutil.rmtree(src / "shard-00000-000001.zarr")
    r = runner.invoke(app, ["convert", str(src), "--out", str(tmp_path / "out"), "--no-progress"])
    assert "shard-00000-000001.zarr" in one_error_line(r) and not (tmp_path / "out").exists()
