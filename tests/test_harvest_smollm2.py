"""Harvest on the real SmolLM2-135M-Instruct (embedded default model; loaded once per test session)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fastsae.harvest.config import HarvestConfig
from fastsae.harvest.meta import DEMO_DATA
from fastsae.lm import hidden_states_index
from fastsae.store import TokenType, open_store

pytestmark = pytest.mark.slow

LOCAL_GGUF = Path("/tmp/smol/SmolLM2-135M-Instruct.Q4_1.gguf")  # a developer copy; CI fetches it
MTBENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "normalized" / "mtbench101_messages.jsonl"


@pytest.fixture(scope="session")
def smollm2():
    from fastsae.lm import GGUF_ENV, load_model

    if not os.environ.get(GGUF_ENV) and LOCAL_GGUF.is_file():
        os.environ[GGUF_ENV] = str(LOCAL_GGUF)
    return load_model("smollm2-135m-instruct", dtype=torch.float32, device="cpu")


def test_smollm2_harvest_demo_chats(smollm2, tmp_path):
    from fastsae.harvest.runner import run_harvest

    data = DEMO_DATA if DEMO_DATA.is_file() else MTBENCH
    if not data.is_file():
        pytest.skip("no demo chats and no shared data")
    cfg = HarvestConfig(out=str(tmp_path / "s"), data=(str(data),), limit=10, layers=(3, 9), progress=False)
    result = run_harvest(cfg, loaded=smollm2)
    assert result.sequences == 10
    store = open_store(cfg.out)
    assert store.d_model == 576 and store.layers == [3, 9] and store.dtype == "bfloat16"
    assert store.meta["model"]["gguf_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert len(store.meta["model"]["gguf_sha256"]) == 64 and store.meta["identity"]["tokenizer"]
    types = np.concatenate([s.token_types for s in store.shards])
    for t in (TokenType.SPECIAL, TokenType.TEMPLATE, TokenType.USER, TokenType.ASSISTANT):
        assert (types == t).sum() > 0, t.name
    seq = store.sequence(0)
    for layer in store.layers:
        assert np.isfinite(seq.acts(layer)).all()
    with torch.inference_mode():
        ids = torch.from_numpy(seq.token_ids[None].astype(np.int64))
        hidden = smollm2.model(ids, output_hidden_states=True).hidden_states
    ref = hidden[hidden_states_index(9)][0].float().numpy()
    np.testing.assert_allclose(seq.acts(9), ref, rtol=2**-7, atol=1e-3 * np.abs(ref).max())


def test_smollm2_store_tokenizer_loads_back(smollm2, tmp_path, monkeypatch):
    import json
    import shutil

    from fastsae.harvest.runner import run_harvest
    from fastsae.lm import GGUF_ENV, default_gguf_path, load_store_tokenizer, template_hash

    data = DEMO_DATA if DEMO_DATA.is_file() else MTBENCH
    cfg = HarvestConfig(out=str(tmp_path / "s"), data=(str(data),), limit=2, layers=(0,), progress=False)
    run_harvest(cfg, loaded=smollm2)
    meta = open_store(cfg.out).meta
    assert meta["model"]["source"]["kind"] == "gguf" and Path(meta["model"]["source"]["path"]).is_file()
    want = meta["tokenizer"]["template_hash"]
    assert template_hash(load_store_tokenizer(cfg.out)) == want
    # a store written before model.source existed, on a machine without the dequantised copy: from the GGUF
    old = tmp_path / "old"
    shutil.copytree(cfg.out, old)
    meta["model"].pop("source")
    (old / "store.json").write_text(json.dumps(meta))
    monkeypatch.setenv(GGUF_ENV, str(default_gguf_path()))
    monkeypatch.setenv("FASTSAE_CACHE", str(tmp_path / "empty-cache"))
    tok = load_store_tokenizer(old)
    assert template_hash(tok) == want
    seq = open_store(old).sequence(0)
    assert tok.decode(seq.token_ids[:8]) == smollm2.tokenizer.decode(seq.token_ids[:8])
