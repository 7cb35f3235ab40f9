"""Save and load SAEs in the on-disk layout SAELens v6 loads with ``SAE.load_from_disk(path)``.

One directory per SAE:
- ``cfg.json``: SAELens v6 inference config. ``architecture`` is "standard", "jumprelu" or "topk" (a BatchTopK SAE is
  exported as "jumprelu" with its global threshold repeated per feature, as SAELens itself does;
  ``metadata.training_architecture`` says "batchtopk"). Every flag that shapes the forward pass is written out:
  ``apply_b_dec_to_input: false``, ``normalize_activations: "none"`` (fold any activation scaling first with
  ``fold_activation_norm_``), ``reshape_activations: "none"``, and for topk ``k`` and
  ``rescale_acts_by_decoder_norm: false``. ``metadata.sae_lens_version`` names the config format version (6.0.0) so
  SAELens does not run its pre-6 config migration; ``metadata.hook_name``/``model_name`` say where the SAE reads.
- ``sae_weights.safetensors``: exactly the tensors SAELens's inference class expects (strict load): W_enc
  [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in], and ``threshold`` [d_sae] (θ itself, not log θ)
  for jumprelu.
- ``fastsae_state.safetensors``: our state SAELens has no slot for (log_threshold, topk_threshold,
  tokens_since_fired), so ``load_sae`` restores the module bit for bit.
- ``fastsae.json``: our SAESpec plus ``extra`` (the run's full config, store identity, ...).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fastsae.atomic import write_json_atomic
from fastsae.saes.sae import Arch, SAEError, SAESpec, SparseAutoencoder

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"
STATE_FILENAME = "fastsae_state.safetensors"
META_FILENAME = "fastsae.json"
SAELENS_FORMAT_VERSION = "6.0.0"
_DTYPE_NAMES = {
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.float64: "float64",
}


class SAENotFoundError(SAEError, FileNotFoundError):
    """The SAE directory or one of its files is missing."""


class SAEFormatError(SAEError, ValueError):
    """The files exist but do not describe an SAE we can load."""


def _saelens_state(sae: SparseAutoencoder) -> dict[str, torch.Tensor]:
    def t(v: torch.Tensor) -> torch.Tensor:
        return v.detach().to("cpu").contiguous().clone()

    state = {"W_enc": t(sae.W_enc), "b_enc": t(sae.b_enc), "W_dec": t(sae.W_dec), "b_dec": t(sae.b_dec)}
    if sae.spec.arch in (Arch.JUMPRELU, Arch.BATCHTOPK):
        # SAELens casts every tensor to cfg.dtype on load; θ stays float32 when the SAE is float32
        state["threshold"] = t(sae.threshold.to(sae.W_enc.dtype))
    return state


def saelens_cfg(sae: SparseAutoencoder, *, hook_name: str, model_name: str) -> dict:
    """The cfg.json dict SAELens v6 needs to rebuild this SAE's exact forward pass."""
    spec = sae.spec
    arch = "jumprelu" if spec.arch == Arch.BATCHTOPK else spec.arch.value
    cfg: dict = {
        "architecture": arch,
        "d_in": spec.d_in,
        "d_sae": spec.d_sae,
        "dtype": _DTYPE_NAMES[sae.W_enc.dtype],
        "device": "cpu",
        "apply_b_dec_to_input": False,
        "normalize_activations": "none",
        "reshape_activations": "none",
    }
    if spec.arch == Arch.TOPK:
        cfg["k"] = spec.k
        cfg["rescale_acts_by_decoder_norm"] = False
    cfg["metadata"] = {
        "sae_lens_version": SAELENS_FORMAT_VERSION,
        "sae_lens_training_version": SAELENS_FORMAT_VERSION,
        "model_name": model_name,
        "hook_name": hook_name,
        "hook_head_index": None,
        "training_architecture": spec.arch.value,
        "trained_with": "fastsae",
    }
    if spec.arch == Arch.BATCHTOPK:
        cfg["metadata"]["training_architecture_details"] = {"k": spec.k}
    return cfg


def save_sae(
    sae: SparseAutoencoder, path: str | os.PathLike, *, hook_name: str, model_name: str, extra: dict
) -> None:
    """Write ``sae`` to the directory ``path`` (created if needed) in SAELens's layout plus our own state."""
    if not isinstance(sae, SparseAutoencoder):
        raise TypeError(f"save_sae: expected a SparseAutoencoder, got {type(sae).__name__}")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    save_file(_saelens_state(sae), str(out / WEIGHTS_FILENAME))
    own = {name: v.detach().to("cpu").contiguous().clone() for name, v in sae.named_buffers()}
    for name in ("log_threshold", "threshold"):  # θ in float32 whatever the SAE dtype
        if name in sae._parameters:
            own[name] = sae._parameters[name].detach().to("cpu").contiguous().clone()
    if own:
        save_file(own, str(out / STATE_FILENAME))
    elif (out / STATE_FILENAME).exists():
        (out / STATE_FILENAME).unlink()
    write_json_atomic(
        out / CFG_FILENAME, saelens_cfg(sae, hook_name=hook_name, model_name=model_name), default=str
    )
    write_json_atomic(
        out / META_FILENAME, {"format": 1, "spec": sae.spec.to_dict(), "extra": extra}, default=str
    )


