"""Checkpoints: one safetensors file holding every tensor of a run plus its JSON state, written atomically.

A checkpoint is a single file, so it is either the old one or the new one, never half of each:
it is written to a temporary name in the same folder, fsynced, then os.replace'd over the old one.
No pickle anywhere: tensors go into safetensors, everything else (step, reader position, schedule,
RNG state as a uint8 tensor, optimizer hyper-parameters) into JSON stored in the file's metadata.

`pack` turns a nested state (dicts, lists, numbers, strings, torch tensors, numpy arrays) into a JSON
skeleton plus a flat {key: tensor} map; `unpack` inverts it (numpy arrays come back as numpy arrays).
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from fastsae.atomic import fsync_dir
from fastsae.train.config import TrainError

STATE_KEY = "fastsae_state"
FORMAT_VERSION = 1


class CheckpointError(TrainError, ValueError):
    """A checkpoint file that cannot be read back (damaged or from another version)."""


def pack(obj, tensors: dict[str, torch.Tensor] | None = None, prefix: str = "t"):
    """(JSON skeleton, tensors) for a nested state; tensors/arrays are replaced by {"__tensor__": key}."""
    tensors = {} if tensors is None else tensors
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}.{len(tensors)}"
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": key}, tensors
    if isinstance(obj, np.ndarray):
        key = f"{prefix}.{len(tensors)}"
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj).copy())
        return {"__ndarray__": key}, tensors
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):  # optimizer state uses int keys
                out.setdefault("__int_keys__", True)
                k = str(k)
            out[k], _ = pack(v, tensors, prefix)
        return out, tensors
    if isinstance(obj, (list, tuple)):
        return [pack(v, tensors, prefix)[0] for v in obj], tensors
    if isinstance(obj, np.generic):
        return obj.item(), tensors
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj, tensors
    raise TypeError(f"cannot checkpoint a value of type {type(obj).__name__}")


def unpack(obj, tensors: dict[str, torch.Tensor]):
    """Inverse of :func:`pack`."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            return tensors[obj["__ndarray__"]].numpy()
        int_keys = obj.get("__int_keys__", False)
        return {
            (int(k) if int_keys else k): unpack(v, tensors) for k, v in obj.items() if k != "__int_keys__"
        }
    if isinstance(obj, list):
        return [unpack(v, tensors) for v in obj]
    return obj


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write `state` (any nesting of JSON values, tensors, arrays) to `path` atomically."""
    path = Path(path)
    skeleton, tensors = pack(state)
    meta = {STATE_KEY: json.dumps({"format_version": FORMAT_VERSION, "state": skeleton})}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)  # the previous checkpoint, untouched, stays the resume point
        full = isinstance(e, OSError) and e.errno == errno.ENOSPC
        if full or (isinstance(e, SafetensorError) and "os error 28" in str(e)):  # safetensors': no errno
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None  # named: not its temp
        raise
    fsync_dir(path.parent)


def load_checkpoint(path: str | Path, *, device: torch.device | str = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on `device`)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        doc = json.loads(meta[STATE_KEY])
    except (OSError, KeyError, ValueError, RuntimeError, SafetensorError) as e:
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({e}); delete it to restart the run"
        ) from None
    if doc.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {doc.get('format_version')}, expected {FORMAT_VERSION}"
        )
    return unpack(doc["state"], tensors)


TMP_PATTERNS = (".*.tmp-*", "*.tmp", ".*.tmp.*")  # checkpoint, run.json; metrics.jsonl, SAE json; curves.png


def clean_tmp(folder: str | Path) -> None:
    """Remove the temporary files a killed or failed run left behind in its --out folder and its SAE folders."""
    folder = Path(folder)
    for d in (folder, *(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())):
        for pattern in TMP_PATTERNS:
            for p in d.glob(pattern):
                if p.is_file() or p.is_symlink():
                    p.unlink(missing_ok=True)
