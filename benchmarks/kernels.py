"""Benchmark kernels/: the fused path against torch eager, in the same run.

GPU (default; needs CUDA): forward+backward of jumprelu_autoencode (the training op) on the Triton path vs the
plain torch reference (kernels/reference.py), batch 4096 tokens, d_in 2048/4096, expansion 8/16, L0 ~50/~500,
bf16/fp32, timed with triton.testing.do_bench. Also the fused encoder forward alone. Throughput is dense-equivalent
TFLOP/s (the 6 SAE matmuls: 12·N·d_in·d_sae for fwd+bwd, 2·N·d_in·d_sae for the encoder forward) against the
dense matmul x @ W_enc of the same shape measured here: "% mm" is that ratio (sparse paths can pass 100%).

    python benchmarks/kernels.py            # GPU
    python benchmarks/kernels.py --cpu      # torch path vs the naive formula at small shapes, and the decoder's
                                            # dense/gather cross-over (calibrates CPU_SPARSE_MAX_DENSITY)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def make_params(n, d_in, d_sae, *, l0, dtype, device, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(n, d_in, device=device, generator=g)
    W_enc = torch.randn(d_in, d_sae, device=device, generator=g) / d_in**0.5
    b_enc = 0.1 * torch.randn(d_sae, device=device, generator=g)
    sample = (x[:512] @ W_enc + b_enc).float()
    k = min(max(round((1.0 - l0 / d_sae) * sample.shape[0]), 1), sample.shape[0])
    threshold = sample.kthvalue(k, dim=0).values.clamp_min(0.05)  # per feature: ~l0 active per token
    W_dec = torch.randn(d_sae, d_in, device=device, generator=g) / d_sae**0.5
    b_dec = torch.zeros(d_in, device=device)
    return [t.to(dtype).contiguous().requires_grad_() for t in (x, W_enc, b_enc, threshold, W_dec, b_dec)]


def step_fn(encode, decode, params, bandwidth=0.001):
    """One SAE training step's kernels: forward, loss, backward to every input. decode None: encode is a
    training op giving (acts, l0, x_hat), kernels.jumprelu_autoencode (what training_forward runs)."""

    def step():
        x, W_enc, b_enc, threshold, W_dec, b_dec = params
        if decode is None:
            acts, l0, x_hat = encode(x, W_enc, b_enc, threshold, W_dec, b_dec, bandwidth)
        else:
            acts, l0 = encode(x, W_enc, b_enc, threshold, bandwidth)
            x_hat = decode(acts, W_dec, b_dec)
        loss = (x_hat - x).float().square().sum() + 1e-3 * l0.float().sum()
        return torch.autograd.grad(loss, params)

    return step


def gpu_main(args) -> int:
    if not torch.cuda.is_available():
        print(
            "benchmarks/kernels.py: no CUDA device here. Run it on a GPU, or use --cpu for the CPU comparison."
        )
        return 1
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("benchmarks/kernels.py: unset TRITON_INTERPRET for the GPU benchmark.")
        return 1
    from triton.testing import do_bench

    from fastsae.kernels import jumprelu_autoencode, jumprelu_encode
    from fastsae.kernels.reference import jumprelu_encode_reference, sae_decode_reference

    os.environ["FASTSAE_KERNELS"] = "triton"
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, fp32 matmul precision "
          f"{torch.get_float32_matmul_precision()}")  # fmt: skip
    hdr = "dtype  d_in  exp   L0 | fwd+bwd fused ms  eager ms  speedup  TFLOP/s  %mm | enc-fwd ms  eager  speedup  %mm"
    print(hdr)
    n = args.tokens
    for dtype in (torch.bfloat16, torch.float32):
        for d_in in (2048, 4096):
            for exp in (8, 16):
                d_sae = d_in * exp
                for l0 in (50, 500):
                    params = make_params(n, d_in, d_sae, l0=l0, dtype=dtype, device="cuda")
                    x, W_enc, b_enc, threshold = (p.detach() for p in params[:4])
                    t_mm = do_bench(lambda x=x, W=W_enc: x @ W)
                    mm_tflops = 2 * n * d_in * d_sae / t_mm * 1e-9
                    t_fused = do_bench(step_fn(jumprelu_autoencode, None, params))
                    t_eager = do_bench(step_fn(jumprelu_encode_reference, sae_decode_reference, params))
                    tflops = 12 * n * d_in * d_sae / t_fused * 1e-9
                    with torch.no_grad():
                        t_ef = do_bench(
                            lambda x=x, W=W_enc, b=b_enc, t=threshold: jumprelu_encode(x, W, b, t)
                        )
                        t_ee = do_bench(lambda x=x, W=W_enc, b=b_enc, t=threshold: _eager_encode(x, W, b, t))
                    ef_tflops = 2 * n * d_in * d_sae / t_ef * 1e-9
                    name = str(dtype).removeprefix("torch.")
                    print(
                        f"{name:>8} {d_in:5d} {exp:3d} {l0:4d} | {t_fused:10.2f} {t_eager:9.2f} {t_eager / t_fused:7.2f}x"
                        f" {tflops:8.1f} {100 * tflops / mm_tflops:4.0f}% | {t_ef:8.2f} {t_ee:7.2f}"
                        f" {t_ee / t_ef:6.2f}x {100 * ef_tflops / mm_tflops:4.0f}%",
                        flush=True,
                    )
                    del params, x, W_enc, b_enc, threshold
                    torch.cuda.empty_cache()
    return 0


def _eager_encode(x, W_enc, b_enc, threshold):
    z = torch.addmm(b_enc, x, W_enc)
    active = z > threshold
    return z * active, active.sum(-1).to(x.dtype)


def _best_time(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)  # best of reps: the least disturbed by other load on shared cores


def cpu_main(args) -> int:
    from fastsae.kernels import jumprelu_autoencode, sae_decode
    from fastsae.kernels.reference import jumprelu_encode_reference, sae_decode_reference

    os.environ["FASTSAE_KERNELS"] = "torch"
    torch.set_num_threads(args.threads)
    print(f"CPU, torch {torch.__version__}, {torch.get_num_threads()} thread(s); best of {args.reps} runs")
    print("\nfwd+bwd of encode+decode: torch path vs the naive formula (kernels/reference.py), float32")
    print("   N  d_in  d_sae   L0 | torch path ms  naive ms  speedup")
    n = args.tokens
    for d_in, exp in ((576, 8), (576, 16)):
        for l0 in (50, 500):
            params = make_params(n, d_in, d_in * exp, l0=l0, dtype=torch.float32, device="cpu")
            t_fast = _best_time(step_fn(jumprelu_autoencode, None, params), args.reps)
            t_ref = _best_time(step_fn(jumprelu_encode_reference, sae_decode_reference, params), args.reps)
            print(f"{n:5d} {d_in:5d} {d_in * exp:6d} {l0:4d} | {1e3 * t_fast:12.1f} {1e3 * t_ref:9.1f}"
                  f" {t_ref / t_fast:7.2f}x")  # fmt: skip

    print("\nsae_decode fwd+bwd on the torch path, dense vs gather over active rows (crossover -> cut-off)")
    print("density | dense ms  gather ms  gather/dense")
    d_in, d_sae = 576, 4608
    g = torch.Generator().manual_seed(0)
    W_dec = torch.randn(d_sae, d_in, generator=g).requires_grad_()
    b_dec = torch.zeros(d_in, requires_grad=True)
    for density in (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2):
        acts = torch.rand(n, d_sae, generator=g)
        acts = (acts * (acts < density)).requires_grad_()
        res = {}
        for mode in ("never", "always"):
            os.environ["FASTSAE_KERNELS_SPARSE"] = mode

            def step(acts=acts):
                x_hat = sae_decode(acts, W_dec, b_dec)
                return torch.autograd.grad(x_hat.square().sum(), (acts, W_dec, b_dec))

            res[mode] = _best_time(step, args.reps)
        print(f"{density:7.3f} | {1e3 * res['never']:8.1f} {1e3 * res['always']:10.1f} "
              f"{res['always'] / res['never']:12.2f}")  # fmt: skip
    os.environ.pop("FASTSAE_KERNELS_SPARSE", None)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cpu", action="store_true", help="CPU comparison of the torch path at small shapes")
    parser.add_argument("--tokens", type=int, default=None, help="batch size (default 4096 GPU, 1024 CPU)")
    parser.add_argument("--reps", type=int, default=5, help="CPU timing repetitions")
    parser.add_argument("--threads", type=int, default=1, help="CPU torch threads")
    args = parser.parse_args(argv)
    if args.cpu:
        args.tokens = args.tokens or 1024
        return cpu_main(args)
    args.tokens = args.tokens or 4096
    return gpu_main(args)


if __name__ == "__main__":
    sys.exit(main())
