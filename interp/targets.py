"""What every analysis command first reads of an SAE folder, and the model its store was harvested with.

eval, features and steer share these checks so that a bad --sae or --model reads the same everywhere;
each passes its own InputError subclass so that its callers can still catch its errors alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from fastsae.errors import InputError, UsageError
from fastsae.lm import layer_of_hook, load_model
from fastsae.saes import SAEInfo, read_sae_info

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SAETarget:
    path: Path
    info: SAEInfo
    layer: int  # the block after which the SAE reads the residual stream
    store_identity: (
        dict | None
    )  # what train recorded of the SAE's store (path, fingerprint, ...), if anything


def read_target(path, *, error: type[InputError] = InputError, flag: str = "--sae") -> SAETarget:
    """The SAE folder's record and layer; one line naming the folder when it names no usable hook."""
    info = read_sae_info(path)
    if not info.hook_name:
        raise error(f"{flag} {path}: cfg.json names no hook (metadata.hook_name)")
    try:
        layer = layer_of_hook(info.hook_name)
    except UsageError as e:
        raise error(f"{flag} {path}: {e}") from None
    ident = info.extra.get("store")
    return SAETarget(Path(path), info, layer, ident if isinstance(ident, dict) else None)


def recorded_store(ident: dict | None) -> str | None:
    """Where the SAE's store is, as train recorded it: an object-store URL (open_store reads it, or says why not),
    or a local folder that is still there; None when there is nothing to open."""
    from fastsae.store import is_url

    loc = (ident or {}).get("path")
    return loc if loc and (is_url(loc) or Path(loc).is_dir()) else None


def same_location(a: str, b: str) -> bool:
    """Whether two store locations (folders or URLs) name the same store."""
    from fastsae.store import is_url

    if is_url(a) or is_url(b):
        return str(a).rstrip("/") == str(b).rstrip("/")
    return Path(a).resolve() == Path(b).resolve()


def model_fingerprint(loaded) -> str | None:
    """The loaded model's weights fingerprint, as harvest records it in store.json's identity."""
    return loaded.meta.get("gguf_sha256") or loaded.meta.get("weights_sha256") or loaded.meta.get("commit")


def load_store_model(
    spec: str, store_meta: dict, *, override: bool, device, progress: bool, error: type[InputError], what: str
):
    """Load `spec` (float32) and check it is the model the store was harvested with.

    A mismatch is an error, unless the user named the model (`override`): then a warning and on.
    """
    loaded = load_model(spec, dtype=torch.float32, device=device, progress=progress)
    have, want = model_fingerprint(loaded), (store_meta.get("identity") or {}).get("weights")
    if want and have and want != have:
        msg = f"model {spec} (fingerprint {str(have)[:12]}) is not the one {what} was harvested with ({str(want)[:12]})"
        if not override:
            raise error(msg)
        logger.warning(f"{msg}; going on with it as --model asks")
    return loaded
