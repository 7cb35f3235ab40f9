"""`fastsae eval`'s run: check every input, build the evaluation set, then two passes over it.

Pass 1 (residuals only, stopping after the deepest SAE layer): the mean residual of the evaluation set
at each SAE layer, for mean-ablation. Pass 2, per batch: one clean forward; per SAE layer a zero- and a
mean-ablation rerun from that layer; per SAE one rerun with its reconstruction spliced in (splice.py).

Every check that can fail runs before pass 1: SAE folders, their stores, one model for all of them, the
model's fingerprint against the stores', d_in and layer against the model, the overlap with the SAEs'
training sequences, an empty evaluation set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fastsae.errors import UsageError
from fastsae.interp.eval_config import GROUPS, EvalConfig, parse_types
from fastsae.interp.eval_metrics import (
    NO_TARGET,
    CleanDist,
    PositionSums,
    ReconGroups,
    clean_nulls,
    downstream,
    token_kl,
    token_nll,
)
from fastsae.interp.evalset import (
    EvalSet,
    EvalSetError,
    check_data,
    count_overlap,
    data_set,
    heldout_set,
    run_holdout,
    training_hashes,
)
from fastsae.interp.splice import Splicer, batches
from fastsae.interp.targets import load_store_model, read_target, recorded_store

logger = logging.getLogger(__name__)

SCORED = (
    "every next-token prediction inside the conversation: the first token has no prediction and padding is "
    "left out; CE/KL are token-weighted means over these positions (per-sequence means beside them); a "
    "position counts toward the group of the token it predicts"
)

SAELENS = (
    "; --saelens-compatible: positions whose input token is bos, eos or pad are neither spliced, scored nor in "
    "the reconstruction metrics, zero-ablation zeroes every position, and KL also scores the prediction after "
    "each sequence's last token (in the overall KL only)"
)


class EvalInputError(UsageError):
    """An SAE, store or model that cannot be evaluated together (the message names which)."""


@dataclass
class SAEEntry:
    path: Path
    name: str
    info: object  # saes.SAEInfo
    layer: int
    store_identity: dict | None  # what train recorded (path, fingerprint, model, ...), None for SAELens
    store: object = None  # the opened store, when it is still there
    holdout: np.ndarray | None = None
    sae: object = None
    overlap: dict = field(default_factory=dict)

    @property
    def identity(self) -> dict:
        spec, extra = self.info.spec, self.info.extra
        return {
            "arch": spec.arch.value, "d_in": spec.d_in, "d_sae": spec.d_sae,
            "k": spec.k if spec.arch.value in ("topk", "batchtopk") else None,
            "layer": self.layer, "hook_name": self.info.hook_name, "model": self.info.model_name,
            "store": self.store_identity, "training_tokens": extra.get("tokens"),
            "sweep_point": extra.get("sweep_point"), "arm": store_arm(self.store),
        }  # fmt: skip


def store_arm(store) -> str | None:
    """FAST (one conversation per sequence), BT(F) (chats packed in blocks) or BT(P) (plain text in blocks)."""
    if store is None:
        return None
    if store.meta.get("packing", "conversation") != "block":
        return "FAST"
    types = np.asarray(store.shards[0].token_types) if store.shards else np.zeros(0)
    return "BT(P)" if types.size and float(np.mean(types == 6)) > 0.5 else "BT(F)"


def _store_weights(entry: SAEEntry) -> str | None:
    if entry.store is not None:
        return (entry.store.meta.get("identity") or {}).get("weights")
    return None


def load_entries(cfg: EvalConfig) -> list[SAEEntry]:
    from fastsae.store import StoreError, open_store

    entries = []
    for spec in cfg.sae:
        t = read_target(spec, error=EvalInputError)
        path, info, layer, ident = t.path, t.info, t.layer, t.store_identity
        entry = SAEEntry(path=path, name=path.name, info=info, layer=layer, store_identity=ident)
        loc = recorded_store(ident)
        if loc:
            try:
                entry.store = open_store(loc)
            except StoreError as e:
                raise EvalInputError(f"--sae {spec}: its store {loc}: {e}") from None
            if entry.store.fingerprint != ident.get("fingerprint"):
                raise EvalInputError(f"--sae {spec}: its store {loc} changed since training (fingerprint differs)")
            entry.holdout = run_holdout(info.extra, entry.store.num_sequences)
        entries.append(entry)
    names = [e.name for e in entries]
    if len(set(names)) < len(names):  # two folders of the same name (two sweeps): tell them apart by path
        for e in entries:
            e.name = str(e.path)
    models = {_store_weights(e) or (e.store_identity or {}).get("model") for e in entries} - {None}
    if len(models) > 1:
        by = ", ".join(f"{e.path}: {(e.store_identity or {}).get('model')}" for e in entries)
        raise EvalInputError(
            f"--sae: the SAEs' stores were harvested from different models ({by}); one per run"
        )
    return entries


def load_eval_model(cfg: EvalConfig, entries: list[SAEEntry]):
    from fastsae.lm import pick_device

    device = pick_device(cfg.device)
    stores = [e.store for e in entries if e.store is not None]
    meta = stores[0].meta if stores else {}
    spec = cfg.model or (meta.get("model") or {}).get("name")
    if not spec:
        raise EvalInputError("--model: the SAEs record no store to take the model from; give --model")
    loaded = load_store_model(
        spec, meta, override=bool(cfg.model), device=device, progress=cfg.progress, error=EvalInputError,
        what=f"store {stores[0].path}" if stores else "the SAEs' store",
    )  # fmt: skip
    for e in entries:
        if e.info.spec.d_in != loaded.d_model:
            raise EvalInputError(
                f"--sae {e.path}: d_in {e.info.spec.d_in} does not fit the model's d_model {loaded.d_model}"
            )
        if e.layer >= loaded.num_layers:
            raise EvalInputError(
                f"--sae {e.path}: layer {e.layer} is not in the model (layers 0..{loaded.num_layers - 1})"
            )
    return loaded, device


def build_evalset(cfg: EvalConfig, entries: list[SAEEntry], tokenizer) -> EvalSet:
    if cfg.data:
        meta = next((e.store.meta for e in entries if e.store is not None), {})
        max_tokens = cfg.max_tokens or int(meta.get("max_tokens") or 8192)
        evalset, _ = data_set(cfg.data, tokenizer, max_tokens=max_tokens, limit=cfg.limit)
    else:
        missing = [str(e.path) for e in entries if e.store is None or e.holdout is None]
        if missing:
            raise EvalInputError(f"no store with held-out sequences for {', '.join(missing)}; give --data")
        if len({e.store.fingerprint for e in entries}) > 1:
            raise EvalInputError(
                "the SAEs come from different stores: give --data to evaluate them on one set"
            )
        evalset = heldout_set(
            entries[0].store, [e.holdout for e in entries], limit=cfg.limit, max_tokens=cfg.max_tokens
        )
    if len(evalset) == 0:
        where = ", ".join(cfg.data) if cfg.data else "the SAEs' held-out sequences (train with --holdout > 0)"
        raise EvalSetError(f"empty evaluation set: no usable conversation in {where}")
    for e in entries:
        if e.store is None or e.holdout is None:
            e.overlap = {
                "checked": False,
                "sequences": None,
                "reason": "the SAE's training store is not at hand",
            }
            if not cfg.allow_overlap:
                raise EvalSetError(
                    f"--sae {e.path}: cannot check the evaluation set against its training sequences (no store "
                    "recorded or found); --allow-overlap evaluates anyway"
                )
            continue
        n = count_overlap(evalset, training_hashes(e.store, e.holdout))
        e.overlap = {"checked": True, "sequences": n}
        if n and not cfg.allow_overlap:
            raise EvalSetError(
                f"{n} of the {len(evalset)} evaluation sequences are training sequences of --sae {e.path}; "
                "--allow-overlap evaluates anyway (and records it)"
            )
    return evalset


def _progress(enabled: bool, total: int):
    from rich.progress import Progress

    bar = Progress(disable=not enabled, transient=True)
    return bar, bar.add_task("eval", total=total)


@torch.no_grad()
def evaluate(cfg: EvalConfig, entries: list[SAEEntry], loaded, evalset: EvalSet, device) -> dict:
    from fastsae.saes import load_sae

    for e in entries:
        e.sae = load_sae(e.path, device=device)
    model = loaded.model
    layers = sorted({e.layer for e in entries})
    splicer = Splicer(model, layers)
    bs = batches(evalset.sequences, batch_tokens=cfg.batch_tokens, device=device)
    splice_types = torch.as_tensor(sorted(parse_types(cfg.splice_types)), device=device)
    skip_ids = saelens_skip_ids(loaded.tokenizer, device) if cfg.saelens_compatible else None
    bar, task = _progress(cfg.progress, 2 * len(bs))
    with bar:
        means = {}  # pass 1: the evaluation set's mean residual per layer
        for b in bs:
            for L, r in splicer.residuals(b).items():
                s, n = means.get(L, (0.0, 0))
                means[L] = (s + r[b.valid].double().sum(0), n + int(b.valid.sum()))
            bar.advance(task)
        means = {L: (s / n).to(model.dtype) for L, (s, n) in means.items()}
        sums = PositionSums(len(evalset), device)
        recon = {i: ReconGroups() for i in range(len(entries))}
        for b in bs:
            _batch(b, splicer, entries, means, sums, recon, splice_types, cfg.with_error, skip_ids)
            bar.advance(task)
    return assemble(cfg, entries, evalset, sums, recon, loaded)


def saelens_skip_ids(tokenizer, device) -> torch.Tensor:
    """SAELens run_evals' excluded input tokens (sae_lens.util.get_special_token_ids): the tokenizer's bos,
    eos, pad, sep and decoder-start ids."""
    names = ("bos", "eos", "pad", "sep", "decoder_start")
    ids = {getattr(tokenizer, f"{n}_token_id", None) for n in names} - {None}
    return torch.as_tensor(sorted(ids), dtype=torch.long, device=device)


def _batch(b, splicer, entries, means, sums, recon, splice_types, with_error, skip_ids=None) -> None:
    clean = splicer.clean(b)
    seq, tgt, scored = b.seq[:, :-1], b.types[:, 1:], b.valid[:, 1:]
    spliced = b.valid & torch.isin(b.types, splice_types)
    used, zeroed = b.valid, spliced  # tokens of the reconstruction metrics; positions zero-ablation zeroes
    kl_at = None  # SAELens: KL at every kept input position, the last one's too ([B, T]); else CE's positions
    if skip_ids is not None:
        # SAELens: bos/eos/pad inputs neither spliced nor scored; zero-ablation everywhere
        skip = torch.isin(b.input_ids, skip_ids) & b.valid
        spliced, scored, used, zeroed = spliced & ~skip, scored & ~skip[:, :-1], b.valid & ~skip, b.valid
        kl_at, kl_tgt = used, torch.full_like(b.types, NO_TARGET)
        kl_tgt[:, :-1] = torch.where(b.valid[:, 1:], tgt, NO_TARGET)
        sums.count(b.seq, kl_tgt, kl_at, key="kl")
    sums.count(seq, tgt, scored)
    sums.add("clean", seq, tgt, scored, token_nll(clean.logits, b.input_ids))
    dist = CleanDist(clean.logits) if entries else None
    first = torch.zeros_like(b.valid)
    first[:, 0] = True
    for L in splicer.layers:
        x = clean.resid[L]
        for name, value, where in (("zero", torch.zeros_like(means[L]), zeroed), ("mean", means[L], spliced)):
            r = torch.where(where[..., None], value.to(x.dtype), x)
            sums.add(f"{name}@{L}", seq, tgt, scored, token_nll(splicer.rerun(clean, L, r), b.input_ids))
        xv = x[b.valid]
        for i, e in enumerate(entries):
            if e.layer != L:
                continue
            xs = xv.to(e.sae.W_enc.dtype)
            acts = e.sae.encode(xs)
            x_hat = e.sae.decode(acts)
            u = used[b.valid]
            recon[i].update(
                xs[u],
                x_hat[u],
                acts[u],
                types=b.types[b.valid][u],
                seq=b.seq[b.valid][u],
                first=first[b.valid][u],
            )
            put = x_hat + (xs - x_hat) if with_error else x_hat
            r = x.clone()
            r[b.valid] = torch.where(spliced[b.valid][:, None], put.to(x.dtype), xv)
            logits = splicer.rerun(clean, L, r)
            sums.add(f"sae{i}", seq, tgt, scored, token_nll(logits, b.input_ids))
            kl = token_kl(dist, logits)
            if kl_at is None:
                sums.add(f"kl{i}", seq, tgt, scored, kl[:, :-1])
            else:
                sums.add(f"kl{i}", b.seq, kl_tgt, kl_at, kl, counts="kl")


def assemble(cfg, entries, evalset, sums, recon, loaded) -> dict:
    saes = []
    for i, e in enumerate(entries):
        metrics, nulls = {}, {}
        for g in GROUPS:
            m = {**recon[i].group(g)}
            m.update(
                downstream(
                    sums, sae=f"sae{i}", kl=f"kl{i}", zero=f"zero@{e.layer}", mean=f"mean@{e.layer}", group=g
                )
            )
            metrics[g], reasons = clean_nulls(m, g)
            if reasons:
                nulls[g] = reasons
        saes.append(
            {"name": e.name, "path": str(e.path), "identity": e.identity, "overlap": e.overlap,
             "metrics": metrics, "null_reasons": nulls}
        )  # fmt: skip
    spliced = (
        "every position" if cfg.splice_types == "all" else f"positions of token types {cfg.splice_types}"
    )
    return {
        "fastsae": "eval",
        "config": cfg.to_json(),
        "model": {"name": loaded.model_id, **{k: v for k, v in loaded.meta.items() if k != "name"}},
        "evaluation": {
            "kind": evalset.kind,
            **evalset.description,
            "num_sequences": len(evalset),
            "num_tokens": evalset.num_tokens,
            "scored": SCORED + (SAELENS if cfg.saelens_compatible else ""),
            "spliced": spliced + (" (SAE error added back)" if cfg.with_error else ""),
            "saelens_compatible": cfg.saelens_compatible,
        },  # fmt: skip
        "groups": list(GROUPS),
        "saes": saes,
    }


def run_eval(cfg: EvalConfig) -> dict:
    """Check, build the set, evaluate; -> the results document (eval_report writes it out)."""
    entries = load_entries(cfg)
    check_data(cfg.data)  # a bad --data is one line before the model loads
    loaded, device = load_eval_model(cfg, entries)
    evalset = build_evalset(cfg, entries, loaded.tokenizer)
    return evaluate(cfg, entries, loaded, evalset, device)
