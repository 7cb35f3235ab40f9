"""CPU micro-choices of kernels/ and train/, each timed against its baseline in the same run.

    python benchmarks/cpu_ops.py [--rounds 5] [--reps 5] [--threads N] [--only pick,sort_key,...] [--list]

Every measurement is a choice the code makes for speed on CPU, timed against what it replaced (or the obvious
alternative), with the project's own functions where it has them. Contenders alternate within a round, so a
change of load on a shared machine hits both alike; the time of a contender in a round is the median of --reps
calls, and the printed ratio (baseline ÷ chosen: > 1 means the choice is faster) is the median over --rounds
of the per-round ratios. Absolute ms are printed too, but only the ratios compare across machines and loads.

The process keeps freed host memory for reuse (train/host_memory.py), as `fastsae train` does on CPU. The
allocator-sensitive choices (host_block, scratch, epilogue) run in worker subprocesses, one with that
setting and one with glibc's defaults, alternating round by round.

Names (see --list): pick, sort_key, take, bag_sum, float_mask, nonzero_bool, sign_mask, feature_counts,
gather_rows, widen, rows_ahead, adam_fused, sae_workers, omp_wait, host_block, scratch, epilogue.
omp_wait keeps the cores busy spinning for a few seconds a round (that is what it measures).
benchmarks/README.md records what these measured and what the code used to quote. The measurements
themselves are in benchmarks/cpu_choices/ (kernels/, train/, process-wide settings, the timing harness).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads hurt on shared cores
# `python benchmarks/cpu_ops.py` puts benchmarks/ first on sys.path, where benchmarks/kernels.py would shadow
# the `kernels` package: import from the repository root instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import torch  # noqa: E402

from benchmarks.cpu_choices.kernel_choices import (  # noqa: E402
    bench_bag_sum,
    bench_feature_counts,
    bench_float_mask,
    bench_nonzero_bool,
    bench_pick,
    bench_sign_mask,
    bench_sort_key,
    bench_take,
)
from benchmarks.cpu_choices.process_choices import bench_allocator, bench_omp_wait, worker  # noqa: E402
from benchmarks.cpu_choices.timing import ROWS  # noqa: E402
from benchmarks.cpu_choices.train_choices import (  # noqa: E402
    bench_adam_fused,
    bench_gather_rows,
    bench_rows_ahead,
    bench_sae_workers,
    bench_widen,
)

BENCHES = {
    "pick": bench_pick,
    "sort_key": bench_sort_key,
    "take": bench_take,
    "bag_sum": bench_bag_sum,
    "float_mask": bench_float_mask,
    "nonzero_bool": bench_nonzero_bool,
    "sign_mask": bench_sign_mask,
    "feature_counts": bench_feature_counts,
    "gather_rows": bench_gather_rows,
    "widen": bench_widen,
    "rows_ahead": bench_rows_ahead,
    "adam_fused": bench_adam_fused,
    "sae_workers": bench_sae_workers,
    "omp_wait": bench_omp_wait,
}
ALLOCATOR = ("host_block", "scratch", "epilogue")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="rounds; the median per-round ratio is printed")
    ap.add_argument("--reps", type=int, default=5, help="calls per contender and round (median kept)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch CPU threads")
    ap.add_argument("--only", default=",".join([*BENCHES, *ALLOCATOR]), help="comma-separated names")
    ap.add_argument("--list", action="store_true", help="list the names and exit")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--glibc-defaults", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)
    names = [n.strip() for n in a.only.split(",") if n.strip()]
    if a.list:
        print("\n".join([*BENCHES, *ALLOCATOR]))
        return
    unknown = sorted(set(names) - set(BENCHES) - set(ALLOCATOR))
    if unknown:
        ap.error(f"unknown --only name(s) {', '.join(unknown)}; see --list")
    from fastsae.train.host_memory import reuse_freed_host_memory

    reuse_freed_host_memory()  # as `fastsae train` on CPU
    torch.set_num_threads(a.threads)
    os.environ.setdefault("FASTSAE_KERNELS", "torch")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {a.rounds} rounds x {a.reps} reps; "
        "ratio = baseline / chosen (median of per-round ratios)\n"
    )
    for name in names:
        if name in BENCHES:
            BENCHES[name](a)
    if any(n in ALLOCATOR for n in names):
        bench_allocator(a, [n for n in names if n in ALLOCATOR])
    if a.json:
        keys = ("name", "where", "what", "baseline", "chosen", "baseline_s", "chosen_s", "ratio")
        a.json.write_text(json.dumps([dict(zip(keys, r, strict=True)) for r in ROWS], indent=1) + "\n")


if __name__ == "__main__":
    main()
