"""The detection scorer's examples and metrics (delphi's detection: random non-activating windows, a shuffled
mix, class-balanced accuracy and F1 over the examples the judge answered).

Activating examples are held out: the feature's quantile contexts (then top contexts past the five shown)
that the explanation prompt did not show. Non-activating examples are random windows of the sequences the
features pass read (features.json's "sequences"), re-encoded with the SAE from the store, kept for a feature only where it is 0 on every
token of the window: the artifact alone cannot say that a window does not fire.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastsae.errors import InputError
from fastsae.interp.feature_artifact import Context, FeatureArtifact

EXAMPLES_PER_PROMPT = 5  # delphi's default number of examples per scorer prompt
POOL_MIN = 256  # random windows encoded at least (shared by every judged feature)
ENCODE_TOKENS = 8192  # tokens per SAE encode batch


class JudgeInputError(InputError):
    """A features folder the judge cannot use (no feature to judge, its store or SAE missing or changed)."""


def held_out(art: FeatureArtifact, feature: int, shown: list[Context], n: int) -> list[Context]:
    """Up to n activating contexts not shown: quantile contexts spread over the quantiles, then top ones."""
    seen = {(c.seq, c.pos) for c in shown}
    quant = [c for c in art.contexts(feature, "quantile") if (c.seq, c.pos) not in seen]
    if len(quant) > n:
        quant = [quant[int(i)] for i in np.linspace(0, len(quant) - 1, n).round()]
    seen |= {(c.seq, c.pos) for c in quant}
    rest = [c for c in art.contexts(feature, "top") if (c.seq, c.pos) not in seen]
    return (quant + rest)[:n]


def negative_windows(
    art: FeatureArtifact, features: list[int], n: int, *, seed: int
) -> dict[int, list[np.ndarray]]:
    """Per feature, up to n token-id windows (as long as the artifact's) on which it is 0 throughout."""
    import torch

    from fastsae.saes import SAEError, load_sae
    from fastsae.store import StoreError, open_store

    if n == 0 or not features:
        return {f: [] for f in features}
    sae_meta, store_meta = art.meta.get("sae") or {}, art.meta.get("store") or {}
    where = art.path / "features.json"
    try:
        store = open_store(store_meta["path"])
    except (KeyError, StoreError) as e:
        raise JudgeInputError(
            f"{where}: its store {store_meta.get('path')!r} cannot be opened ({e}); detection reads it "
            "(--detection 0 skips detection)"
        ) from None
    if store_meta.get("fingerprint") and store.fingerprint != store_meta["fingerprint"]:
        raise JudgeInputError(
            f"{where}: its store {store.path} changed since the features pass (fingerprint)"
        )
    try:
        sae = load_sae(Path(sae_meta["path"]), device="cpu")
    except (KeyError, SAEError) as e:
        raise JudgeInputError(
            f"{where}: its SAE {sae_meta.get('path')!r} cannot be loaded ({e}); detection encodes with it "
            "(--detection 0 skips detection)"
        ) from None
    layer = int(sae_meta["layer"])
    if sae.spec.d_sae != art.d_sae or layer not in store.layers or sae.spec.d_in != store.d_model:
        raise JudgeInputError(
            f"{where}: the SAE {sae_meta['path']} (d_in {sae.spec.d_in}, d_sae {sae.spec.d_sae}) does not fit "
            f"the artifact (d_sae {art.d_sae}) and store (layers {store.layers}, d_model {store.d_model})"
        )
    read = art.meta.get("sequences")  # the sequences the pass read; else those its contexts come from
    if read:
        seqs = np.unique(np.asarray(read, dtype=np.int64))
    else:
        seqs = np.unique(np.concatenate([art.tensors["top_seq"].ravel(), art.tensors["q_seq"].ravel()]))
    seqs = seqs[(seqs >= 0) & (seqs < store.num_sequences)]
    if len(seqs) == 0:
        return {f: [] for f in features}
    rng = np.random.default_rng([seed, 1])
    W = art.window
    spans = []  # (seq, start, stop)
    for s in np.sort(rng.choice(seqs, size=max(POOL_MIN, 4 * n))):
        length = len(store.sequence(int(s)))
        pos = int(rng.integers(length))
        spans.append((int(s), max(0, pos - W), min(length, pos + W + 1)))
    ids, rows = [], []
    for s, a, b in spans:
        seq = store.sequence(s)
        ids.append(np.asarray(seq.token_ids[a:b], dtype=np.int32))
        rows.append(seq.acts(layer)[a:b])  # decoded float32 whatever the stored dtype (fp8 uses its scales)
    x = np.concatenate(rows)
    cols = torch.as_tensor(features)
    fired = []
    with torch.no_grad():
        for i in range(0, len(x), ENCODE_TOKENS):
            acts = sae.encode(torch.from_numpy(np.ascontiguousarray(x[i : i + ENCODE_TOKENS])))
            fired.append((acts[:, cols] > 0).numpy())
    fires = np.concatenate(fired)  # [tokens, len(features)]
    starts = np.cumsum([0] + [len(i) for i in ids[:-1]])
    any_fire = np.logical_or.reduceat(fires, starts, axis=0)  # [windows, len(features)]
    out = {}
    for j, f in enumerate(features):
        quiet = np.flatnonzero(~any_fire[:, j])
        pick = np.random.default_rng([seed, 2, f]).permutation(quiet)[:n]
        out[f] = [ids[int(k)] for k in pick]
    return out


@dataclass(frozen=True)
class Example:
    text: str
    activating: bool


def mix(positives: list[str], negatives: list[str], *, seed: int, feature: int) -> list[list[Example]]:
    """The shuffled mix, cut into prompts of EXAMPLES_PER_PROMPT examples."""
    examples = [Example(t, True) for t in positives] + [Example(t, False) for t in negatives]
    order = np.random.default_rng([seed, 3, feature]).permutation(len(examples))
    shuffled = [examples[int(i)] for i in order]
    return [shuffled[i : i + EXAMPLES_PER_PROMPT] for i in range(0, len(shuffled), EXAMPLES_PER_PROMPT)]


def detection_metrics(examples: list[Example], predictions: list[int | None]) -> dict:
    """delphi's metrics over the answered examples: class-balanced accuracy (the mean of the true-positive
    and true-negative rates, of the classes present), precision, recall, F1."""
    pairs = [(e.activating, bool(p)) for e, p in zip(examples, predictions, strict=True) if p is not None]
    tp = sum(a and p for a, p in pairs)
    tn = sum(not a and not p for a, p in pairs)
    fp = sum(not a and p for a, p in pairs)
    fn = sum(a and not p for a, p in pairs)
    pos, neg = tp + fn, tn + fp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / pos if pos else 0.0
    rates = [r for r, k in ((tp / pos if pos else 0.0, pos), (tn / neg if neg else 0.0, neg)) if k]
    return {
        "accuracy": float(np.mean(rates)) if rates else None,
        "f1": (2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        if pairs
        else None,
        "precision": precision,
        "recall": recall,
        "n": len(pairs),
        "n_activating": pos,
        "n_non_activating": neg,
        "n_unanswered": len(examples) - len(pairs),
        "tp": tp,
        "tn": tn,
        "fp": fp,
        "fn": fn,
    }
