"""Harvest end to end on tiny Llama/Qwen2 models: batch == batch-1, block mode, resume after SIGKILL,
bad arguments, the CLI command and its flags."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fastsae.harvest.config import HarvestConfig, HarvestConfigError
from fastsae.harvest.runner import run_harvest
from fastsae.lm import hidden_states_index
from fastsae.store import StoreMismatchError, open_store, to_float32
from tests._tiny_models import save_tiny_model, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]
WORDS = "the quick brown fox jumps over lazy dog hello how can I help you today paris river sea".split()


def _text(rng, n):
    return " ".join(rng.choice(WORDS, size=n))


def write_chats(path: Path, n: int = 24, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        msgs = [{"role": "system", "content": _text(rng, 5)}] if i % 5 == 0 else []
        for _ in range(int(rng.integers(1, 4))):
            msgs.append({"role": "user", "content": _text(rng, int(rng.integers(2, 30)))})
            msgs.append({"role": "assistant", "content": _text(rng, int(rng.integers(2, 50)))})
        lines.append(json.dumps({"messages": msgs}))
        if i == 7:
            lines.append("{not json")
        if i == 11:
            lines.append(json.dumps({"messages": []}))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_text(path: Path, n: int = 12, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    path.write_text(
        "\n".join(json.dumps({"text": _text(rng, int(rng.integers(3, 60)))}) for _ in range(n)) + "\n"
    )
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("harvest")
    models = {kind: save_tiny_model(kind, root / kind, tiny_tokenizer(kind)) for kind in ("llama", "qwen2")}
    return {
        "root": root,
        "models": models,
        "chats": write_chats(root / "chats.jsonl"),
        "text": write_text(root / "docs.jsonl"),
    }


def cfg_for(env, out, kind="llama", **kw):
    base = dict(
        out=str(out), model=str(env["models"][kind]), data=(str(env["chats"]),), layers=(1, 2),
        dtype="float32", batch_tokens=512, sort_window=16, shard_tokens=1500, progress=False, device="cpu",
    )  # fmt: skip
    base.update(kw)
    return HarvestConfig(**base)


def assert_same_store(a: Path, b: Path, *, exact: bool = True) -> None:
    sa, sb = open_store(a), open_store(b)
    assert sa.meta["identity"] == sb.meta["identity"]
    assert [s.name for s in sa.shards] == [s.name for s in sb.shards]
    for x, y in zip(sa.shards, sb.shards, strict=True):
        assert (x.first_sequence, x.num_sequences) == (y.first_sequence, y.num_sequences)
        for name in ("token_ids", "token_types", "offsets", "sources", "doc_starts", "doc_sources"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name), err_msg=f"{x.name} {name}")
        for layer in sa.layers:
            ra, rb = (
                np.asarray(x.raw_acts(layer)[0 : x.num_tokens]),
                np.asarray(y.raw_acts(layer)[0 : y.num_tokens]),
            )
            if exact:
                np.testing.assert_array_equal(ra, rb, err_msg=f"{x.name} layer {layer}")
            else:
                fa, fb = to_float32(ra, sa.dtype), to_float32(rb, sb.dtype)
                np.testing.assert_allclose(fa, fb, rtol=2**-7, atol=1e-4)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_batched_harvest_equals_batch_one(env, tmp_path, kind):
    from transformers import AutoModelForCausalLM

    from fastsae.lm.chat import tokenize_conversation

    cfg = cfg_for(env, tmp_path / "s", kind)
    result = run_harvest(cfg)
    assert result.skipped == {"invalid_json": 1, "empty_messages": 1}
    store = open_store(cfg.out)
    assert store.num_sequences == 24 and len(store.shards) > 1 and store.dtype == "float32"
    assert (Path(cfg.out) / "skipped.jsonl").read_text().count("\n") == 2
    model = AutoModelForCausalLM.from_pretrained(env["models"][kind], dtype=torch.float32).eval()
    tok = tiny_tokenizer(kind)
    chats = [
        json.loads(line)
        for line in env["chats"].read_text().splitlines()
        if line.startswith('{"messages": [{')
    ]
    worst = 0.0
    for i in range(store.num_sequences):
        seq = store.sequence(i)
        ids, types = tokenize_conversation(tok, chats[i]["messages"], max_tokens=cfg.max_tokens)
        np.testing.assert_array_equal(seq.token_ids, ids)  # input order, not the length-sorted order
        np.testing.assert_array_equal(seq.token_types, types)
        with torch.inference_mode():
            hidden = model(
                torch.from_numpy(ids[None].astype(np.int64)), output_hidden_states=True
            ).hidden_states
        for layer in cfg.layers:
            worst = max(
                worst, float(np.abs(seq.acts(layer) - hidden[hidden_states_index(layer)][0].numpy()).max())
            )
    assert worst <= 1e-4
    sources = np.concatenate([s.sources for s in store.shards])
    assert (np.diff(sources[:, 1]) > 0).all()


def test_block_mode_text_and_chats(env, tmp_path):
    from fastsae.lm.chat import tokenize_conversation, tokenize_text

    tok = tiny_tokenizer("llama")
    for data, kind in ((env["text"], "text"), (env["chats"], "chats")):
        out = tmp_path / kind
        cfg = cfg_for(env, out, packing="block", context_size=64, data=(str(data),))
        run_harvest(cfg)
        store = open_store(out)
        seqs = [store.sequence(i) for i in range(store.num_sequences)]
        assert all(len(s.token_ids) == 64 for s in seqs[:-1]) and 0 < len(seqs[-1].token_ids) <= 64
        if kind == "text":
            docs = [tokenize_text(tok, json.loads(line)["text"]) for line in data.read_text().splitlines()]
            assert {int(t) for s in seqs for t in np.unique(s.token_types)} <= {0, 6}  # SPECIAL, TEXT
        else:
            rows = [
                json.loads(line)
                for line in data.read_text().splitlines()
                if line.startswith('{"messages": [{')
            ]
            docs = [tokenize_conversation(tok, r["messages"], max_tokens=cfg.max_tokens) for r in rows]
        np.testing.assert_array_equal(
            np.concatenate([s.token_ids for s in seqs]), np.concatenate([d[0] for d in docs])
        )
        starts = [i * 64 + int(p) for i, s in enumerate(seqs) for p in s.doc_starts]
        assert starts == np.cumsum([0] + [len(d[0]) for d in docs[:-1]]).tolist()
        assert store.meta["packing"] == "block" and store.meta["context_size"] == 64


_KILL_SCRIPT = """
import json, os, signal, sys
from fastsae.harvest.config import HarvestConfig
from fastsae.harvest.runner import run_harvest

