"""Real `torchrun --standalone --nproc-per-node N -m fastsae ...` runs for the distributed tests (gloo on CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def torchrun_cmd(nproc: int, *args: str) -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    launcher = [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]
    return [*launcher, "--standalone", f"--nproc-per-node={nproc}", "-m", "fastsae", *args]


def rank_env() -> dict:
    """One thread per rank (CI has 2 cores), no hub, no GPU."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="")  # fmt: skip
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def torchrun(nproc: int, *args: str, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(torchrun_cmd(nproc, *args), cwd=REPO, env=rank_env(), capture_output=True,
                          text=True, timeout=timeout, **kw)  # fmt: skip


def popen(nproc: int, *args: str) -> subprocess.Popen:
    return subprocess.Popen(torchrun_cmd(nproc, *args), cwd=REPO, env=rank_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
