"""Store metadata of a harvest, and the identity that decides whether an existing --out is resumable.

meta["identity"] holds exactly what changes the stored content (model, revision, weights hash,
tokenizer/template hash, layers, dtypes, packing, context size, max tokens, data + hashes, limit,
dedup, writer slicing). Batch size, device, threads and progress are left out, so a rerun with
another batch size resumes, while another model or other layers fail with StoreMismatchError.
"""

from __future__ import annotations

import json
from pathlib import Path

from fastsae.harvest.config import HarvestConfig

DEMO_DATA = Path(__file__).resolve().parent / "data" / "demo_chats.jsonl"

# identity keys computable from the config alone (checked before loading the model)
_CONFIG_IDENTITY = (
    "model", "revision", "layers", "dtype", "packing", "context_size", "max_tokens", "limit", "dedup_ngram",
    "num_writers",
)  # fmt: skip


def resolve_data_specs(cfg: HarvestConfig) -> list[str]:
    """The --data specs, defaulting to the shipped demo chats; raises for a missing file (one line)."""
    from fastsae.chats.sources import SourceError, parse_spec
    from fastsae.harvest.config import HarvestConfigError

    specs = list(cfg.data) or [str(DEMO_DATA)]
    for spec in specs:
        try:
            d = parse_spec(spec)
        except SourceError as e:
            raise HarvestConfigError(str(e)) from None
        if d.kind == "txt" and cfg.packing != "block":
            raise HarvestConfigError(f"--data {spec}: plain text needs --packing block")
    return specs


def _config_identity(cfg: HarvestConfig) -> dict:
    ident = {k: getattr(cfg, k) for k in _CONFIG_IDENTITY}
    ident["layers"] = list(cfg.layers)
    if cfg.packing != "block":
        ident["context_size"] = None  # unused in conversation mode
    if cfg.dtype.startswith("fp8"):  # one store, one rounding (a resume may not mix them)
        ident["fp8_rounding"] = cfg.fp8_rounding
    return ident


def check_early_identity(cfg: HarvestConfig, out: Path) -> None:
    """Compare the config-only part of an existing store's identity before any work."""
    from fastsae.store import StoreMismatchError, peek_store_json

    raw = peek_store_json(out)  # a directory's, or an object store's
    if raw is None:
        return
    try:
        stored = json.loads(raw).get("identity") or {}
    except (OSError, ValueError, AttributeError):
        return  # init_store reports a damaged store.json
    new = json.loads(json.dumps(_config_identity(cfg)))
    diff = [k for k in new if k in stored and stored[k] != new[k]]
    if diff:
        details = ", ".join(f"{k}: stored {stored[k]!r} != new {new[k]!r}" for k in diff)
        raise StoreMismatchError(
            f"store {out} was written with a different identity ({details}); use a new --out", keys=diff
        )


def _data_identity(d: dict) -> dict:
    """A local file is its content (sha256) and file name, not the path it was given by."""
    if d.get("sha256"):
        return {"file": Path(d["path"]).name, "sha256": d["sha256"]}
    return {k: d.get(k) for k in ("kind", "name", "config", "split")}


def build_meta(cfg: HarvestConfig, loaded, specs: list[str], *, model_dtype: str) -> dict:
    """Full store metadata (store.json) of this harvest."""
    from fastsae.chats.sources import describe_sources
    from fastsae.lm.chat import template_hash
    from fastsae.store import SCHEMA_VERSION

    data = describe_sources(specs)
    tok = loaded.tokenizer
    tok_hash = template_hash(tok)
    ident = _config_identity(cfg)
    ident.update(
        model_dtype=model_dtype,
        weights=loaded.meta.get("gguf_sha256")
        or loaded.meta.get("weights_sha256")
        or loaded.meta.get("commit"),
        gguf_file=loaded.meta.get("gguf_file"),
        tokenizer=tok_hash,
        data=[_data_identity(d) for d in data],
    )
    return {
        "schema_version": SCHEMA_VERSION,
        "producer": "fastsae harvest",
        "model": {**loaded.meta, "num_layers": loaded.num_layers, "model_dtype": model_dtype},
        "tokenizer": {
            "name": getattr(tok, "name_or_path", None),
            "class": type(tok).__name__,
            "vocab_size": len(tok),
            "template_hash": tok_hash,
        },
        "layers": list(cfg.layers),
        "d_model": loaded.d_model,
        "dtype": cfg.dtype,
        "packing": cfg.packing,
        "context_size": cfg.context_size if cfg.packing == "block" else None,
        "max_tokens": cfg.max_tokens,
        "data": data,
        "config": cfg.asdict(),
        "identity": ident,
    }
