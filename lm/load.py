"""Load a causal LM and its tokenizer: a hub name, a local folder, a .gguf file, or the embedded
default (SmolLM2-135M-Instruct, Q4_1 GGUF; see embedded.py).

A GGUF is dequantised to float32 by transformers on load; that float32 copy is kept in the cache
(keyed by the GGUF's sha256 and the transformers version) so the next load skips the dequantisation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from fastsae.lm.embedded import DEFAULT_MODEL, cache_dir, default_gguf_path, sha256_file
from fastsae.lm.errors import ModelLoadError


@dataclass
class LoadedModel:
    model: object  # transformers PreTrainedModel (causal LM)
    tokenizer: object
    model_id: str  # what the user asked for (hub name, path, or the default's name)
    # provenance for store metadata (gguf name/sha256, revision, where it was loaded from, ...)
    meta: dict = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def d_model(self) -> int:
        return int(self.model.config.hidden_size)


def resolve_model(spec: str) -> tuple[str, str | None]:
    """-> (pretrained name or folder, gguf file name inside it or None)."""
    if spec == DEFAULT_MODEL:
        path = default_gguf_path()
        return str(path.parent), path.name
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ModelLoadError(f"--model {spec}: no such .gguf file")
        return str(path.parent), path.name
    if path.exists() and not path.is_dir():
        raise ModelLoadError(
            f"--model {spec}: a file that is not .gguf; give a model folder, a .gguf or a hub name"
        )
    return spec, None


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def local_weights_sha256(folder: Path) -> str:
    """sha256 over (name, sha256) of every weight file in a local model folder, in name order.

    One streaming read of the weights per harvest run; it lets a resumed harvest refuse a folder whose
    weights changed since the store was started.
    """
    h = hashlib.sha256()
    for f in sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)):
        h.update(f"{f.name}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def dequantized_dir(gguf_sha: str) -> Path:
    import transformers

    return cache_dir() / "dequantized" / f"{gguf_sha[:16]}-tf{transformers.__version__}"


def _save_dequantized(model, tokenizer, target: Path) -> None:
    """Keep the float32 dequantised weights (exactly what was just loaded) for the next load; best effort."""
    from safetensors.torch import save_model

    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        tmp.mkdir(parents=True)
        config = model.config.to_dict()
        config.pop("quantization_config", None)  # the weights are plain float32 now
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        save_model(model, str(tmp / "model.safetensors"))  # handles tied embeddings
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except (OSError, ValueError):
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_dtype(name: str, device):
    """'auto' -> float32 on CPU, bfloat16 elsewhere; else the torch dtype of that name."""
    import torch

    if name == "auto":
        name = "float32" if str(device).startswith("cpu") else "bfloat16"
    return getattr(torch, name)


@contextlib.contextmanager
def hf_progress(enabled: bool):
    """transformers' and huggingface_hub's progress bars on or off for the block, restored after."""
    import huggingface_hub.utils as hub
    from transformers.utils import logging as tf_logging

    if enabled:
        yield
        return
    was_tf, was_hub = tf_logging.is_progress_bar_enabled(), not hub.are_progress_bars_disabled()
    tf_logging.disable_progress_bar()
    hub.disable_progress_bars()
    try:
        yield
    finally:
        if was_tf:
            tf_logging.enable_progress_bar()
        if was_hub:
            hub.enable_progress_bars()


def _location(spec: str, revision: str | None) -> tuple[str, dict, Path | None, str | None]:
    """-> (name or folder to load, from_pretrained kwargs, gguf path or None, gguf sha256 or None)."""
    name, gguf_file = resolve_model(spec)
    kwargs: dict = {"revision": revision} if revision else {}
    if not gguf_file:
        return name, kwargs, None, None
    gguf = Path(name) / gguf_file
    gguf_sha = sha256_file(gguf)
    cached = dequantized_dir(gguf_sha)
    if (cached / "config.json").is_file():
        return str(cached), {}, gguf, gguf_sha  # dequantised once before: skips the GGUF parse
    return name, {**kwargs, "gguf_file": gguf_file}, gguf, gguf_sha


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def load_model(
    spec: str,
    *,
    revision: str | None = None,
    dtype=None,
    device="cpu",
    attn_implementation: str = "sdpa",
    progress: bool = True,
) -> LoadedModel:
    """Load a causal LM + tokenizer in eval mode on `device`, gradients off. `progress` False silences
    transformers' and the hub's progress bars while loading."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name, kwargs, gguf, gguf_sha = _location(spec, revision)
    try:
        with hf_progress(progress):
            tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(
                name, dtype=torch.float32 if gguf else (dtype or torch.float32),
                attn_implementation=attn_implementation, **kwargs,
            )  # fmt: skip
            if "gguf_file" in kwargs:
                _save_dequantized(model, tokenizer, dequantized_dir(gguf_sha))
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"could not load model {spec!r}: {_first_line(e)}") from e
    if dtype is not None:
        model.to(dtype=dtype)
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    meta: dict = {"name": spec, "revision": revision, "class": type(model).__name__}
    if gguf:
        meta.update(gguf_file=gguf.name, gguf_sha256=gguf_sha)
        meta["source"] = {"kind": "gguf", "path": str(gguf.resolve()), "sha256": gguf_sha}
    elif Path(name).is_dir():  # a local folder has no commit: its weight files are its identity
        meta["weights_sha256"] = local_weights_sha256(Path(name))
        meta["source"] = {"kind": "folder", "path": str(Path(name).resolve())}
    else:
        commit = getattr(model.config, "_commit_hash", None)
        if commit:
            meta["commit"] = commit
        meta["source"] = {"kind": "hub", "name": name, "revision": commit or revision}
    return LoadedModel(model=model, tokenizer=tokenizer, model_id=spec, meta=meta)


