"""Before the first step: open and check the store, plan the SAEs, own the output folder.

Everything that can be wrong with the input is found here, before any training, and raised as a
TrainConfigError (or the store's own StoreError) with a one-line message naming what and where.

Output folder layout (`--out`):
    run.json                  resolved config, store identity, the SAEs of the sweep, "complete"
    checkpoint.safetensors    the latest checkpoint of the whole sweep (deleted when the run completes)
    <sae name>/               cfg.json + sae_weights.safetensors (SAELens layout) + fastsae.json (our config,
                              store identity, sweep point, metrics summary) + metrics.jsonl + curves.png
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from fastsae.train.config import (
    OPERATIONAL_FIELDS,
    BDecInit,
    SweepPoint,
    TrainConfig,
    TrainConfigError,
    TrainError,
    resolve,
    sweep_points,
    to_json,
)

logger = logging.getLogger(__name__)

RUN_JSON = "run.json"
CHECKPOINT = "checkpoint.safetensors"
NOT_COMPARED = (*OPERATIONAL_FIELDS, "out", "store")  # the store is compared by fingerprint instead


@dataclass
class RunPlan:
    cfg: TrainConfig  # resolved
    points: list[SweepPoint]
    specs: list  # [SAESpec] per point
    store: object  # store.Store
    store_identity: dict
    out: Path
    status: str  # "new" | "resume" | "complete"

    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT

    def sae_dir(self, point: SweepPoint) -> Path:
        return self.out / point.name


def _fail(msg: str):
    raise TrainConfigError(msg)


def open_checked_store(path: str, layer: int, *, allow_incomplete: bool = False):
    """open_store plus verify's cheap checks (fastsae.store.quick_check): declared sizes against the files, no
    symbolic links, checksums of the small arrays and metadata, offsets, token types and ids in range, shards
    agreeing with store.json, the trained layer's shard indices; and the store complete by its writers'
    records unless ``allow_incomplete``. No activation is read (only `fastsae verify` reads every value)."""
    from fastsae.store import StoreCorruptError, StoreIncompleteError, open_store, quick_check

    try:
        s = open_store(path, allow_incomplete=allow_incomplete)
    except StoreIncompleteError as e:
        raise StoreIncompleteError(
            f"{e}; --allow-incomplete trains on it anyway", e.missing, e.unfinished
        ) from None
    if not s.shards:
        _fail(f"store {path} holds no committed shards (harvest not run, or still running/interrupted)")
    if layer not in s.layers:
        _fail(f"layer {layer} is not in the store at {path}; it has layers {list(s.layers)}")
    for warning in quick_check(s):
        logger.warning(warning)
    if s.completeness is not None and s.completeness.state != "complete":
        logger.warning(s.completeness.message)  # unknown (no records), or incomplete with --allow-incomplete
    for shard in s.shards:
        try:
            shard.raw_acts(layer)  # its shard index (size, crc32c)
        except KeyError as e:
            raise StoreCorruptError(f"store {path}: shard {shard.name} is damaged ({e})") from None
    return s


def store_identity(s, layer: int) -> dict:
    """What run.json and each SAE's fastsae.json record of the store: where it is (its URL for a store on object
    storage, whose s.path is only the local mirror it is read through), its fingerprint, its shape."""
    meta_bytes = (Path(s.path) / "store.json").read_bytes()  # a remote store's: the mirrored copy, same bytes
    return {
        "path": s.url or str(Path(s.path).resolve()),
        "fingerprint": s.fingerprint,
        "meta_sha256": hashlib.sha256(meta_bytes).hexdigest(),
        "layer": layer,
        "d_model": s.d_model,
        "dtype": s.dtype,
        "num_sequences": s.num_sequences,
        "num_tokens": s.num_tokens,
        "model": model_name(s.meta),
    }


def model_name(meta: dict) -> str:
    for key in ("model_name", "model"):
        v = meta.get(key)
        if isinstance(v, str):
            return v
        if isinstance(v, dict) and isinstance(v.get("name"), str):
            return v["name"]
    ident = meta.get("identity") or {}
    return str(ident.get("model_name") or ident.get("model") or "unknown")


def make_spec(point: SweepPoint, cfg: TrainConfig, d_in: int):
    from fastsae.saes import SAESpec, SAESpecError

    try:
        return SAESpec(
            arch=point.arch,
            d_in=d_in,
            d_sae=d_in * point.expansion,
            k=point.k if point.k is not None else 64,
            jumprelu_bandwidth=cfg.jumprelu_bandwidth,
            jumprelu_init_threshold=cfg.jumprelu_init_threshold,
            log_threshold=bool(cfg.jumprelu_log_threshold),
            aux_k_coef=cfg.aux_k_coef,
            # AuxK's dead latents are the run's dead features: no firing for --dead-feature-window steps
            dead_tokens=cfg.dead_feature_window * cfg.batch_size,
        )
    except SAESpecError as e:
        raise TrainConfigError(f"SAE {point.name}: {e}") from None


def plan_run(cfg: TrainConfig) -> RunPlan:
    """Resolve the config, check the store and the output folder; nothing is written."""
    cfg = resolve(cfg)
    points = sweep_points(cfg)
    from fastsae.train.reader import ReaderError, parse_token_types

    try:
        parse_token_types(cfg.token_types)
    except ReaderError as e:
        raise TrainConfigError(f"--token-types: {e}") from None
    s = open_checked_store(cfg.store, cfg.layer, allow_incomplete=cfg.allow_incomplete)
    specs = [make_spec(p, cfg, s.d_model) for p in points]
    sampled = cfg.normalize_activations or cfg.b_dec_init != BDecInit.ZEROS
    if sampled and cfg.init_sample_tokens < 2 * s.d_model:
        _fail(
            f"--init-sample-tokens {cfg.init_sample_tokens} is too few for the norm scale and the b_dec init: use at "
            f"least 2 × d_in = {2 * s.d_model} (fewer points than dimensions leave the geometric median in their span)"
        )
    identity = store_identity(s, cfg.layer)
    out = Path(cfg.out)
    status = check_out_folder(out, cfg, identity)
    return RunPlan(
        cfg=cfg, points=points, specs=specs, store=s, store_identity=identity, out=out, status=status
    )


def make_reader(plan: RunPlan, *, batch_size: int, device, part: tuple[int, int] = (0, 1)):
    """The ActivationReader of the run's selection (its errors as TrainErrors); ``part``: see ActivationReader."""
    from fastsae.train.reader import ActivationReader, ReaderError

    c = plan.cfg
    try:
        return ActivationReader(
            plan.store,
            layer=c.layer,
            batch_size=batch_size,
            token_types=c.token_types,
            buffer_tokens=c.buffer_tokens,
            chunk_tokens=c.chunk_tokens,
            holdout=c.holdout,
            seed=c.seed,
            device=device,
            part=part,
        )
    except ReaderError as e:
        raise TrainError(f"{e}") from None


