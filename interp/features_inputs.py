"""What `fastsae features` reads, checked before any work: the SAE, the store (its own or --store), that they
fit (layer, d_in, model), the store's tokenizer, and the sequences to read.

The sequences: by default the held-out sequences of the SAE's training run (train's split,
fastsae.store.split.holdout_indices); on a store the SAE was not trained on, all of them. With
--sequences N, a seeded sample of N: held-out sequences first, then training ones if N asks for more.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastsae.errors import InputError
from fastsae.interp.features_config import FeaturesConfig
from fastsae.interp.targets import read_target, recorded_store, same_location

SAMPLE_STREAM = 0xFEA7  # rng stream tags: seeds are [seed, tag]
TABLE_STREAM = 0x7AB1

logger = logging.getLogger(__name__)


class FeaturesInputError(InputError):
    """An SAE, store or selection `fastsae features` cannot use (the message names which)."""


@dataclass
class FeaturesInput:
    sae_path: Path
    info: object  # saes.SAEInfo
    layer: int
    store: object  # fastsae.store.Store
    own_store: bool  # the store the SAE was trained on
    tokenizer: object
    seqs: np.ndarray  # sorted store sequence indices to read
    selection: dict = field(default_factory=dict)  # how they were chosen (features.json)


def _weights(meta: dict) -> str | None:
    return (meta.get("identity") or {}).get("weights")


def model_name(meta: dict) -> str | None:
    m = meta.get("model")
    return m.get("name") if isinstance(m, dict) else m


def open_inputs(cfg: FeaturesConfig) -> FeaturesInput:
    from fastsae.lm import load_store_tokenizer
    from fastsae.store import StoreError, open_store

    if Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise FeaturesInputError(f"--out {cfg.out} is a file, not a folder")
    target = read_target(cfg.sae, error=FeaturesInputError)
    info, layer, ident = target.info, target.layer, target.store_identity or {}
    where = f"--sae {cfg.sae}"
    recorded = ident.get("path")
    path = cfg.store or recorded
    if not path:
        raise FeaturesInputError(f"{where} records no store it was trained on; give --store")
    if not cfg.store and recorded_store(ident) is None:
        raise FeaturesInputError(f"{where}: its store {recorded} is not there; give --store")
    flag = "--store" if cfg.store else f"{where}: its store"
    try:
        store = open_store(path)
    except StoreError as e:
        raise FeaturesInputError(f"{flag} {path}: {e}") from None
    own = bool(recorded) and same_location(path, recorded)
    if own and ident.get("fingerprint") and store.fingerprint != ident["fingerprint"]:
        raise FeaturesInputError(f"{flag} {path} changed since the SAE was trained (fingerprint differs)")
    if layer not in store.layers:
        raise FeaturesInputError(
            f"{flag} {path} has no layer {layer} (it holds layers {store.layers}); {where} reads layer {layer}"
        )
    if info.spec.d_in != store.d_model:
        raise FeaturesInputError(
            f"{where}: d_in {info.spec.d_in} does not fit {flag} {path} (d_model {store.d_model})"
        )
    if not own:
        _check_model(where, ident, info, store, path)
    tokenizer = load_store_tokenizer(store)
    seqs, selection = choose_sequences(cfg, info, store, own)
    if len(seqs) == 0:
        raise FeaturesInputError(f"no sequence to read: {selection['why_empty']}")
    return FeaturesInput(Path(cfg.sae).resolve(), info, layer, store, own, tokenizer, seqs, selection)


def _check_model(where: str, ident: dict, info, store, path) -> None:
    """Another store than the SAE's: it must come from the same model (weights fingerprint, else name)."""
    from fastsae.store import StoreError, open_store

    want = None
    if ident.get("path") and Path(ident["path"]).is_dir():
        try:
            want = _weights(open_store(ident["path"]).meta)
        except StoreError:
            want = None
    have = _weights(store.meta)
    if want and have:
        if want != have:
            raise FeaturesInputError(
                f"--store {path} was harvested from another model (weights {have[:12]}) than {where} was "
                f"trained on (store {ident['path']}, weights {want[:12]})"
            )
        return
    name_store = model_name(store.meta)
    if ident.get("model") and name_store and ident["model"] != name_store:
        raise FeaturesInputError(
            f"--store {path} was harvested from {name_store!r}; {where} was trained on {ident['model']!r}"
        )
    if not ident and info.model_name and name_store and info.model_name != name_store:
        # an SAELens folder names its model its own way: the reader decides
        logger.warning(
            f"{where} names model {info.model_name!r}; --store {path} was harvested from {name_store!r}"
        )


def choose_sequences(cfg: FeaturesConfig, info, store, own: bool) -> tuple[np.ndarray, dict]:
    from fastsae.store.split import holdout_indices

    S = store.num_sequences
    run = info.extra.get("config") if isinstance(info.extra.get("config"), dict) else None
    if own and run is not None:
        held = holdout_indices(S, int(run.get("seed", 42)), fraction=float(run.get("holdout") or 0.0))
        kind = "heldout"
    else:  # a store the SAE was not trained on (or a run we know nothing of): nothing of it is training data
        held = np.arange(S, dtype=np.int64)
        kind = "store" if not own else "unknown_run"
    if cfg.sequences is None:
        why = (
            f"the SAE's training run held out no sequence of {store.path} (train --holdout 0); "
            "give --sequences N to read training sequences"
            if kind == "heldout"
            else f"store {store.path} holds no sequence"
        )
        sel = {"kind": kind, "n_heldout": len(held) if kind == "heldout" else None, "why_empty": why}
        return held, {**sel, "n_training": None if kind == "unknown_run" else 0}
    rng = np.random.default_rng([cfg.seed, SAMPLE_STREAM])
    n = min(cfg.sequences, S)
    if n <= len(held):
        seqs = rng.choice(held, size=n, replace=False)
        n_train = 0
    else:
        rest = np.setdiff1d(np.arange(S, dtype=np.int64), held)
        seqs = np.concatenate([held, rng.choice(rest, size=n - len(held), replace=False)])
        n_train = n - len(held)
    sel = {
        "kind": f"sample_{kind}", "asked": cfg.sequences, "n_heldout": n - n_train, "n_training": n_train,
        "seed": cfg.seed, "why_empty": f"store {store.path} holds no sequence",
    }  # fmt: skip
    if kind != "heldout":
        sel.update(n_heldout=None, n_training=None if kind == "unknown_run" else 0)
    return np.sort(seqs).astype(np.int64), sel


def table_subset(seqs: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """The sequences of the special-token table: a seeded subset of at most `limit` of those read."""
    if len(seqs) <= limit:
        return seqs
    return np.sort(np.random.default_rng([seed, TABLE_STREAM]).choice(seqs, size=limit, replace=False))
