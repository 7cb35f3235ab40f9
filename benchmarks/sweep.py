"""Benchmark: a sweep of 4 SAEs trained in ONE pass over the data vs the same 4 SAEs trained one at a time.

Prints  ratio = time(4 SAEs, one pass) / (sum of the 4 single runs' times)   (goal ≤ 0.5; 0.25 is the floor
when reading dominates, 1.0 when the SAE arithmetic dominates), per round and as the median of --rounds. Both sides are full `train_saes` runs (store
open, reader, init sample, held-out evals, checkpoints, saving), measured in the same process on the same store,
a synthetic bf16 store built first with store.ShardWriter.

    python benchmarks/sweep.py                      # CPU-friendly defaults
    python benchmarks/sweep.py --d 576 --expansion 8,16 --batch-size 4096 --tokens 4096000 --device cuda
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# `python benchmarks/sweep.py` puts benchmarks/ first on sys.path, where benchmarks/kernels.py would shadow
# the `kernels` package: import from the repository root instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))


def build_store(root: Path, *, d: int, tokens: int, seed: int = 0) -> None:
    from fastsae.store import ShardWriter, TokenType

    rng = np.random.default_rng(seed)
    n_feat = 8 * d
    dirs = rng.normal(size=(n_feat, d)).astype(np.float32)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    written, seq, shard = 0, 0, 0
    while written < tokens:
        with ShardWriter(
            root,
            writer=0,
            seq=shard,
            first_sequence=seq,
            layers=[9],
            d_model=d,
            dtype="bfloat16",
            meta={"model": "synthetic"},
        ) as w:
            while w.num_tokens < 1 << 18 and written < tokens:
                t = int(rng.integers(64, 1024))
                idx = rng.integers(0, n_feat, size=(t, 8))
                x = (dirs[idx] * rng.exponential(2.0, size=(t, 8, 1))).sum(1).astype(np.float32)
                types = np.full(t, TokenType.ASSISTANT, np.uint8)
                types[0] = TokenType.SPECIAL
                w.append(token_ids=np.zeros(t, np.int32), token_types=types, acts={9: x}, source=(0, seq))
                written += t
                seq += 1
        shard += 1


def timed_run(cfg) -> tuple[float, float]:
    """(wall seconds, process CPU seconds incl. the reader thread) of one full run."""
    from fastsae.train.trainer import train_saes

    t0, c0 = time.perf_counter(), time.process_time()
    train_saes(cfg)
    return time.perf_counter() - t0, time.process_time() - c0


def read_only(cfg) -> tuple[float, float]:
    """The data cost alone: the same reader, the same number of batches, no SAE."""
    import torch

    from fastsae.train.run import plan_run
    from fastsae.train.trainer import make_reader, pick_device

    plan = plan_run(cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    reader = make_reader(plan, batch_size=cfg.batch_size, device=pick_device(cfg.device))
    for _ in range(cfg.tokens // cfg.batch_size):
        x = next(reader)
    if x.is_cuda:
        torch.cuda.synchronize()
    reader.close()
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--expansion", default="4,8", help="two values; x two sparsity coefs = 4 SAEs")
    ap.add_argument("--sparsity-coef", default="0.003,0.01")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--tokens", type=int, default=1024 * 150)
    ap.add_argument("--store-tokens", type=int, default=300_000)
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="torch CPU threads (all cores by default): a single run uses them all inside each op; the sweep"
        " splits them between SAEs stepped concurrently (--sae-workers auto)",
    )
    ap.add_argument(
        "--rounds", type=int, default=3, help="rounds of (4 singles + the sweep); the median ratio is kept"
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    from fastsae.train.config import TrainConfig

    expansions = tuple(int(v) for v in a.expansion.split(","))
    coefs = tuple(float(v) for v in a.sparsity_coef.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="fastsae-bench-"))
    try:
        t0 = time.perf_counter()
        build_store(tmp / "store", d=a.d, tokens=a.store_tokens)
        print(f"store: {a.store_tokens:,} tokens, d={a.d}, bf16 ({time.perf_counter() - t0:.1f}s to build)")
        common = dict(
            store=str(tmp / "store"),
            layer=9,
            arch=("jumprelu",),
            tokens=a.tokens,
            batch_size=a.batch_size,
            device=a.device,
            progress=False,
            log_every=50,
            eval_every=0,
            checkpoint_every=0,
            holdout=0.01,
            eval_tokens=8192,
            buffer_tokens=1 << 16,
        )
        timed_run(
            TrainConfig(
                out=str(tmp / "warmup"),
                **{**common, "tokens": a.batch_size * 2},
                expansion=(expansions[0],),
                sparsity_coef=(coefs[0],),
            )
        )  # imports, allocator
        ratios = []
        for r in range(a.rounds):
            # a round = the 4 single runs and the sweep, back to back (the sweep first in odd rounds), so that a
            # change of load on a shared machine hits both sides of that round's ratio alike
            def singles(r=r):
                out = []
                for e in expansions:
                    for c in coefs:
                        cfg = TrainConfig(
                            out=str(tmp / f"r{r}-single-x{e}-sc{c}"),
                            expansion=(e,),
                            sparsity_coef=(c,),
                            **common,
                        )
                        out.append(timed_run(cfg))
                        print(
                            f"  round {r}  single  jumprelu x{e} λ={c}: {out[-1][0]:7.2f} s wall  {out[-1][1]:7.2f} s cpu"
                        )
                return out

            def sweep(r=r):
                cfg = TrainConfig(
                    out=str(tmp / f"r{r}-sweep"), expansion=expansions, sparsity_coef=coefs, **common
                )
                out = timed_run(cfg)
                print(f"  round {r}  sweep   4 SAEs in one pass:   {out[0]:7.2f} s wall  {out[1]:7.2f} s cpu")
                return out

            if r % 2:
                wall, cpu = sweep()
                one = singles()
            else:
                one = singles()
                wall, cpu = sweep()
            sw, sc = sum(w for w, _ in one), sum(c for _, c in one)
            ratios.append((wall / sw, cpu / sc))
            print(f"  round {r}: sweep / 4 singles = {ratios[-1][0]:.3f} wall, {ratios[-1][1]:.3f} cpu")
        rwall, rcpu = read_only(
            TrainConfig(out=str(tmp / "read"), expansion=expansions, sparsity_coef=coefs, **common)
        )
        print(f"  reader alone (same batches):  {rwall:7.2f} s wall  {rcpu:7.2f} s cpu")
        steps = a.tokens // a.batch_size
        print(f"{steps} steps x {a.batch_size} tokens, d={a.d}, device={a.device}, threads={a.threads}")
        print(
            f"ratio sweep / 4 singles (median of {a.rounds} rounds) = "
            f"{statistics.median(w for w, _ in ratios):.3f} wall, {statistics.median(c for _, c in ratios):.3f} cpu"
            "  (goal <= 0.5)"
        )
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
