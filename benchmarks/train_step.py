"""Train-step throughput (tokens/s) on CPU: fastsae vs naive torch vs the dense-matmul roofline (vs SAELens).

One step = forward, losses, backward, decoder parallel-grad removal, Adam step, decoder renorm (SAELens: its
training_forward_pass, firing stats, backward, grad-norm clipping, Adam step — what its SAETrainer._train_step does).
All contenders see the same activations and the same weights, set to a target activation density first
(per-feature threshold, or b_enc shift for Standard, at the quantile that leaves that fraction of z active).

- naive: the same math written plainly in torch (dense matmuls, autograd, a custom STE Function for JumpReLU).
- roofline: the six plain matmuls of those shapes (fwd + both bwd products of encoder and decoder:
  12·N·d_in·d_sae FLOPs), timed in the same run; "roofline tokens/s" = N / their time.
- SAELens: measured when `sae_lens` is importable (run this script with a throwaway venv's python; see
  tests/test_export_saelens.py), twice: with the same allocator setting as fastsae (host memory reuse,
  train/host_memory.py: the kernels' own margin) and "as shipped", under glibc's ordinary steady state, which
  page-faults every fresh block over 32 MiB (what a user of SAELens gets).

    python benchmarks/train_step.py                      # all cores (2 here), d_in 576 and 256, 8x, batch 4096
    python benchmarks/train_step.py --shapes 256 --densities 0.05 --steps 3
    FASTSAE_KERNELS_SPARSE=never python benchmarks/train_step.py --densities 0.01   # kernels' dense path only
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads hurt on shared cores
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from fastsae.saes import Arch, SAESpec, SparseAutoencoder  # noqa: E402
from fastsae.train.host_memory import reuse_freed_host_memory  # noqa: E402

LR, EPS = 5e-5, 0.05


def glibc_steady_state() -> None:
    """glibc's allocator as an ordinary process sees it after warm-up (what SAELens runs with): blocks up to
    32 MiB reused from the heap (its dynamic mmap threshold climbs to that cap), larger ones mmapped fresh on
    every allocation, heap trimmed above 64 MiB. Undoes train/host_memory.py's setting until it is re-applied."""
    mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    mallopt(-4, 65536)  # M_MMAP_MAX: glibc's default
    mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: the dynamic threshold's cap
    mallopt(-1, 64 << 20)  # M_TRIM_THRESHOLD: twice it, as glibc's dynamic rule keeps it


def _time(fns: dict, steps: int, warmup: int = 1, *, default_alloc=()) -> dict[str, list[float]]:
    """Seconds of each call of each fn, per round: the fns are called round-robin, so that a change of load on
    this shared machine hits all of them alike (and per-round ratios cancel most of it, see _ratio).
    The fns named in default_alloc run under glibc's steady state, the others with host memory reuse."""
    fns = {k: f for k, f in fns.items() if f is not None}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for rep in range(warmup + steps):
        for k, f in fns.items():
            if k in default_alloc:
                glibc_steady_state()
            else:
                reuse_freed_host_memory(force=True)
            t0 = time.perf_counter()
            f()
            if rep >= warmup:
                times[k].append(time.perf_counter() - t0)
    reuse_freed_host_memory(force=True)
    return times


def _median(times: dict[str, list[float]], k: str) -> float:
    return statistics.median(times[k]) if times.get(k) else float("nan")


def _ratio(times: dict[str, list[float]], slow: str, fast: str) -> float:
    """Median over rounds of time[slow] / time[fast] measured in the same round."""
    if not times.get(slow) or not times.get(fast):
        return float("nan")
    return statistics.median(a / b for a, b in zip(times[slow], times[fast], strict=True))


def calibrate(sae: SparseAutoencoder, x: torch.Tensor, density: float | None) -> None:
    """Set θ (JumpReLU) or shift b_enc (Standard) so that a fraction `density` of x's pre-activations is active."""
    if density is None:
        return
    with torch.no_grad():
        z = x[:1024] @ sae.W_enc + sae.b_enc
        q = torch.quantile(z, 1 - density, dim=0)  # [d_sae]
        if sae.spec.arch == Arch.JUMPRELU:
            sae.threshold.copy_(q.clamp_min(1e-3))
        else:
            sae.b_enc.sub_(q)