@dataclass(frozen=True)
class SAEInfo:
    """What an SAE folder says about its SAE, read without its weights."""

    spec: SAESpec
    hook_name: str | None  # cfg.json metadata.hook_name: where the SAE reads (e.g. blocks.9.hook_resid_post)
    model_name: str | None  # cfg.json metadata.model_name
    extra: dict  # fastsae.json "extra" (the run's config, store identity, ...); {} for an SAELens folder


def read_sae_info(path: str | os.PathLike) -> SAEInfo:
    """The SAEInfo of a folder ``load_sae`` can load (same checks, same errors)."""
    src = _sae_dir(path)
    cfg, meta, spec = _read_folder(src)
    md = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    extra = meta.get("extra") if isinstance(meta.get("extra"), dict) else {}
    return SAEInfo(spec=spec, hook_name=md.get("hook_name"), model_name=md.get("model_name"), extra=extra)


def _sae_dir(path: str | os.PathLike) -> Path:
    src = Path(path)
    if not src.is_dir():
        raise SAENotFoundError(f"load_sae: {src} is not a directory")
    for name in (CFG_FILENAME, WEIGHTS_FILENAME):
        if not (src / name).is_file():
            raise SAENotFoundError(f"load_sae: {src / name} is missing")
    return src


def _read_folder(src: Path) -> tuple[dict, dict, SAESpec]:
    """(cfg.json, fastsae.json or {}, the spec) of an SAE folder."""
    cfg = _read_json(src / CFG_FILENAME)
    if not (src / META_FILENAME).is_file():
        return cfg, {}, _spec_from_saelens_cfg(cfg, src)
    meta = _read_json(src / META_FILENAME)
    if not isinstance(meta.get("spec"), dict):
        raise SAEFormatError(f"load_sae: {src / META_FILENAME} has no 'spec' object")
    return cfg, meta, SAESpec.from_dict(meta["spec"])


def load_sae(path: str | os.PathLike, *, device: torch.device | str | None = None) -> SparseAutoencoder:
    """Load an SAE saved by ``save_sae`` (exactly), or an SAELens v6 standard/jumprelu/topk SAE directory."""
    src = _sae_dir(path)
    cfg, meta, spec = _read_folder(src)
    weights = _read_tensors(src / WEIGHTS_FILENAME)
    needed = ("W_enc", "b_enc", "W_dec", "b_dec")
    if spec.arch in (Arch.JUMPRELU, Arch.BATCHTOPK):
        needed += ("threshold",)
    for key in needed:
        if key not in weights:
            raise SAEFormatError(f"load_sae: {src / WEIGHTS_FILENAME} has no tensor {key!r}")
    dtype = weights["W_enc"].dtype
    sae = SparseAutoencoder(spec, device="cpu", dtype=dtype)
    with torch.no_grad():
        for key in ("W_enc", "b_enc", "W_dec", "b_dec"):
            param = getattr(sae, key)
            if weights[key].shape != param.shape:
                raise SAEFormatError(
                    f"load_sae: {key} in {src / WEIGHTS_FILENAME} has shape {tuple(weights[key].shape)}, "
                    f"expected {tuple(param.shape)}"
                )
            param.copy_(weights[key])
        if not meta and cfg.get("apply_b_dec_to_input", True):
            # SAELens computes (x − b_dec) W_enc + b_enc; fold the shift into b_enc
            sae.b_enc.sub_(sae.b_dec @ sae.W_enc)
        own = _read_tensors(src / STATE_FILENAME) if (src / STATE_FILENAME).is_file() else {}
        if spec.arch == Arch.JUMPRELU:
            if spec.log_threshold:
                sae.log_threshold.copy_(
                    own["log_threshold"] if "log_threshold" in own else weights["threshold"].log()
                )
            else:
                sae.threshold.copy_(own["threshold"] if "threshold" in own else weights["threshold"])
        for name, buf in sae.named_buffers():
            if name in own:
                buf.copy_(own[name])
            elif name == "topk_threshold":
                buf.copy_(weights["threshold"][0])
    return sae.to(device) if device is not None else sae


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SAEFormatError(f"load_sae: {path} is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise SAEFormatError(f"load_sae: {path} does not hold a JSON object")
    return obj


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:  # a torn or foreign file
        raise SAEFormatError(f"load_sae: {path} is not a readable safetensors file ({e})") from None


def _spec_from_saelens_cfg(cfg: dict, src: Path) -> SAESpec:
    arch = cfg.get("architecture", "standard")
    if arch not in ("standard", "jumprelu", "topk"):
        raise SAEFormatError(f"load_sae: {src / CFG_FILENAME}: architecture {arch!r} is not supported")
    norm = cfg.get("normalize_activations", "none")
    if norm not in ("none", None):
        raise SAEFormatError(
            f"load_sae: {src / CFG_FILENAME}: normalize_activations {norm!r} is not supported"
        )
    if arch == "topk" and cfg.get("rescale_acts_by_decoder_norm", False):
        raise SAEFormatError(
            f"load_sae: {src / CFG_FILENAME}: rescale_acts_by_decoder_norm true is not supported"
        )
    try:
        return SAESpec(Arch(arch), int(cfg["d_in"]), int(cfg["d_sae"]), k=int(cfg.get("k", 64)))
    except KeyError as e:
        raise SAEFormatError(f"load_sae: {src / CFG_FILENAME} has no {e.args[0]!r}") from None
