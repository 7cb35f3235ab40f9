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
benchmarks/README.md records what these measured and what the code used to quote.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads hurt on shared cores
# `python benchmarks/cpu_ops.py` puts benchmarks/ first on sys.path, where benchmarks/kernels.py would shadow
# the `kernels` package: import from the repository root instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

N, D_SAE, D_IN = 4096, 4608, 576  # a default-recipe batch of a d_in 576, 8x SAE
N_SMALL_DSAE = 2048  # d_in 256, 8x: 420k nonzeros at 5%


# ----------------------------------------------------------------------------------------------- timing
def timed(contenders: dict, *, rounds: int, reps: int) -> dict[str, list[float]]:
    """{name: [median seconds of `reps` calls, per round]}. A contender is fn() or (prepare, fn): prepare()'s
    result (untimed) is fn's argument. Contenders alternate within a round; one untimed warm-up call each."""
    out: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(rounds + 1):
        for name, c in contenders.items():
            prepare, fn = c if isinstance(c, tuple) else (None, c)
            times = []
            for _ in range(reps if r else 1):
                arg = prepare() if prepare else None
                t0 = time.perf_counter()
                fn(arg) if prepare else fn()
                times.append(time.perf_counter() - t0)
            if r:  # round 0 warms up
                out[name].append(statistics.median(times))
    return out


def ratio(t: dict[str, list[float]], base: str, chosen: str) -> float:
    """Median over rounds of t[base] / t[chosen] of the same round."""
    return statistics.median(a / b for a, b in zip(t[base], t[chosen], strict=True))


ROWS: list[tuple] = []


def report(name: str, where: str, t: dict, base: str, chosen: str, what: str) -> None:
    row = (name, where, what, base, chosen, statistics.median(t[base]), statistics.median(t[chosen]))
    ROWS.append((*row, ratio(t, base, chosen)))
    print(
        f"{name:15} {ratio(t, base, chosen):6.2f}x  {1e3 * row[5]:9.3f} ms {base} -> {1e3 * row[6]:9.3f} ms "
        f"{chosen}   ({where}: {what})",
        flush=True,
    )


