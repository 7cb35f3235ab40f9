"""The logit view of a feature (SAEDashboard's "positive / negative logits"): the tokens whose logits the
feature's decoder direction raises and lowers most when added to the residual stream.

effect[f] = (W_dec[f] * g) @ W_U.T, with g the final RMSNorm's elementwise gain and W_U the unembedding
(the embedding matrix itself for tied models such as SmolLM2); the norm's 1/rms scale is ignored, as
SAEDashboard and TransformerLens's fold_ln do. d_sae x vocab can be 131072 x 128k: it is computed a
chunk of features at a time and only each chunk's top and bottom k are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fastsae.interp.features_inputs import FeaturesInputError

N_LOGITS = 10  # tokens kept on each side, as SAEDashboard's feature page shows
CHUNK_ELEMENTS = 1 << 26  # features x vocab logits per chunk: 256 MiB of float32


@dataclass(frozen=True)
class Unembedding:
    """What the logit view needs of the model: the final norm's gain and the unembedding, on the CPU."""

    gain: torch.Tensor  # [d_model] float32
    W_U: torch.Tensor  # [vocab, d_model] float32
    model: str  # the model it came from (features.json)


def final_norm(model):
    """The norm applied to the residual stream before the unembedding (Llama/Qwen2: model.model.norm)."""
    base = getattr(model, "base_model", model)
    for owner in (base, getattr(base, "model", None), getattr(base, "decoder", None)):
        norm = getattr(owner, "norm", None) if owner is not None else None
        if norm is not None:
            return norm
    raise TypeError(f"{type(model).__name__}: cannot find its final norm (expected base_model.norm)")


def unembedding_of(model, *, vocab: int | None, name: str) -> Unembedding:
    """The gain and W_U of a loaded Hugging Face causal LM; rows past `vocab` (the tokenizer's length:
    padding rows of the matrix) are left out."""
    norm = final_norm(model)
    W_U = model.get_output_embeddings().weight
    gain = getattr(norm, "weight", None)
    d = W_U.shape[1]
    if gain is None or tuple(gain.shape) != (d,):
        raise TypeError(f"{type(norm).__name__}: the final norm has no elementwise gain of size {d}")
    rows = W_U.shape[0] if vocab is None else min(int(vocab), W_U.shape[0])
    return Unembedding(
        gain=gain.detach().float().cpu().clone(), W_U=W_U.detach()[:rows].float().cpu().clone(), model=name
    )


def load_unembedding(cfg, inp) -> Unembedding:
    """The store's model (or --model), fingerprint-checked as eval and steer check it, reduced to its final
    gain and unembedding; the model itself is dropped. One line naming it when it cannot be loaded."""
    from fastsae.errors import FastSAEError
    from fastsae.interp.targets import load_store_model

    meta = inp.store.meta
    spec = cfg.model or (meta.get("model") or {}).get("name")
    skip = "give --model, or --no-logits to skip the logit view"
    if not spec:
        raise FeaturesInputError(f"store {inp.store.path} records no model for the logit view; {skip}")
    try:
        loaded = load_store_model(
            spec, meta, override=bool(cfg.model), device="cpu", progress=cfg.progress,
            error=FeaturesInputError, what=f"store {inp.store.path}",
        )  # fmt: skip
    except FeaturesInputError:
        raise  # a fingerprint mismatch: already one line naming both
    except FastSAEError as e:
        which = "--model" if cfg.model else f"store {inp.store.path}'s model"
        raise FeaturesInputError(f"the logit view cannot load {which}: {e}; {skip}") from None
    if loaded.d_model != inp.store.d_model:
        raise FeaturesInputError(
            f"model {spec}: d_model {loaded.d_model} does not fit store {inp.store.path} ({inp.store.d_model})"
        )
    try:
        return unembedding_of(loaded.model, vocab=len(inp.tokenizer), name=spec)
    except TypeError as e:
        raise FeaturesInputError(f"model {spec}: {e}; {skip}") from None


def chunk_features(vocab: int, budget: int = CHUNK_ELEMENTS) -> int:
    """Features per chunk so that a chunk's logits hold about `budget` elements."""
    return max(1, budget // max(1, vocab))


@torch.no_grad()
def logit_view(W_dec: torch.Tensor, un: Unembedding, *, k: int = N_LOGITS, chunk: int | None = None,
               device="cpu") -> dict[str, np.ndarray]:  # fmt: skip
    """-> {logit_pos_ids, logit_pos, logit_neg_ids, logit_neg} [F, k]: the k largest effects, descending,
    and the k smallest, ascending (most negative first), with their token ids."""
    F, V = W_dec.shape[0], un.W_U.shape[0]
    k = min(k, V)
    chunk = chunk or chunk_features(V)
    W_U = un.W_U.to(device)
    gain = un.gain.to(device)
    out = {
        "logit_pos_ids": np.empty((F, k), np.int32), "logit_pos": np.empty((F, k), np.float32),
        "logit_neg_ids": np.empty((F, k), np.int32), "logit_neg": np.empty((F, k), np.float32),
    }  # fmt: skip
    for a in range(0, F, chunk):
        effect = (W_dec[a : a + chunk].to(device, torch.float32) * gain) @ W_U.T  # [chunk, V]
        for side, largest in (("pos", True), ("neg", False)):
            v, i = torch.topk(effect, k, dim=1, largest=largest, sorted=True)
            out[f"logit_{side}"][a : a + chunk] = v.cpu().numpy()
            out[f"logit_{side}_ids"][a : a + chunk] = i.cpu().numpy()
    return out


def describe_logits(un: Unembedding, k: int) -> dict:
    """features.json's `logits` record."""
    return {
        "k": k, "model": un.model, "vocab": int(un.W_U.shape[0]),
        "effect": "(W_dec[f] * final norm gain) @ W_U.T; the norm's 1/rms scale ignored",
    }  # fmt: skip
