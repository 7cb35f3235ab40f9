"""Small synthetic stores for the reader tests, written with store.ShardWriter, and how to read them back.

Every token's activation is tagged with its global token index (split in base-128 digits over columns 0-2 so
that the tag is exact in bf16), so emitted batches can be mapped back to tokens.
"""

from __future__ import annotations

import numpy as np
import torch

from fastsae.store import ShardWriter, TokenType, open_store
from fastsae.train.reader import ActivationReader

D = 8
LAYERS = [1, 3]


def build_store(root, *, dtype="float32", shards=3, seqs_per_shard=12, seed=0, compression=None):
    """A store whose token g has acts[layer][g, :3] = base-128 digits of g and acts[:, 3] = layer."""
    rng = np.random.default_rng(seed)
    g = 0
    first = 0
    for k in range(shards):
        with ShardWriter(
            root,
            writer=0,
            seq=k,
            first_sequence=first,
            layers=LAYERS,
            d_model=D,
            dtype=dtype,
            meta={"identity": {"test": 1}},
            rows_per_chunk=16,
            compression=compression,
        ) as w:
            for _ in range(seqs_per_shard):
                n = int(rng.integers(3, 40))
                idx = np.arange(g, g + n)
                acts = {}
                for layer in LAYERS:
                    a = rng.standard_normal((n, D)).astype(np.float32)
                    a[:, 0], a[:, 1], a[:, 2], a[:, 3] = idx % 128, (idx // 128) % 128, idx // 16384, layer
                    acts[layer] = a
                types = rng.integers(0, len(TokenType), n).astype(np.uint8)
                w.append(token_ids=idx.astype(np.int32), token_types=types, acts=acts, source=(0, first))
                g += n
                first += 1
    return open_store(root)


def tags(batch: torch.Tensor) -> np.ndarray:
    b = batch.numpy().astype(np.int64)
    return b[:, 0] + 128 * b[:, 1] + 16384 * b[:, 2]


def all_tags(reader, n_batches=None) -> np.ndarray:
    out = []
    for i, batch in enumerate(reader):
        if n_batches is not None and i >= n_batches:
            break
        out.append(tags(batch))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def expected_tokens(store, types=None, holdout=()) -> np.ndarray:
    types_all = np.concatenate([np.asarray(sh.token_types) for sh in store.shards])
    keep = np.ones(len(types_all), bool) if types is None else np.isin(types_all, [int(t) for t in types])
    for i in holdout:
        keep[store.seq_offsets[i] : store.seq_offsets[i + 1]] = False
    return np.flatnonzero(keep)


def make(store, **kw):
    args = dict(layer=3, batch_size=16, buffer_tokens=64, chunk_tokens=8, seed=1)
    args.update(kw)
    return ActivationReader(store, **args)
