"""`fastsae features`' run: check the inputs (features_inputs.py), one streaming pass over the chosen
sequences' stored activations, then the context windows, then the artifact (interp/FEATURES.md).

The pass: token batches of the store's activations (float32, the raw units the SAE folder takes: train
folds its activation scale into the saved weights) are encoded by the SAE and fed to FeatureStats
(density, mean, histogram, type mass, streaming top-k, quantile reservoir), to the special-token table and,
with --delphi, to the delphi export. Nothing grows with the number of tokens but the delphi files.
The windows: only the tokens inside some chosen context's ±W window are read and encoded again (each
once), and each context's window (ids, types, the feature's activations) is gathered from them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from fastsae.interp.feature_artifact import OUTSIDE_TYPE, write_artifact
from fastsae.interp.features_config import FeaturesConfig
from fastsae.interp.features_inputs import (
    FeaturesInput,
    FeaturesInputError,
    model_name,
    open_inputs,
    table_subset,
)
from fastsae.interp.features_read import RowReader, read_batches, row_scales, to_float32_into
from fastsae.interp.features_stream import EMPTY_SEQ, FeatureStats
from fastsae.store import TokenType

logger = logging.getLogger(__name__)

HIST_EDGES = [float(e) for e in np.logspace(-4, 4, 257).astype(np.float32)]  # 32 bins a decade


def reservoir_size(n_quantile: int) -> int:
    return max(64, 8 * n_quantile)


def _progress(enabled: bool, total: int, what: str):
    from rich.progress import Progress

    bar = Progress(disable=not enabled, transient=True)
    return bar, bar.add_task(what, total=total)


def _dev(a: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(a).to(device)


@torch.no_grad()
def feature_pass(cfg: FeaturesConfig, inp: FeaturesInput, sae, device, *, delphi=None):
    """The streaming pass -> (FeatureStats, the special-token table's document)."""
    from fastsae.interp.special_tokens import SpecialTable, table_rows

    F = sae.d_sae
    stats = FeatureStats(
        F, top_k=cfg.top_k, reservoir=reservoir_size(cfg.n_quantile), n_types=len(TokenType),
        hist_edges=HIST_EDGES, seed=cfg.seed, device=device,
    )  # fmt: skip
    rows = table_rows(inp.tokenizer)
    table_seqs = table_subset(inp.seqs, cfg.special_sequences, cfg.seed)
    table = SpecialTable(rows, F, table_seqs, device)
    total = int(sum(len(inp.store.sequence(int(s))) for s in inp.seqs))
    bar, task = _progress(cfg.progress, total, "features")
    with bar:
        for b in read_batches(inp.store, inp.layer, inp.seqs, batch_tokens=cfg.batch_tokens, device=device):
            acts = sae.encode(b.x)
            seq, pos, types = _dev(b.seq, device), _dev(b.pos, device), _dev(b.types, device)
            tok, feat, val = stats.update(acts, seq, pos, types)
            table.update(acts, seq, _dev(b.ids, device), types)
            if delphi is not None:
                delphi.add(seq[tok], pos[tok], feat, val)
            bar.advance(task, len(b))
    doc = table.finish()
    doc["sequences"] = (
        "a seeded subset of the sequences read" if len(table_seqs) < len(inp.seqs) else "all read"
    )
    return stats, doc


def _gather_rows(store, layer: int, rows: np.ndarray, reader: RowReader):
    """(acts float32 [n, d_model], ids, types) of sorted store-order token rows, read run by run."""
    x = np.empty((len(rows), store.d_model), np.float32)
    ids, types = np.empty(len(rows), np.int64), np.empty(len(rows), np.int64)
    k = np.searchsorted(store.token_starts, rows, side="right") - 1
    cut = np.flatnonzero((np.diff(rows) != 1) | (np.diff(k) != 0)) + 1  # runs of consecutive rows, one shard
    for lo, hi in zip(np.r_[0, cut], np.r_[cut, len(rows)], strict=True):
        shard = store.shards[k[lo]]
        a = int(rows[lo] - store.token_starts[k[lo]])
        b = a + hi - lo
        to_float32_into(
            reader.read(shard.raw_acts(layer), a, b), store.dtype, x[lo:hi], row_scales(shard, layer, a, b)
        )
        ids[lo:hi], types[lo:hi] = reader.read(shard.token_ids, a, b), reader.read(shard.token_types, a, b)
    return x, ids, types


@torch.no_grad()
def fill_windows(inp: FeaturesInput, sae, picks: dict[str, tuple[np.ndarray, np.ndarray]], *, window: int,
                 batch_tokens: int, device) -> dict[str, np.ndarray]:  # fmt: skip
    """picks: prefix -> (seq [F, X], pos [F, X]). -> {prefix_ids, prefix_types, prefix_acts} [F, X, 2W+1].

    Only the tokens inside some window are read and encoded (an SAE's inference encode is per token),
    each once, however many windows hold it."""
    store, C = inp.store, 2 * window + 1
    offs = np.arange(-window, window + 1)
    out, parts = {}, []
    for p, (seq, pos) in picks.items():
        F, X = seq.shape
        out[f"{p}_ids"] = np.full((F, X, C), -1, np.int32)
        out[f"{p}_types"] = np.full((F, X, C), OUTSIDE_TYPE, np.uint8)
        out[f"{p}_acts"] = np.zeros((F, X, C), np.float32)
        f, j = np.nonzero(seq != EMPTY_SEQ)
        at = pos[f, j].astype(np.int64)[:, None] + offs[None, :]  # [m, C] positions in the sequence
        s = seq[f, j]
        length = store.seq_offsets[s + 1] - store.seq_offsets[s]
        m, c = np.nonzero((at >= 0) & (at < length[:, None]))
        rows = store.seq_offsets[s[m]] + at[m, c]
        parts.append((p, f[m].astype(np.int64), j[m], c, rows))
    if not parts:
        return out
    rows = np.concatenate([x[4] for x in parts])
    feats = np.concatenate([x[1] for x in parts])
    uniq, inv = np.unique(rows, return_inverse=True)
    vals = np.empty(len(rows), np.float32)
    ids, types = np.empty(len(uniq), np.int64), np.empty(len(uniq), np.int64)
    by_row = np.argsort(inv, kind="stable")
    bounds = np.searchsorted(inv[by_row], np.arange(0, len(uniq) + batch_tokens, batch_tokens))
    reader = RowReader()
    for i, a in enumerate(range(0, len(uniq), batch_tokens)):
        x, ids[a : a + batch_tokens], types[a : a + batch_tokens] = _gather_rows(
            store, inp.layer, uniq[a : a + batch_tokens], reader
        )
        acts = sae.encode(torch.from_numpy(x).to(device))
        sel = by_row[bounds[i] : bounds[i + 1]]
        got = acts[_dev(inv[sel] - a, device), _dev(feats[sel], device)]
        vals[sel] = got.cpu().numpy() + 0.0  # + 0.0: no -0.0 (JumpReLU gives it)
    reader.close()
    k = 0
    for p, f, j, c, r in parts:
        n = len(r)
        out[f"{p}_acts"][f, j, c] = vals[k : k + n]
        out[f"{p}_ids"][f, j, c] = ids[inv[k : k + n]]
        out[f"{p}_types"][f, j, c] = types[inv[k : k + n]]
        k += n
    return out


def describe(cfg: FeaturesConfig, inp: FeaturesInput, n_tokens: int, n_dead: int) -> dict:
    spec, info, st = inp.info.spec, inp.info, inp.store
    return {
        "sae": {
            "path": str(inp.sae_path), "arch": spec.arch.value, "d_in": spec.d_in, "d_sae": spec.d_sae,
            "layer": inp.layer, "hook_name": info.hook_name, "model_name": info.model_name,
        },
        "store": {
            "path": str(st.path), "fingerprint": st.fingerprint, "model": model_name(st.meta),
            "weights": (st.meta.get("identity") or {}).get("weights"), "trained_on": inp.own_store,
        },
        "config": cfg.to_json(),
        "selection": {k: v for k, v in inp.selection.items() if k != "why_empty"},
        "n_sequences": len(inp.seqs), "n_tokens": n_tokens,
        "token_types": {str(int(t)): t.name.lower() for t in TokenType},
        "window": cfg.window, "top_k": cfg.top_k, "n_quantile": cfg.n_quantile,
        "reservoir": reservoir_size(cfg.n_quantile), "hist_edges": HIST_EDGES, "n_dead": n_dead,
        "sequences": [int(s) for s in inp.seqs],
    }  # fmt: skip


def run_features(cfg: FeaturesConfig) -> dict:
    """Check, load the model's unembedding (unless --no-logits), pass, windows, logit view, write;
    -> features.json's document. Zero live features: the artifact is written, then FeaturesInputError
    says so."""
    from fastsae.interp.feature_logits import load_unembedding

    inp = open_inputs(cfg)
    return features_from(cfg, inp, load_unembedding(cfg, inp) if cfg.logits else None)


def features_from(cfg: FeaturesConfig, inp: FeaturesInput, unembedding=None) -> dict:
    """run_features after its input checks (benchmarks/features.py times this part); the logit view
    only with `unembedding` (feature_logits.Unembedding)."""
    from fastsae.interp.special_tokens import write_table
    from fastsae.lm import pick_device
    from fastsae.saes import load_sae

    device = pick_device(cfg.device)
    sae = load_sae(inp.sae_path, device=device).eval()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    delphi = None
    if cfg.delphi:
        from fastsae.interp.delphi_export import DelphiWriter

        lengths = np.array([len(inp.store.sequence(int(s))) for s in inp.seqs], np.int64)
        delphi = DelphiWriter(
            out, module=inp.info.hook_name, d_sae=sae.d_sae, seqs=inp.seqs, lengths=lengths, device=device
        )
    try:
        stats, table = feature_pass(cfg, inp, sae, device, delphi=delphi)
    except BaseException:
        if delphi is not None:
            delphi.abort()
        raise
    tensors = stats.result(cfg.n_quantile)
    picks = {"top": (tensors["top_seq"], tensors["top_pos"]), "q": (tensors["q_seq"], tensors["q_pos"])}
    tensors.update(
        fill_windows(inp, sae, picks, window=cfg.window, batch_tokens=cfg.batch_tokens, device=device)
    )
    n_dead = int(tensors["dead"].sum())
    meta = describe(cfg, inp, stats.n_tokens, n_dead)
    meta["logits"] = None
    if unembedding is not None:
        from fastsae.interp.feature_logits import N_LOGITS, describe_logits, logit_view

        tensors.update(logit_view(sae.W_dec, unembedding, k=N_LOGITS, device=device))
        meta["logits"] = describe_logits(unembedding, tensors["logit_pos"].shape[1])
    if delphi is not None:
        tok = inp.tokenizer
        pad = next((i for i in (tok.pad_token_id, tok.eos_token_id) if i is not None), 0)
        model = meta["store"]["model"] or inp.info.model_name or ""
        meta["delphi"] = str(
            delphi.finish(inp.store, inp.seqs, pad_id=pad, model_name=model, extra={"sae": str(inp.sae_path)})
        )
    write_table(out, table)
    write_artifact(out, meta, tensors)
    if n_dead == sae.d_sae:
        raise FeaturesInputError(
            f"all {n_dead} features of --sae {cfg.sae} are dead on the {len(inp.seqs)} sequences read "
            f"({stats.n_tokens} tokens); {out} holds their statistics but no context"
        )
    return meta
