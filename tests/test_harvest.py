"""Harvest units: config, batching (right-padded batches == batch-1), block packing. The capture itself
is tested with the other residual hooks in test_lm_hooks.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fastsae.harvest.batching import pack_blocks, pad_right, plan_batches
from fastsae.harvest.config import HarvestConfig, HarvestConfigError, parse_layers
from fastsae.lm import ResidualHooks
from tests._tiny_models import build_tiny_model


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def tiny(request):
    return build_tiny_model(request.param, num_layers=4)


def test_config_defaults_and_validation():
    cfg = HarvestConfig(out="x")
    assert cfg.layers == (9,) and cfg.dtype == "bfloat16" and cfg.packing == "conversation"
    assert cfg.max_tokens == 8192 and cfg.context_size == 2048
    assert cfg.batch_budget("cpu") == 16384 and cfg.batch_budget("cuda:0") == 16384
    assert HarvestConfig(out="x", batch_tokens=512).batch_budget("cpu") == 512
    for bad in (
        dict(dtype="float64"), dict(packing="mixed"), dict(layers=()), dict(layers=(3, 3)), dict(layers=(-1,)),
        dict(batch_tokens=-1), dict(writer=2, num_writers=2), dict(on_error="ignore"), dict(model_dtype="int8"),
        dict(limit=0), dict(batch_tokens=1), dict(context_size=7), dict(packing="block", batch_tokens=1024),
    ):  # fmt: skip
        with pytest.raises(HarvestConfigError):
            HarvestConfig(out="x", **bad)
    assert isinstance(HarvestConfigError("x"), ValueError)
    assert HarvestConfig(out="x", limit=1, batch_tokens=64, context_size=8).context_size == 8  # the floors
    assert parse_layers("14, 4,9") == (4, 9, 14)
    with pytest.raises(HarvestConfigError, match="comma-separated"):
        parse_layers("4;9")
    assert all("help" in f.metadata for f in dataclasses.fields(HarvestConfig))


def test_right_padded_batches_equal_batch_one(tiny):
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, tiny.config.vocab_size, int(n)).astype(np.int32) for n in rng.integers(1, 60, 10)]
    with torch.inference_mode(), ResidualHooks(tiny, capture=[1, 2], stop=True) as hooks:
        alone = [hooks(torch.from_numpy(s[None].astype(np.int64))).captured for s in seqs]
        for batch in plan_batches([len(s) for s in seqs], 150):
            ids, lengths = pad_right([seqs[i] for i in batch], pad_id=0)
            out = hooks(torch.from_numpy(ids)).captured
            for row, i in enumerate(batch):
                for layer in (1, 2):
                    diff = (out[layer][row, : lengths[row]] - alone[i][layer][0]).abs().max().item()
                    assert diff <= 1e-4


def test_plan_batches_budget_and_cover():
    lengths = [5, 100, 7, 30, 30, 1, 64, 200]
    batches = plan_batches(lengths, 128)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 128
    assert [i for i in batches[0]] == [7]  # longer than the budget: alone, and first (longest first)


def _docs(lengths):
    out = []
    for d, n in enumerate(lengths):
        ids = np.arange(n, dtype=np.int32) + 1000 * d
        out.append((ids, np.full(n, 6, np.uint8), (0, d)))
    return out


def test_pack_blocks_sizes_and_doc_starts():
    lengths = [5, 12, 3, 9, 1]
    blocks = list(pack_blocks(_docs(lengths), context_size=8))
    total = sum(lengths)
    assert [len(b) for b in blocks] == [8] * (total // 8) + ([total % 8] if total % 8 else [])
    assert [b.index for b in blocks] == list(range(len(blocks)))
    stream = np.concatenate([b.token_ids for b in blocks])
    np.testing.assert_array_equal(stream, np.concatenate([d[0] for d in _docs(lengths)]))
    # global doc starts recovered from blocks == cumulative document offsets
    starts = [b.index * 8 + s for b in blocks for s in b.doc_starts]
    assert starts == list(np.cumsum([0] + lengths[:-1]))
    sources = [src for b in blocks for src in b.doc_sources]
    assert sources == [(0, d) for d in range(len(lengths))]
    # a block's source is the document of its first token
    assert blocks[1].source == (0, 1) and blocks[1].doc_starts == []  # doc 1 spans positions 5..16
    assert blocks[2].source == (0, 1) and blocks[2].doc_starts == [1, 4]
