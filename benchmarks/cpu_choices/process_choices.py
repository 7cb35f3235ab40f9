"""cpu_ops.py's measurements of process-wide settings, each in subprocesses: OMP_WAIT_POLICY (harvest/cli.py),
and the allocator-sensitive choices (host memory reuse, the gather scratch, epilogue blocks) in workers run
with train/host_memory.py's setting and with glibc's defaults, alternating round by round."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks.cpu_choices.timing import D_IN, D_SAE, N, report, timed
from benchmarks.cpu_choices.train_choices import mixing_buffer

CPU_OPS = Path(__file__).resolve().parents[1] / "cpu_ops.py"  # the worker subprocesses run it with --worker


# ------------------------------------------------------------------------------------------- harvest/cli
# Parallel torch ops with serial Python between them, as a harvest or train loop runs; run with `python -c`
# so that nothing sets OMP_WAIT_POLICY but the parent (libgomp reads it once, when torch loads).
OMP_WORKER = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
a = torch.randn(1 << 20); b = torch.empty_like(a)
t0 = time.perf_counter()
for _ in range(int(sys.argv[2])):
    torch.add(a, 1.0, out=b)
    s = sum(range(3000))
print(time.perf_counter() - t0)
"""


def bench_omp_wait(a) -> None:
    # two such processes at once on the same cores, each with --threads threads: libgomp's default policy
    # (spin a while after each parallel region) vs OMP_WAIT_POLICY=PASSIVE (sleep at once)
    t: dict[str, list[float]] = {"default": [], "PASSIVE": []}
    for _ in range(a.rounds):
        for policy in t:
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            if policy == "PASSIVE":
                env["OMP_WAIT_POLICY"] = policy
            cmd = [sys.executable, "-c", OMP_WORKER, str(a.threads), "150"]
            procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
            t[policy].append(max(float(p.communicate()[0]) for p in procs))
    what = f"2 processes x {a.threads} threads at once, 150 parallel adds with Python between them"
    report("omp_wait", "harvest/cli.py (and tests/conftest.py)", t, "default", "PASSIVE", what)


# --------------------------------------------------------------- allocator-sensitive (worker subprocesses)
def worker(a) -> None:
    """Median seconds of each allocator-sensitive contender in this process, as one JSON line."""
    from fastsae.kernels import torch_path

    if not a.glibc_defaults:
        from fastsae.train.host_memory import reuse_freed_host_memory

        reuse_freed_host_memory()
    torch.set_num_threads(a.threads)
    only = set(a.only.split(","))
    contenders = {}
    if "host_block" in only:  # a fresh [4096, 4608] float32 temporary, as a CPU train step makes several of
        contenders["zeros"] = lambda: torch.zeros(N, D_SAE)
    if "scratch" in only:  # Mixer._gather's bf16 rows: into a reused scratch block or a fresh result
        buf, slots = mixing_buffer()
        buf_t, idx = torch.from_numpy(buf.view(np.int16)), torch.from_numpy(slots)
        scratch = torch.empty((N, D_IN), dtype=torch.int16)
        contenders["fresh"] = lambda: torch.index_select(buf_t, 0, idx)
        contenders["scratch"] = lambda: torch.index_select(buf_t, 0, idx, out=scratch)
    if "epilogue" in only:  # encoder_epilogue (JumpReLU) of a 4096 x 4608 fp32 z at 5%: blocks vs one block
        g = torch.Generator().manual_seed(0)
        z0, theta = torch.randn(N, D_SAE, generator=g), torch.full((D_SAE,), 1.645)
        blocked = torch_path.EPILOGUE_BLOCK_BYTES

        def run(z, block_bytes):
            torch_path.EPILOGUE_BLOCK_BYTES = block_bytes
            try:
                torch_path.encoder_epilogue(z, theta, 0.05)
            finally:
                torch_path.EPILOGUE_BLOCK_BYTES = blocked

        contenders["whole"] = (z0.clone, lambda z: run(z, 1 << 62))
        contenders["blocks"] = (z0.clone, lambda z: run(z, blocked))
    t = timed(contenders, rounds=1, reps=a.reps)
    print(json.dumps({k: v[0] for k, v in t.items()}))


def bench_allocator(a, names: list[str]) -> None:
    modes = {"reuse": [], "glibc": []}
    for _ in range(a.rounds):
        for mode in modes:
            cmd = [sys.executable, str(CPU_OPS), "--worker", "--only", ",".join(names), "--reps", str(a.reps)]
            cmd += ["--threads", str(a.threads)] + (["--glibc-defaults"] if mode == "glibc" else [])
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            modes[mode].append(json.loads(res.stdout.strip().splitlines()[-1]))

    def series(mode, key):
        return [r[key] for r in modes[mode]]

    if "host_block" in names:
        t = {"glibc fresh": series("glibc", "zeros"), "reused": series("reuse", "zeros")}
        what = "torch.zeros(4096, 4608) float32 (75 MB), glibc's defaults vs reuse_freed_host_memory"
        report("host_block", "train/host_memory.py", t, "glibc fresh", "reused", what)
    if "scratch" in names:
        for mode in modes:
            t = {"fresh": series(mode, "fresh"), "scratch": series(mode, "scratch")}
            what = f"4096 x 576 bf16 rows gathered into a fresh result or a reused block ({mode} allocator)"
            report(f"scratch {mode}", "train/mixing.py Mixer._gather", t, "fresh", "scratch", what)
    if "epilogue" in names:
        for mode in modes:
            t = {"whole": series(mode, "whole"), "blocks": series(mode, "blocks")}
            what = (
                f"encoder_epilogue, 4096 x 4608 fp32 at 5%, 4 MiB row blocks vs one block ({mode} allocator)"
            )
            report(
                f"epilogue {mode}", "kernels/torch_path.py EPILOGUE_BLOCK_BYTES", t, "whole", "blocks", what
            )