def fastsae_step(sae: SparseAutoencoder, x: torch.Tensor, lam: float):
    opt = torch.optim.Adam(sae.parameters(), lr=LR, fused=True)  # as train/trainer.py

    def step():
        opt.zero_grad(set_to_none=True)
        sae.training_forward(x, sparsity_coef=lam).loss.backward()
        sae.remove_parallel_grad_()
        opt.step()
        sae.normalize_decoder_()

    return step


class _Ste(torch.autograd.Function):
    """JumpReLU f = z·H(z−θ) (mode "f") or H(z−θ) (mode "h") with the rectangle-kernel STE."""

    @staticmethod
    def forward(ctx, z, theta, mode):
        ctx.save_for_backward(z, theta)
        ctx.mode = mode
        return z * (z > theta) if mode == "f" else (z > theta).to(z)

    @staticmethod
    def backward(ctx, g):
        z, theta = ctx.saved_tensors
        rect = (((z - theta) / EPS).abs() < 0.5).to(z)
        if ctx.mode == "f":
            return g * (z > theta), (-(theta / EPS) * rect * g).sum(0), None
        return None, (-(1 / EPS) * rect * g).sum(0), None


def naive_step(sae: SparseAutoencoder, x: torch.Tensor, lam: float):
    p = {n: torch.nn.Parameter(t.detach().clone()) for n, t in sae.named_parameters()}
    opt = torch.optim.Adam(p.values(), lr=LR)
    jump = sae.spec.arch == Arch.JUMPRELU

    def step():
        opt.zero_grad(set_to_none=True)
        z = x @ p["W_enc"] + p["b_enc"]
        if jump:
            f = _Ste.apply(z, p["threshold"], "f")
            sparsity = _Ste.apply(z, p["threshold"], "h").sum(-1).mean()
        else:
            f = torch.relu(z)
            sparsity = (f * p["W_dec"].norm(dim=1)).sum(-1).mean()
        x_hat = f @ p["W_dec"] + p["b_dec"]
        loss = (x_hat - x).pow(2).sum(-1).mean() + lam * sparsity
        loss.backward()
        with torch.no_grad():
            W, g = p["W_dec"], p["W_dec"].grad
            g -= (g * W).sum(1, keepdim=True) / (W * W).sum(1, keepdim=True) * W
            opt.step()
            W /= W.norm(dim=1, keepdim=True)

    return step


def roofline_step(n: int, d_in: int, d_sae: int):
    g = torch.Generator().manual_seed(0)
    x, gx = torch.randn(n, d_in, generator=g), torch.randn(n, d_in, generator=g)
    f, gf = torch.randn(n, d_sae, generator=g), torch.randn(n, d_sae, generator=g)
    W_enc, W_dec = torch.randn(d_in, d_sae, generator=g), torch.randn(d_sae, d_in, generator=g)

    def step():
        x @ W_enc, gf @ W_enc.T, x.T @ gf  # encoder: forward, grad x, grad W_enc
        f @ W_dec, gx @ W_dec.T, f.T @ gx  # decoder: forward, grad acts, grad W_dec

    return step


