"""The features artifact on disk (interp/FEATURES.md): write it, read it back, get a feature's contexts.

`fastsae features` writes it; `judge`, `dashboard` and `steer` read it through `FeatureArtifact`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from fastsae.atomic import atomic_path, write_json_atomic
from fastsae.errors import InputError

FORMAT = "fastsae-features"
VERSION = 2  # 2: the logit view (logit_* tensors, features.json's `logits`)
READABLE = (1, 2)  # a version 1 folder reads as one without the logit view
META_FILE = "features.json"
TENSOR_FILE = "features.safetensors"
SPECIAL_FILE = "special_tokens.json"
OUTSIDE_TYPE = 255  # token type of a window slot outside the sequence

CONTEXT_KINDS = {"top": "top", "quantile": "q"}  # kind -> tensor prefix
CONTEXT_FIELDS = ("act", "seq", "pos", "ids", "types", "acts")
LOGIT_TENSORS = ("logit_pos_ids", "logit_pos", "logit_neg_ids", "logit_neg")


class FeatureArtifactError(InputError):
    """A features folder that is missing, of another format, or inconsistent."""


@dataclass(frozen=True)
class Context:
    """One activating token of one feature and the window of tokens around it."""

    feature: int
    seq: int  # store sequence index
    pos: int  # position of the activating token in the sequence
    act: float  # the feature's activation there
    ids: np.ndarray  # [n] int32 window token ids, outside-sequence slots dropped
    types: np.ndarray  # [n] uint8
    acts: np.ndarray  # [n] float32 the feature's activation on each window token
    center: int  # index of the activating token inside the window arrays


class FeatureArtifact:
    """A features folder, loaded: `meta` (features.json) and the tensors of features.safetensors."""

    def __init__(self, path: Path, meta: dict, tensors: dict[str, np.ndarray]):
        self.path = path
        self.meta = meta
        self.tensors = tensors

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureArtifact:
        path = Path(path)
        meta_path, tensor_path = path / META_FILE, path / TENSOR_FILE
        if not meta_path.is_file() or not tensor_path.is_file():
            raise FeatureArtifactError(
                f"{path}: not a features folder (no {META_FILE} / {TENSOR_FILE}; run `fastsae features`)"
            )
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise FeatureArtifactError(f"{meta_path}: unreadable ({e})") from e
        if meta.get("format") != FORMAT or meta.get("version") not in READABLE:
            raise FeatureArtifactError(
                f"{meta_path}: format {meta.get('format')!r} version {meta.get('version')!r}; "
                f"this fastsae reads {FORMAT!r} versions {', '.join(map(str, READABLE))}"
            )
        tensors = load_file(str(tensor_path))
        art = cls(path, meta, tensors)
        art._check()
        return art

    def _check(self) -> None:
        F = self.d_sae
        for name, t in self.tensors.items():
            if t.shape[0] != F:
                raise FeatureArtifactError(
                    f"{self.path / TENSOR_FILE}: {name} has {t.shape[0]} rows, d_sae is {F}"
                )

    @property
    def d_sae(self) -> int:
        return int(self.meta["sae"]["d_sae"])

    @property
    def window(self) -> int:
        return int(self.meta["window"])

    @property
    def token_type_names(self) -> dict[int, str]:
        return {int(k): v for k, v in self.meta["token_types"].items()}

    def live(self) -> np.ndarray:
        """Ids of the features that fired at least once."""
        return np.flatnonzero(self.tensors["dead"] == 0)

    def contexts(self, feature: int, kind: str = "top") -> list[Context]:
        """The stored contexts of one feature, strongest first for "top", weakest first for "quantile"."""
        if not 0 <= feature < self.d_sae:
            raise FeatureArtifactError(f"feature {feature} is outside 0..{self.d_sae - 1}")
        p = CONTEXT_KINDS[kind]
        t = {f: self.tensors[f"{p}_{f}"][feature] for f in CONTEXT_FIELDS}
        out = []
        for j in range(len(t["seq"])):
            if t["seq"][j] < 0:
                continue
            inside = t["types"][j] != OUTSIDE_TYPE
            center = int(inside[: self.window].sum())
            out.append(
                Context(
                    feature=feature,
                    seq=int(t["seq"][j]),
                    pos=int(t["pos"][j]),
                    act=float(t["act"][j]),
                    ids=t["ids"][j][inside].astype(np.int32),
                    types=t["types"][j][inside].astype(np.uint8),
                    acts=t["acts"][j][inside].astype(np.float32),
                    center=center,
                )
            )
        return out

    @property
    def has_logits(self) -> bool:
        """Whether the run computed the logit view (not with --no-logits, nor before version 2)."""
        return all(name in self.tensors for name in LOGIT_TENSORS)

    def logits(self, feature: int) -> dict[str, np.ndarray] | None:
        """A feature's logit view: `pos_ids`, `pos` (largest effects, descending) and `neg_ids`, `neg`
        (smallest, ascending); None when the run did not compute it."""
        if not self.has_logits:
            return None
        return {name[len("logit_") :]: self.tensors[name][feature] for name in LOGIT_TENSORS}

    def special_table(self) -> dict | None:
        """special_tokens.json, or None when the run did not make one."""
        p = self.path / SPECIAL_FILE
        return json.loads(p.read_text()) if p.is_file() else None


def write_artifact(path: str | os.PathLike, meta: dict, tensors: dict[str, np.ndarray]) -> Path:
    """Write features.safetensors, then features.json last: a folder with a json is complete."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "version": VERSION, **meta}
    (path / META_FILE).unlink(missing_ok=True)  # an older run's json must not vouch for the new tensors
    with atomic_path(path / TENSOR_FILE) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp))
        os.chmod(tmp, 0o644)  # safetensors creates it 0600; the folder is meant to be shared
    write_json_atomic(path / META_FILE, meta)
    return path
