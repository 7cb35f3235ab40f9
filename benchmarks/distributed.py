"""Benchmark: harvest and training under torchrun with N ranks against one process, on the same work.

Each side is a real command line in a subprocess (`python -m fastsae ...` vs `torchrun --standalone
--nproc-per-node N -m fastsae ...`), so process start, imports and the rendezvous count; harvest also reports
its own rate after model loading (the summary line's tok/s: rank 0 counts every rank's tokens over the
slowest rank's time). Printed per case: the one-process time, the N-rank time, speedup = t1 / tN and
efficiency = speedup / N, per round and as medians over --rounds.

    python benchmarks/distributed.py                                  # CPU: 2 ranks (reported, no goal on 2 cores)
    python benchmarks/distributed.py --device cuda --nproc 8 --model HuggingFaceTB/SmolLM2-135M-Instruct \
        --limit 4000 --d 576 --tokens 20000000 --batch-size 4096        # a GPU machine: one rank per GPU

Cases: harvest (conversations over the ranks), train-sweep (4 SAEs, --parallel sweep), train-data (1 SAE,
--parallel data). On the CPU each rank gets cores / N threads (fastsae.lm.devices.set_threads), so both sides
use the same cores. The harvest model defaults to a tiny random Llama (tests/_tiny_models.py) on the shipped
demo chats; a real model shows the forward-bound case.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

REPO = _HERE.parent


def _env() -> dict:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", TOKENIZERS_PARALLELISM="false")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _launch(nproc: int, args: list[str]) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "fastsae", *args]
    exe = Path(sys.executable).with_name("torchrun")
    launcher = [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]
    return [*launcher, "--standalone", f"--nproc-per-node={nproc}", "-m", "fastsae", *args]


def _run(nproc: int, args: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    r = subprocess.run(_launch(nproc, args), cwd=REPO, env=_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(_launch(nproc, args))} failed:\n{r.stderr[-3000:]}")
    return seconds, r.stdout + r.stderr


def _tiny_model(root: Path) -> str:
    from tests._tiny_models import save_tiny_model, tiny_tokenizer

    return str(save_tiny_model("llama", root / "tiny-llama", tiny_tokenizer("llama")))


def harvest_case(a, work: Path, nproc: int, model: str) -> tuple[float, float]:
    out = work / f"harvest-{nproc}"
    shutil.rmtree(out, ignore_errors=True)
    args = ["harvest", "--out", str(out), "--model", model, "--layers", str(a.layer), "--device", a.device,
            "--no-progress", "--shard-tokens", "64k"]  # fmt: skip
    if a.limit:
        args += ["--limit", str(a.limit)]
    for d in a.data:
        args += ["--data", d]
    seconds, text = _run(nproc, args)
    m = re.search(r"\((\d+) tok/s after", text)
    return seconds, float(m.group(1)) if m else float("nan")


def train_case(a, work: Path, nproc: int, store: Path, mode: str) -> float:
    out = work / f"train-{mode}-{nproc}"
    shutil.rmtree(out, ignore_errors=True)
    k = "16,24,32,48" if mode == "sweep" else "32"
    args = ["train", "--store", str(store), "--layer", "9", "--out", str(out), "--arch", "topk", "--k", k,
            "--expansion", str(a.expansion), "--batch-size", str(a.batch_size), "--tokens", str(a.tokens),
            "--device", a.device, "--parallel", mode, "--no-progress", "--eval-every", "0",
            "--checkpoint-every", "0", "--log-every", "50"]  # fmt: skip
    return _run(nproc, args)[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nproc", type=int, default=2, help="ranks of the torchrun side")
    p.add_argument("--device", default="cpu", help="cpu, or cuda (one GPU per rank)")
    p.add_argument("--cases", default="harvest,train-sweep,train-data")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument(
        "--model", default="tiny", help="harvest model: 'tiny' (a random tiny Llama) or a name/path"
    )
    p.add_argument("--data", action="append", default=[], help="harvest data (default: the demo chats)")
    p.add_argument("--limit", type=int, default=0, help="harvest at most this many conversations (0: all)")
    p.add_argument("--layer", type=int, default=1, help="harvest layer")
    p.add_argument("--d", type=int, default=64, help="train: d_in of the synthetic store")
    p.add_argument("--expansion", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--tokens", type=int, default=1024 * 100, help="train: tokens per SAE")
    a = p.parse_args()
    cases = a.cases.split(",")
    work = Path(tempfile.mkdtemp(prefix="fastsae-dist-"))
    try:
        model = _tiny_model(work) if a.model == "tiny" and "harvest" in cases else a.model
        store = work / "store"
        if any(c.startswith("train") for c in cases):
            from benchmarks.sweep import build_store

            build_store(store, d=a.d, tokens=max(a.tokens // 2, 200_000))
        print(f"device {a.device}, {a.nproc} ranks vs 1 process, {os.cpu_count()} CPUs visible")
        for case in cases:
            ones, ns, rates = [], [], []
            for r in range(a.rounds):
                if case == "harvest":
                    (t1, r1), (tn, rn) = (
                        harvest_case(a, work, 1, model),
                        harvest_case(a, work, a.nproc, model),
                    )
                    rates.append((r1, rn))
                else:
                    mode = case.split("-")[1]
                    t1, tn = train_case(a, work, 1, store, mode), train_case(a, work, a.nproc, store, mode)
                ones.append(t1)
                ns.append(tn)
                extra = f"  tok/s after loading {rates[-1][0]:.0f} -> {rates[-1][1]:.0f}" if rates else ""
                print(f"{case:12s} round {r}: 1 process {t1:6.1f}s  {a.nproc} ranks {tn:6.1f}s  "
                      f"speedup {t1 / tn:4.2f}  efficiency {t1 / tn / a.nproc:4.2f}{extra}")  # fmt: skip
            t1, tn = statistics.median(ones), statistics.median(ns)
            print(f"{case:12s} median : speedup {t1 / tn:4.2f}  efficiency {t1 / tn / a.nproc:4.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