def saelens_step(sae: SparseAutoencoder, x: torch.Tensor, lam: float):
    try:
        from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig
        from sae_lens.saes.sae import TrainStepInput
        from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
    except ImportError:
        return None
    d_in, d_sae = sae.d_in, sae.d_sae
    if sae.spec.arch == Arch.JUMPRELU:
        cfg = JumpReLUTrainingSAEConfig(
            d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=False, jumprelu_bandwidth=EPS, l0_coefficient=lam
        )
        theirs, coefs = JumpReLUTrainingSAE(cfg), {"l0": lam}
    else:
        cfg = StandardTrainingSAEConfig(
            d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=False, l1_coefficient=lam
        )
        theirs, coefs = StandardTrainingSAE(cfg), {"l1": lam}
    theirs.load_state_dict({k: v.detach().clone() for k, v in sae.state_dict().items()})
    opt = torch.optim.Adam(theirs.parameters(), lr=LR)
    since_fired = torch.zeros(d_sae)

    def step():
        out = theirs.training_forward_pass(
            TrainStepInput(
                sae_in=x, coefficients=coefs, dead_neuron_mask=None, n_training_steps=0, is_logging_step=False
            )
        )
        with torch.no_grad():
            fired = out.feature_acts.bool().float()
            since_fired.add_(1)
            since_fired[fired.sum(-2).bool()] = 0
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
        opt.step()
        opt.zero_grad()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--expansion", type=int, default=8)
    ap.add_argument("--shapes", default="576,256", help="comma-separated d_in values")
    ap.add_argument("--densities", default="init,0.05,0.01", help="'init' = freshly initialised SAE")
    ap.add_argument("--archs", default="jumprelu,standard")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per contender (median reported)")
    ap.add_argument("--no-naive", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not reuse_freed_host_memory():
        sys.exit("this benchmark needs glibc (it sets and resets its allocator per contender)")
    n = args.batch
    print(
        f"torch {torch.__version__}, {args.threads} threads, batch {n}, {args.expansion}x, steps {args.steps}\n"
        "allocator: every contender runs with host memory reuse (train/host_memory.py, as `fastsae train` sets"
        " it on CPU)\nexcept 'SAELens as shipped', which runs under glibc's steady state as SAELens does"
    )
    for d_in in [int(s) for s in args.shapes.split(",")]:
        d_sae = d_in * args.expansion
        roof = roofline_step(n, d_in, d_sae)
        t_roof = _median(_time({"roof": roof}, args.steps), "roof")
        roof_tps = n / t_roof
        gflops = 12 * n * d_in * d_sae / t_roof / 1e9
        print(
            f"\n== d_in {d_in} -> d_sae {d_sae}: dense roofline {roof_tps:,.0f} tok/s ({gflops:.0f} GFLOP/s)"
        )
        print(
            f"{'arch':9} {'density':>8} {'L0':>6} {'fastsae tok/s':>14} {'/roof':>6} {'naive':>7} "
            f"{'SAELens':>8} {'shipped':>8} {'fastsae/naive':>13} {'fastsae/SAELens':>15} {'/shipped':>9}"
        )
        for arch in args.archs.split(","):
            for dens in args.densities.split(","):
                density = None if dens == "init" else float(dens)
                g = torch.Generator().manual_seed(0)
                x = torch.randn(n, d_in, generator=g)
                sae = SparseAutoencoder(SAESpec(Arch(arch), d_in, d_sae), generator=g)
                sae.init_b_dec_(x[:512])
                calibrate(sae, x, density)
                lam = 1e-3
                sl = saelens_step(sae, x, lam)  # built from the same starting weights
                sl_shipped = saelens_step(sae, x, lam)
                nv = None if args.no_naive else naive_step(sae, x, lam)
                with torch.no_grad():
                    l0 = float(sae.training_forward(x, sparsity_coef=lam).l0.mean())
                fns = {"ours": fastsae_step(sae, x, lam), "naive": nv, "saelens": sl}
                fns |= {"saelens_shipped": sl_shipped, "roof": roof}
                t = _time(fns, args.steps, default_alloc=("saelens_shipped",))
                # tok/s: medians; ratios: medians of per-round ratios (the roofline re-measured alongside)
                ours = n / _median(t, "ours")
                print(
                    f"{arch:9} {dens:>8} {l0:6.0f} {ours:14,.0f} {_ratio(t, 'roof', 'ours'):6.2f} "
                    f"{n / _median(t, 'naive'):7,.0f} {n / _median(t, 'saelens'):8,.0f} "
                    f"{n / _median(t, 'saelens_shipped'):8,.0f} {_ratio(t, 'naive', 'ours'):13.2f} "
                    f"{_ratio(t, 'saelens', 'ours'):15.2f} {_ratio(t, 'saelens_shipped', 'ours'):9.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