def sparse_acts(n: int, d_sae: int, density: float, seed: int = 0) -> torch.Tensor:
    """[n, d_sae] float32, nonnegative, with about `density` nonzeros, at random places."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, d_sae, generator=g)
    return torch.where(u < density, u / density, torch.zeros(()))


# ------------------------------------------------------------------------------------- kernels/torch_plan
def bench_pick(a) -> None:
    from fastsae.kernels.torch_plan import _pick

    acts = sparse_acts(N, N_SMALL_DSAE, 0.05)
    rows, cols = acts.nonzero(as_tuple=True)
    perm = torch.argsort(cols, stable=True)  # what ActsPlan.mm_t picks rows with
    t = timed(
        {"v[idx]": lambda: rows[perm], "_pick": lambda: _pick(rows, perm)}, rounds=a.rounds, reps=a.reps
    )
    report("pick", "kernels/torch_plan.py _pick", t, "v[idx]", "_pick", f"1-D gather of {len(perm):,} int64")


def bench_sort_key(a) -> None:
    from fastsae.kernels.torch_plan import _sort_key

    acts = sparse_acts(N, N_SMALL_DSAE, 0.05)
    cols = acts.nonzero(as_tuple=True)[1]
    t = timed(
        {
            "int64": lambda: torch.argsort(cols, stable=True),
            "_sort_key": lambda: torch.argsort(_sort_key(cols, N_SMALL_DSAE), stable=True),
        },
        rounds=a.rounds,
        reps=a.reps,
    )
    what = f"stable argsort of {len(cols):,} column ids (< {N_SMALL_DSAE}), int16 conversion included"
    report("sort_key", "kernels/torch_plan.py _sort_key", t, "int64", "_sort_key", what)


def bench_take(a) -> None:
    from fastsae.kernels.torch_plan import plan_from

    m = torch.randn(N, D_SAE)
    plan = plan_from(sparse_acts(N, D_SAE, 0.05))
    plan.gather(m)  # the flat indices are computed once per plan
    t = timed(
        {"m[rows, cols]": lambda: m[plan.rows, plan.cols], "take": lambda: plan.gather(m)},
        rounds=a.rounds,
        reps=a.reps,
    )
    report("take", "kernels/torch_plan.py ActsPlan.gather", t, "m[rows, cols]", "take", "4096 x 4608 at 5%")


def bench_bag_sum(a) -> None:
    from fastsae.kernels.torch_plan import _bag_sum, _csr, plan_from

    table = torch.randn(D_SAE, D_IN)
    for density in (0.05, 0.01):
        acts = sparse_acts(N, D_SAE, density)
        plan = plan_from(acts)
        vals = plan.values(acts)
        csr = _csr(plan.crow, plan.cols, vals, acts.shape)
        t = timed(
            {
                "dense": lambda acts=acts: acts @ table,
                "sparse.mm": lambda csr=csr: torch.sparse.mm(csr, table),
                "_bag_sum": lambda p=plan, v=vals: _bag_sum(p.cols, table, p.crow, v),
            },
            rounds=a.rounds,
            reps=max(1, a.reps // 2),
        )
        what = f"4096 x 4608 at {density:.0%} times [4608, 576]"
        report(f"bag_sum {density:.0%}", "kernels/torch_plan.py _bag_sum", t, "dense", "_bag_sum", what)
        report(f"bag_sum {density:.0%}", "kernels/torch_plan.py _bag_sum", t, "sparse.mm", "_bag_sum", what)


# ------------------------------------------------------------------------------------- kernels/torch_path
def bench_float_mask(a) -> None:
    # one epilogue block (kernels/torch_path.py encoder_epilogue) of fp32 z: the mask 1[z > θ] applied to z
    g = torch.Generator().manual_seed(0)
    blk, theta = torch.randn(512, 2048, generator=g), torch.full((2048,), 1.645)  # ~5% above θ
    dz, out = torch.empty_like(blk), torch.empty_like(blk)

    def bool_mask():
        torch.sub(blk, theta, out=dz)
        torch.mul(blk, dz > 0, out=out)

    def float_mask():  # as encoder_epilogue: relu + sign in place, then a float product
        torch.sub(blk, theta, out=dz)
        torch.mul(blk, dz.relu_().sign_(), out=out)

    t = timed({"bool": bool_mask, "float 0/1": float_mask}, rounds=a.rounds, reps=a.reps * 4)
    what = "z·1[z > θ] on a 512 x 2048 fp32 block"
    report("float_mask", "kernels/torch_path.py encoder_epilogue", t, "bool", "float 0/1", what)


def bench_nonzero_bool(a) -> None:
    mask = (sparse_acts(512, 2048, 0.05) > 0).float()  # the epilogue's float 0/1 mask of one block
    t = timed(
        {
            "float.nonzero": lambda: mask.nonzero(as_tuple=True),
            "bool.nonzero": lambda: mask.bool().nonzero(as_tuple=True),
        },
        rounds=a.rounds,
        reps=a.reps * 4,
    )
    what = "pattern of a 512 x 2048 float 0/1 mask at 5%"
    report("nonzero_bool", "kernels/torch_path.py encoder_epilogue", t, "float.nonzero", "bool.nonzero", what)


def bench_sign_mask(a) -> None:
    acts = sparse_acts(N, D_SAE, 0.05)
    g = torch.randn(N, D_SAE)
    t = timed(
        {"g * (acts != 0)": lambda: g * (acts != 0), "g * acts.sign()": lambda: g * acts.sign()},
        rounds=a.rounds,
        reps=a.reps,
    )
    what = "dense grad_z, 4096 x 4608 at 5%"
    report("sign_mask", "kernels/torch_path.py encoder_grads", t, "g * (acts != 0)", "g * acts.sign()", what)


# -------------------------------------------------------------------------------------------- kernels/ops
def bench_feature_counts(a) -> None:
    from fastsae.kernels import feature_counts
    from fastsae.kernels.torch_plan import plan_from

    acts = sparse_acts(N, D_SAE, 0.05)
    planned = acts.clone()
    plan_from(planned).attach(planned)  # what the training op's encoders attach
    t = timed(
        {
            "(acts > 0).sum(0)": lambda: (acts > 0).sum(0),
            "sign pass": lambda: feature_counts(acts),
            "plan bincount": lambda: feature_counts(planned),
        },
        rounds=a.rounds,
        reps=a.reps,
    )
    where, what = "kernels/ops.py feature_counts", "4096 x 4608 at 5%"
    report("feature_counts", where, t, "(acts > 0).sum(0)", "sign pass", what + ", no plan")
    report("feature_counts", where, t, "(acts > 0).sum(0)", "plan bincount", what + ", plan attached")


# ------------------------------------------------------------------------------------------ train/mixing
def _buffer(rows: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """A bf16 mixing buffer (uint16 bits) [rows, 576] and the sorted slots of one 4096-token batch."""
    rng = np.random.default_rng(0)
    buf = rng.integers(0x3C00, 0x4000, size=(rows, D_IN), dtype=np.uint16)  # finite bf16 patterns
    return buf, np.sort(rng.choice(rows, size=N, replace=False))


def bench_gather_rows(a) -> None:
    buf, slots = _buffer()
    buf_t, idx = torch.from_numpy(buf.view(np.int16)), torch.from_numpy(slots)  # as Mixer keeps it
    out_np, out_t = np.empty((N, D_IN), np.uint16), torch.empty((N, D_IN), dtype=torch.int16)
    t = timed(
        {
            "numpy take": lambda: np.take(buf, slots, axis=0, out=out_np),
            "index_select": lambda: torch.index_select(buf_t, 0, idx, out=out_t),
        },
        rounds=a.rounds,
        reps=a.reps * 2,
    )
    what = "4096 sorted rows of a [65536, 576] bf16 buffer"
    report("gather_rows", "train/mixing.py Mixer._gather", t, "numpy take", "index_select", what)


def bench_widen(a) -> None:
    buf, slots = _buffer()
    rows = buf[slots]
    rows_t = torch.from_numpy(rows.view(np.int16))
    out = torch.empty((N, D_IN), dtype=torch.float32)

    def numpy_shift():  # train/selection.py TokenSelection.decode
        np.left_shift(rows, 16, out=out.numpy().view(np.uint32), dtype=np.uint32)

    t = timed(
        {"numpy shift": numpy_shift, "torch copy_": lambda: out.copy_(rows_t.view(torch.bfloat16))},
        rounds=a.rounds,
        reps=a.reps * 2,
    )
    what = "bf16 -> float32 of a 4096 x 576 batch (exact either way)"
    report("widen", "train/mixing.py Mixer._gather", t, "numpy shift", "torch copy_", what)


def _small_store(root: Path, *, shards: int = 8, per_shard: int = 8192) -> None:
    from fastsae.store import ShardWriter, TokenType

    rng = np.random.default_rng(0)
    seq = 0
    for k in range(shards):
        with ShardWriter(
            root, writer=0, seq=k, first_sequence=seq, layers=[9], d_model=D_IN, dtype="bfloat16",
            meta={"model": "synthetic"},
        ) as w:  # fmt: skip
            for _ in range(per_shard // 512):
                x = rng.normal(size=(512, D_IN)).astype(np.float32)
                types = np.full(512, TokenType.ASSISTANT, np.uint8)
                w.append(token_ids=np.zeros(512, np.int32), token_types=types, acts={9: x}, source=(0, seq))
                seq += 1


def bench_rows_ahead(a) -> None:
    from fastsae.store import TokenType, open_store
    from fastsae.train.mixing import AHEAD_ROWS
    from fastsae.train.selection import TokenSelection

    tmp = Path(tempfile.mkdtemp(prefix="fastsae-cpu-ops-"))
    try:
        _small_store(tmp / "store")
        sel = TokenSelection(
            open_store(tmp / "store"), layer=9, token_types=frozenset(TokenType), seed=0, chunk_tokens=4096
        )
        rng = np.random.default_rng(1)
        ahead_ids = np.sort(rng.choice(sel.num_tokens, size=AHEAD_ROWS, replace=False))  # over all 8 shards
        batches = [np.sort(b) for b in ahead_ids[rng.permutation(AHEAD_ROWS)].reshape(-1, 128)]
        block = torch.empty((AHEAD_ROWS, D_IN), dtype=torch.int16)
        out = torch.empty((128, D_IN), dtype=torch.int16)
        sel.gather_ids(ahead_ids, block)  # pages in

        def direct():  # every 128-token batch gathered from the memmaps: one index_select per shard
            for ids in batches:
                sel.gather_ids(ids, out)

        def ahead():  # as Mixer._rows_ahead: one gather of AHEAD_ROWS rows, batches cut from it
            sel.gather_ids(ahead_ids, block)
            for ids in batches:
                torch.index_select(block, 0, torch.from_numpy(np.searchsorted(ahead_ids, ids)), out=out)

        t = timed({"direct": direct, "ahead": ahead}, rounds=a.rounds, reps=a.reps)
        what = f"{len(batches)} batches of 128 tokens over 8 shards, d 576 bf16"
        report("rows_ahead", "train/mixing.py Mixer._rows_ahead", t, "direct", "ahead", what)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------ train/trainer
def _saes(d_in: int, d_sae_list, *, density: float | None, x: torch.Tensor, arch: str = "jumprelu"):
    from fastsae.saes import Arch, SAESpec, SparseAutoencoder

    out = []
    for i, d_sae in enumerate(d_sae_list):
        sae = SparseAutoencoder(SAESpec(Arch(arch), d_in, d_sae), generator=torch.Generator().manual_seed(i))
        if density is not None:  # θ at the quantile that leaves `density` of the pre-activations active
            with torch.no_grad():
                z = x[:1024] @ sae.W_enc + sae.b_enc
                sae.threshold.copy_(torch.quantile(z, 1 - density, dim=0).clamp_min(1e-3))
        out.append(sae)
    return out


def bench_adam_fused(a) -> None:
    # the optimizer of a 4-SAE sweep (benchmarks/sweep.py's default: d_in 128, expansion 4 and 8, 2 coefs)
    x = torch.randn(1024, 128)
    saes = _saes(128, (512, 512, 1024, 1024), density=None, x=x)
    for sae in saes:
        for p in sae.parameters():
            p.grad = torch.randn_like(p) * 1e-3
    opts = {
        "per-tensor loop": torch.optim.Adam([{"params": list(s.parameters())} for s in saes], lr=1e-5),
        "fused": torch.optim.Adam([{"params": list(s.parameters())} for s in saes], lr=1e-5, fused=True),
    }
    t = timed({k: o.step for k, o in opts.items()}, rounds=a.rounds, reps=a.reps * 4)
    report("adam_fused", "train/trainer.py SweepTrainer", t, "per-tensor loop", "fused", "Adam step, 4 SAEs")


def bench_sae_workers(a) -> None:
    # forward + backward of two JumpReLU SAEs at 5% density, one after another with all threads, or
    # concurrently with the threads split between them (train/trainer.py, --sae-workers)
    if torch.get_num_threads() < 2:
        print("sae_workers     skipped: needs --threads >= 2")
        return
    for d_in in (256, 576):
        _sae_workers(a, d_in)


def _sae_workers(a, d_in: int) -> None:
    threads = torch.get_num_threads()
    x = torch.randn(N, d_in)
    saes = _saes(d_in, (8 * d_in, 8 * d_in), density=0.05, x=x)

    def one(sae):
        sae.training_forward(x, sparsity_coef=1e-3).loss.backward()

    def sequential():
        for sae in saes:
            one(sae)

    def concurrent():
        torch.set_num_threads(max(1, threads // len(saes)))
        try:
            list(pool.map(one, saes))
        finally:
            torch.set_num_threads(threads)

    with ThreadPoolExecutor(len(saes)) as pool:
        t = timed(
            {"sequential": sequential, "concurrent": concurrent}, rounds=a.rounds, reps=max(1, a.reps // 4)
        )
    what = f"fwd+bwd of 2 JumpReLU SAEs, d_in {d_in} 8x, batch 4096, 5%, {threads} threads"
    report(f"sae_workers {d_in}", "train/trainer.py SweepTrainer.run", t, "sequential", "concurrent", what)


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
        buf, slots = _buffer()
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
            cmd = [sys.executable, __file__, "--worker", "--only", ",".join(names), "--reps", str(a.reps)]
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