def load_tokenizer(spec: str, *, revision: str | None = None, progress: bool = True):
    """The tokenizer of `spec` alone (same resolution as load_model)."""
    from transformers import AutoTokenizer

    name, kwargs, _, _ = _location(spec, revision)
    try:
        with hf_progress(progress):
            return AutoTokenizer.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"could not load the tokenizer of {spec!r}: {_first_line(e)}") from e


def _store_meta(store) -> tuple[dict, str]:
    if isinstance(store, dict):
        return store, "<meta>"
    if hasattr(store, "meta") and hasattr(store, "path"):
        return store.meta, str(store.path)
    from fastsae.store.format import read_store_json

    return read_store_json(Path(store)), str(store)


def _recorded_locations(model: dict, tok: dict):
    """(label, resolve, gguf sha256 to check or None) in the order worth trying; resolve() -> (name, kwargs)
    for AutoTokenizer.from_pretrained (it may raise: the default GGUF is fetched only when reached)."""
    source = model.get("source") or {}
    sha = model.get("gguf_sha256")

    def at(name, **kwargs):
        return lambda: (str(name), kwargs)

    def gguf_at(path):
        return lambda: (str(Path(path).parent), {"gguf_file": Path(path).name})

    if sha:
        cached = dequantized_dir(sha)
        if (cached / "tokenizer_config.json").is_file():
            yield f"the dequantised copy {cached}", at(cached), None
        if source.get("path"):
            yield source["path"], gguf_at(source["path"]), sha
        if model.get("name") == DEFAULT_MODEL:
            yield "the default model", lambda: gguf_at(default_gguf_path())(), sha
        elif str(model.get("name", "")).endswith(".gguf"):
            yield model["name"], gguf_at(Path(model["name"]).expanduser()), sha
        if tok.get("name") and model.get("gguf_file"):
            yield tok["name"], gguf_at(Path(tok["name"]) / model["gguf_file"]), sha
        return
    if source.get("kind") == "folder":
        yield source["path"], at(source["path"]), None
    elif source.get("kind") == "hub":
        revision = {"revision": source["revision"]} if source.get("revision") else {}
        yield f"hub {source['name']}", at(source["name"], **revision), None
    if model.get("name"):
        revision = model.get("commit") or model.get("revision")
        yield model["name"], at(model["name"], **({"revision": revision} if revision else {})), None
    if tok.get("name") and Path(tok["name"]).is_dir():
        yield tok["name"], at(tok["name"]), None


def load_store_tokenizer(store, *, progress: bool = False):
    """The tokenizer a store was harvested with, loaded back from its store.json (`store`: a store folder,
    an open fastsae.store Store, or its meta dict). The GGUF's sha256, the template hash and the
    vocabulary size that store.json records must match: a different tokenizer is a ModelLoadError."""
    from transformers import AutoTokenizer

    from fastsae.lm.chat import template_hash

    meta, label = _store_meta(store)
    model, tok = meta.get("model") or {}, meta.get("tokenizer") or {}
    tried: list[str] = []
    for where, resolve, sha in _recorded_locations(model, tok):
        try:
            name, kwargs = resolve()
            if sha is not None:
                gguf = Path(name, kwargs["gguf_file"])
                if not gguf.is_file():
                    raise FileNotFoundError("no such file")
                if sha256_file(gguf) != sha:
                    raise ValueError("its sha256 is not the store's gguf_sha256")
            with hf_progress(progress):
                tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
        except (OSError, ValueError) as e:
            tried.append(f"{where}: {_first_line(e)}")
            continue
        if tok.get("template_hash") and template_hash(tokenizer) != tok["template_hash"]:
            tried.append(f"{where}: another chat template or vocabulary (template_hash differs)")
        elif tok.get("vocab_size") and len(tokenizer) != tok["vocab_size"]:
            tried.append(f"{where}: {len(tokenizer)} tokens, the store says {tok['vocab_size']}")
        else:
            return tokenizer
    raise ModelLoadError(
        f"cannot load the tokenizer store {label} was harvested with; tried "
        + ("; ".join(tried) or "nothing")
    )