def run_document(plan: RunPlan, *, complete: bool = False) -> dict:
    return {
        "fastsae": "train",
        "config": to_json(plan.cfg),
        "store": plan.store_identity,
        "saes": [dataclasses.asdict(p) for p in plan.points],
        "complete": complete,
    }


def check_out_folder(out: Path, cfg: TrainConfig, identity: dict) -> str:
    """'new', 'resume' or 'complete'; raises when the folder holds something else."""
    if out.exists() and not out.is_dir():
        _fail(f"--out {out} exists and is not a folder")
    run_json = out / RUN_JSON
    if not run_json.exists():
        if out.exists() and any(out.iterdir()):
            _fail(
                f"output folder {out} is not empty and holds no fastsae train run ({RUN_JSON}); use a new folder"
            )
        return "new"
    try:
        doc = json.loads(run_json.read_text())
        old = doc["config"]
    except (OSError, ValueError, KeyError):
        _fail(f"output folder {out} has an unreadable {RUN_JSON}; use a new folder")
    new = to_json(cfg)
    diff = [k for k in sorted(set(old) | set(new)) if k not in NOT_COMPARED and old.get(k) != new.get(k)]
    if diff:
        shown = ", ".join(f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in diff[:4])
        _fail(f"output folder {out} holds another config ({shown}); use a new --out or the same flags")
    if doc.get("store", {}).get("fingerprint") != identity["fingerprint"]:
        _fail(
            f"output folder {out} was trained on another store (or the store changed): "
            f"{doc.get('store', {}).get('path')} fingerprint {str(doc.get('store', {}).get('fingerprint'))[:12]} "
            f"vs {identity['path']} {identity['fingerprint'][:12]}"
        )
    return "complete" if doc.get("complete") else "resume"


def write_json_atomic(path: Path, doc: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not leave the temp file behind
        raise
