"""Features artifacts for the dashboard tests, in the documented format (interp/FEATURES.md), written with
write_artifact from the real sequences of a tiny harvested store (so that the store's tokenizer decodes
them): each context's ids and types are the store's tokens around a chosen position, its activations a
seeded pattern. Also a judge.jsonl and a special-token table beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fastsae.interp.feature_artifact import OUTSIDE_TYPE, write_artifact
from fastsae.store import TokenType, open_store

DEMO_CHATS = Path(__file__).resolve().parents[1] / "harvest" / "data" / "demo_chats.jsonl"
N_BINS = 40


def harvest_tiny_store(root: Path, limit: int = 24) -> Path:
    """A tiny-Llama store of the first `limit` demo chats; its tokenizer loads back from the model folder."""
    from fastsae.harvest.config import HarvestConfig
    from fastsae.harvest.runner import run_harvest
    from tests._tiny_models import save_tiny_model, tiny_tokenizer

    model = save_tiny_model("llama", root / "model", tiny_tokenizer("llama"))
    out = root / "store"
    cfg = HarvestConfig(
        out=str(out), model=str(model), data=(str(DEMO_CHATS),), layers=(1,), limit=limit,
        max_tokens=256, progress=False,
    )  # fmt: skip
    run_harvest(cfg)
    return out


def _contexts(ids, types, offsets, lengths, picks_seq, picks_pos, center_act, window, rng):
    """Windows of ±window tokens around (seq, pos) picks: ids, types, and activations (the center's value,
    a few weaker neighbours)."""
    o = np.arange(-window, window + 1)
    p = picks_pos[..., None] + o  # [..., C]
    inside = (p >= 0) & (p < lengths[picks_seq][..., None])
    g = offsets[picks_seq][..., None] + np.clip(p, 0, None)
    g = np.where(inside, g, 0)
    w_ids = np.where(inside, ids[g], -1).astype(np.int32)
    w_types = np.where(inside, types[g], OUTSIDE_TYPE).astype(np.uint8)
    neighbours = (rng.random(w_ids.shape) < 0.15) * rng.random(w_ids.shape) * center_act[..., None]
    acts = np.where(inside, neighbours, 0).astype(np.float32)
    acts[..., window] = center_act
    return w_ids, w_types, acts


def synthetic_artifact(
    out: Path, store_path: Path, *, d_sae: int, top_k: int = 6, n_quantile: int = 5, window: int = 8,
    seed: int = 0, dead_every: int = 7, logits: bool = True, version: int | None = None,
) -> Path:  # fmt: skip
    """A features folder over the store's sequences: feature f is dead when f % dead_every == dead_every - 1;
    with `logits`, a logit view of seeded distinct token ids of the store's vocabulary; `version`: stamp
    another format version (1: a folder from before the logit view, which `logits` must leave out)."""
    rng = np.random.default_rng(seed)
    store = open_store(store_path)
    seqs = [store.sequence(i) for i in range(store.num_sequences)]
    lengths = np.array([len(s.token_ids) for s in seqs])
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    ids = np.concatenate([np.asarray(s.token_ids) for s in seqs]).astype(np.int64)
    types = np.concatenate([np.asarray(s.token_types) for s in seqs]).astype(np.uint8)
    F, N = d_sae, len(TokenType)
    dead = (np.arange(F) % dead_every) == dead_every - 1
    max_act = np.where(dead, 0, rng.uniform(0.5, 20, F)).astype(np.float32)
    T: dict[str, np.ndarray] = {}
    for prefix, n, descending in (("top", top_k, True), ("q", n_quantile, False)):
        frac = np.sort(rng.uniform(0.05, 1, (F, n)), axis=1)
        frac = frac[:, ::-1] if descending else frac * 0.5
        if descending:
            frac[:, 0] = 1.0  # the top context holds the feature's max
        act = (frac * max_act[:, None]).astype(np.float32)
        seq = rng.integers(0, len(seqs), (F, n))
        pos = (rng.random((F, n)) * lengths[seq]).astype(np.int64)
        w_ids, w_types, w_acts = _contexts(ids, types, offsets, lengths, seq, pos, act, window, rng)
        empty = dead[:, None] | (np.arange(n)[None, :] >= n - (np.arange(F)[:, None] % 3 == 1))  # some short
        act[empty] = 0
        T[f"{prefix}_act"] = act
        T[f"{prefix}_seq"] = np.where(empty, -1, seq).astype(np.int64)
        T[f"{prefix}_pos"] = np.where(empty, -1, pos).astype(np.int32)
        T[f"{prefix}_ids"] = np.where(empty[..., None], -1, w_ids).astype(np.int32)
        T[f"{prefix}_types"] = np.where(empty[..., None], OUTSIDE_TYPE, w_types).astype(np.uint8)
        T[f"{prefix}_acts"] = np.where(empty[..., None], 0, w_acts).astype(np.float32)
    mass = rng.dirichlet(np.full(N, 0.3), F)
    mass[dead] = 0
    hist = rng.integers(0, 50, (F, N_BINS)) * (rng.random((F, N_BINS)) < 0.6)
    hist[dead] = 0
    T.update(
        density=np.where(dead, 0, 10 ** rng.uniform(-5, -0.5, F)),
        max_act=max_act,
        mean_act=(max_act * 0.3).astype(np.float32),
        dead=dead.astype(np.uint8),
        hist_counts=hist.astype(np.int64),
        type_mass=mass,
    )
    if logits:
        vocab = int(store.meta["tokenizer"]["vocab_size"])
        for side, sign in (("pos", 1), ("neg", -1)):
            T[f"logit_{side}_ids"] = np.stack(
                [rng.choice(vocab, 10, replace=False) for _ in range(F)]
            ).astype(np.int32)
            T[f"logit_{side}"] = (sign * np.sort(rng.uniform(0.05, 3, (F, 10)), axis=1)[:, ::-1]).astype(
                np.float32
            )
    meta = {
        "sae": {"path": "saes/synthetic-x8", "arch": "topk", "d_in": 64, "d_sae": F, "layer": 1,
                "hook_name": "blocks.1.hook_resid_post", "model_name": "tiny-llama"},
        "store": {"path": str(store_path), "fingerprint": store.meta.get("fingerprint"), "model": "tiny-llama"},
        "config": {"seed": seed},
        "n_sequences": len(seqs), "n_tokens": int(lengths.sum()),
        "token_types": {str(int(t)): t.name.lower() for t in TokenType},
        "window": window, "top_k": top_k, "n_quantile": n_quantile,
        "hist_edges": np.geomspace(1e-3, 100, N_BINS + 1).tolist(), "n_dead": int(dead.sum()),
        "logits": {"k": 10, "model": "tiny-llama", "vocab": int(store.meta["tokenizer"]["vocab_size"])} if logits else None,
    }  # fmt: skip
    if version is not None:
        meta["version"] = version
    if version == 1:
        assert not logits and meta.pop("logits") is None  # version 1 had neither
    write_artifact(out, meta, T)
    _special(out, ids, types, F, rng)
    return out


def _special(out: Path, ids, types, F: int, rng) -> None:
    special = sorted(set(ids[types == int(TokenType.SPECIAL)].tolist()))
    tokens = [
        {"token": f"<special {i}>", "id": i, "kind": "special", "n_sequences": 5, "n_positions": 12,
         "top": [{"feature": int(f), "value": float(v)}
                 for f, v in zip(rng.choice(F, 5, replace=False), np.sort(rng.uniform(0.1, 9, 5))[::-1], strict=True)]}
        for i in special
    ]  # fmt: skip
    (out / "special_tokens.json").write_text(json.dumps({"n_sequences": 24, "tokens": tokens}))


def write_judge(out: Path, features: dict[int, tuple[str | None, float | None]]) -> None:
    """judge.jsonl rows as `fastsae judge` writes them: per feature a description and a score (None:
    unscored, with its reason), detection figures at the top level and in `detection`."""
    with open(out / "judge.jsonl", "w") as f:
        for feat, (desc, score) in features.items():
            det = (
                {"accuracy": 0.8, "f1": 0.75, "n": 10, "status": "scored", "reason": None} if score else None
            )
            rec = {"feature": feat, "description": desc, "score": score,
                   "status": "scored" if score is not None else "unscored",
                   "reason": None if score is not None else "unparseable: no score in the answer",
                   "detection": det, "detection_accuracy": det and det["accuracy"], "detection_f1": det and det["f1"],
                   "detection_n": det["n"] if det else 0}  # fmt: skip
            f.write(json.dumps(rec) + "\n")
