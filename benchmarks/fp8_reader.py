"""Benchmark: the training reader on an fp8_e4m3 store against the same reader on a bf16 store, in one run.

    python benchmarks/fp8_reader.py [--tokens 524288] [--d-model 576] [--rounds 3] [--cuda]

Builds (once, cached) two synthetic stores of the same rows under /tmp (benchmarks/reader.py's build: one
bfloat16, one fp8_e4m3), then runs benchmarks/reader.py's workers (a fresh subprocess each, one shuffled epoch)
on both, alternating the two dtypes inside every round:

  shuffled         float32 batches on the CPU (rows read in place from the memmaps; fp8 rows decoded with their
                   scales in the batch thread)
  shuffled_copy    the same with zero_copy=False: rows copied into the mixing buffer (remote and compressed stores)
  shuffled_stored  decode=False: the host side of the CUDA path, batches as they are uploaded (bf16 bits; packed
                   fp8 rows, d_model codes + the 4-byte scale)
  shuffled_cuda    (--cuda) the CUDA path: stored batches pinned, uploaded, decoded on the GPU

each "cold" (the files evicted from the page cache first: disk reads included) and "warm". Prints per mode the
median tokens/s of each dtype and the median of the per-round fp8 / bf16 ratios, and the bytes that a token costs
on disk, in a stored batch (what crosses to the GPU) and in the mixing buffer's row copy.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("bench_reader", _HERE / "reader.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)  # its build() and run_worker(); it puts the repo root on sys.path

DTYPES = ("bfloat16", "fp8_e4m3")
MODES = ("shuffled", "shuffled_copy", "shuffled_stored")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="/tmp/fastsae_bench_fp8_reader")
    p.add_argument("--tokens", type=int, default=2**19)
    p.add_argument("--d-model", type=int, default=576)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--buffer-tokens", type=int, default=2**17)
    p.add_argument("--chunk-tokens", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=3, help="rounds per condition; each ratio is the median of rounds")
    p.add_argument("--cuda", action="store_true", help="add shuffled_cuda (the reader with device='cuda')")
    a = p.parse_args()
    modes = MODES + (("shuffled_cuda",) if a.cuda else ())
    stores = {}
    for dtype in DTYPES:
        root = Path(a.root) / dtype
        bench.build(root, tokens=a.tokens, d_model=a.d_model, dtype=dtype, shards=a.shards)
        stores[dtype] = argparse.Namespace(root=root, buffer_tokens=a.buffer_tokens, chunk_tokens=a.chunk_tokens,
                                           batch_size=a.batch_size, reuse_host_memory=True)  # fmt: skip
    disk = {d: sum(f.stat().st_size for f in s.root.rglob("*") if f.is_file()) for d, s in stores.items()}
    print(f"{a.tokens:,} tokens, d_model {a.d_model}, {a.shards} shards; buffer {a.buffer_tokens:,} tokens, "
          f"chunk {a.chunk_tokens}, batch {a.batch_size}")  # fmt: skip
    res: dict[tuple[bool, str, str], list[dict]] = {}
    for cold in (True, False):
        for r in range(a.rounds):
            for mode in modes:
                order = DTYPES if r % 2 == 0 else DTYPES[::-1]  # neither dtype always runs first
                for dtype in order:
                    res.setdefault((cold, mode, dtype), []).append(bench.run_worker(stores[dtype], mode, cold=cold))
            c = "cold" if cold else "warm"
            print(f"  {c} round {r}: " + ", ".join(
                f"{m} " + "/".join(f"{res[(cold, m, d)][-1]['tokens_per_s'] / 1e3:.0f}" for d in DTYPES)
                for m in modes) + " k tok/s (bf16/fp8)", flush=True)  # fmt: skip
    print(f"medians of {a.rounds} rounds: tokens/s bf16, fp8_e4m3, and the median per-round ratio fp8 / bf16")
    for cold in (True, False):
        for mode in modes:
            rb, rf = res[(cold, mode, "bfloat16")], res[(cold, mode, "fp8_e4m3")]
            tb = statistics.median(x["tokens_per_s"] for x in rb)
            tf = statistics.median(x["tokens_per_s"] for x in rf)
            ratio = statistics.median(f["tokens_per_s"] / b["tokens_per_s"] for b, f in zip(rb, rf, strict=True))
            print(f"  {'cold' if cold else 'warm'} {mode:16s} {tb / 1e3:8.0f} {tf / 1e3:8.0f} k tok/s   {ratio:.2f}")
    d = a.d_model
    buf = {dt: res[(False, "shuffled_copy", dt)][0]["buffer_bytes"] / a.buffer_tokens for dt in DTYPES}
    print("bytes per token: bf16 -> fp8_e4m3 (ratio)")
    print(f"  on disk (whole store)        {disk['bfloat16'] / a.tokens:8.1f} -> {disk['fp8_e4m3'] / a.tokens:8.1f}"
          f"  ({disk['fp8_e4m3'] / disk['bfloat16']:.3f})")  # fmt: skip
    print(f"  stored batch (the upload)    {2 * d:8d} -> {d + 4:8d}  ({(d + 4) / (2 * d):.3f})")
    print(f"  mixing buffer's row copy     {buf['bfloat16']:8.1f} -> {buf['fp8_e4m3']:8.1f}"
          f"  ({buf['fp8_e4m3'] / buf['bfloat16']:.3f})")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