def kill_at(index):  # SIGKILL right after storing this sequence: a crash in the middle of a shard
    if index >= int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)

run_harvest(HarvestConfig(**json.loads(sys.argv[1])), on_sequence_stored=kill_at)
"""


@pytest.mark.slow  # a subprocess that imports torch + transformers, then 4 harvests
def test_resume_after_sigkill_equals_uninterrupted_run(env, tmp_path):
    ref = cfg_for(env, tmp_path / "ref", dtype="bfloat16", shard_tokens=600, sort_window=4)
    run_harvest(ref)
    n_shards = len(open_store(ref.out).shards)
    assert n_shards >= 4
    killed = dataclasses.replace(ref, out=str(tmp_path / "killed"))
    kw = {**dataclasses.asdict(killed), "data": list(killed.data), "layers": list(killed.layers)}
    proc_env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_SCRIPT, json.dumps(kw), "13"],
        env=proc_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    partial = open_store(killed.out)
    assert 0 < len(partial.shards) < n_shards and partial.num_sequences <= 13
    assert any(p.name.startswith(".partial-") for p in Path(killed.out).iterdir())
    result = run_harvest(killed)  # the same command again
    assert result.resumed_from == partial.num_sequences
    assert not any(p.name.startswith(".partial-") for p in Path(killed.out).iterdir())
    assert_same_store(ref.out, killed.out, exact=True)
    again = run_harvest(killed)  # a finished store is a no-op
    assert again.sequences == 0 and again.resumed_from == 24
    # lose the last two shards (as if killed before they were committed) and resume with another batch
    # size, which is not part of the identity: same sequences, values equal up to bf16 rounding
    for shard in open_store(killed.out).shards[-2:]:
        shutil.rmtree(shard.path)
    result = run_harvest(dataclasses.replace(killed, batch_tokens=128))
    assert result.sequences > 0
    assert_same_store(ref.out, killed.out, exact=False)


def test_bad_arguments_are_one_line_errors(env, tmp_path):
    with pytest.raises(HarvestConfigError, match="4 decoder blocks"):
        run_harvest(cfg_for(env, tmp_path / "a", layers=(1, 4)))
    with pytest.raises(HarvestConfigError, match="no such file"):
        run_harvest(cfg_for(env, tmp_path / "b", data=(str(tmp_path / "missing.jsonl"),)))
    notemplate = tmp_path / "notemplate"
    shutil.copytree(env["models"]["llama"], notemplate)
    for f in notemplate.glob("*"):
        if f.name == "chat_template.jinja":
            f.unlink()
        elif f.name == "tokenizer_config.json":
            conf = json.loads(f.read_text())
            conf.pop("chat_template", None)
            f.write_text(json.dumps(conf))
    with pytest.raises(HarvestConfigError, match="chat template"):
        run_harvest(cfg_for(env, tmp_path / "c", model=str(notemplate)))
    with pytest.raises(HarvestConfigError, match="dtype"):
        cfg_for(env, tmp_path / "d", dtype="float64")
    run_harvest(cfg_for(env, tmp_path / "e", limit=3))
    t = time.perf_counter()
    with pytest.raises(StoreMismatchError, match="layers"):
        run_harvest(cfg_for(env, tmp_path / "e", limit=3, layers=(0, 1)))
    assert time.perf_counter() - t < 1.0, "the mismatch must be reported before loading the model"
    with pytest.raises(StoreMismatchError, match="model"):
        run_harvest(cfg_for(env, tmp_path / "e", limit=3, model=str(env["models"]["qwen2"])))


def test_local_model_folder_whose_weights_changed_is_refused(env, tmp_path):
    # A local folder has no hub commit: its weight files' hash is part of the store identity, so a
    # resumed harvest never mixes activations of two different models.
    model = save_tiny_model("llama", tmp_path / "model", tiny_tokenizer("llama"))
    run_harvest(cfg_for(env, tmp_path / "out", model=str(model), limit=6))
    run_harvest(cfg_for(env, tmp_path / "out", model=str(model), limit=6))  # same weights: a no-op resume
    save_tiny_model("llama", model, tiny_tokenizer("llama"), seed=1)  # same config, other weights
    with pytest.raises(StoreMismatchError, match="weights"):
        run_harvest(cfg_for(env, tmp_path / "out", model=str(model), limit=6))


def test_cli_command(env, tmp_path):
    from typer.testing import CliRunner

    from fastsae.cli import app

    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["harvest", "--out", str(out), "--model", str(env["models"]["qwen2"]), "--data", str(env["chats"]),
            "--layers", "2,0", "--limit", "5", "--no-progress", "--dtype", "float16"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "harvested 5 sequences" in res.output
    store = open_store(out)
    assert store.layers == [0, 2] and store.dtype == "float16" and store.num_sequences == 5
    res = runner.invoke(app, [*args[:-2], "--layers", "9"])
    assert res.exit_code == 2 and res.output.strip().startswith("error:") and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    res = runner.invoke(app, [*args, "--dtype", "float64"])
    assert res.exit_code == 2


def test_two_writers_fill_one_store(env, tmp_path):
    single = cfg_for(env, tmp_path / "one", shard_tokens=800)
    run_harvest(single)
    for w in (1, 0):  # any order; each writer takes its contiguous slice of the sequence stream
        run_harvest(dataclasses.replace(single, out=str(tmp_path / "two"), writer=w, num_writers=2))
    a, b = open_store(single.out), open_store(tmp_path / "two")
    assert b.num_sequences == a.num_sequences == 24
    assert {int(s.name.split("-")[1]) for s in b.shards} == {0, 1}
    for i in range(a.num_sequences):
        np.testing.assert_array_equal(a.sequence(i).token_ids, b.sequence(i).token_ids)
        np.testing.assert_allclose(a.sequence(i).acts(2), b.sequence(i).acts(2), atol=1e-4)


def test_each_writer_writes_the_whole_skip_log(env, tmp_path):
    data = tmp_path / "tail.jsonl"  # a bad record after the last conversation: only the last slice reaches it
    data.write_text(env["chats"].read_text() + "{not json\n")
    cfg = cfg_for(env, tmp_path / "s", data=(str(data),))
    results = [run_harvest(dataclasses.replace(cfg, writer=w, num_writers=2)) for w in (1, 0)]
    want = {"invalid_json": 2, "empty_messages": 1}
    assert [r.skipped for r in results] == [want, want]
    skipped = [json.loads(line) for line in (tmp_path / "s" / "skipped.jsonl").read_text().splitlines()]
    assert len(skipped) == 3 and skipped[-1]["reason"] == "invalid_json"
    assert not list((tmp_path / "s").glob(".skipped.jsonl.tmp*"))


def test_dedup_skips_repeated_conversations(env, tmp_path):
    lines = env["chats"].read_text().splitlines()
    data = tmp_path / "dups.jsonl"
    data.write_text("\n".join(lines + lines[:3]) + "\n")  # the first 3 conversations again
    result = run_harvest(cfg_for(env, tmp_path / "s", data=(str(data),), dedup_ngram=8))
    skipped = [json.loads(line) for line in (tmp_path / "s" / "skipped.jsonl").read_text().splitlines()]
    dup_rows = {e["row"] for e in skipped if e["reason"] == "duplicate"}
    assert {len(lines), len(lines) + 1, len(lines) + 2} <= dup_rows  # the repeats (random text may add more)
    assert result.sequences + len(dup_rows) == 27
