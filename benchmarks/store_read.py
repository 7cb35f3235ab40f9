"""Store read throughput and disk overhead.

    python benchmarks/store_read.py [--tokens 200000] [--d-model 1024] [--dtype bfloat16] [--block-rows 4096]
                                    [--dir /tmp/fastsae_store_bench] [--compression none|zstd]

Writes one synthetic shard with store.ShardWriter, then reads the same acts array sequentially in blocks of
--block-rows rows, every pass warm (page cache) so the figures compare CPU-side cost:

  memmap   Shard.raw_acts(layer) (np.memmap of the zarr shard file), copied into a preallocated buffer
  zarr     zarr.open_array(...)[a:b], the zarr API on the same array (it allocates and copies per read)
  gather   a[sorted random rows] (8192 rows per batch) through each path

and prints GB/s and the ratio memmap ÷ zarr. Then the bytes/token overhead ratio
bytes/token ÷ (dtype bytes × d_model × layers) for the benchmark shard and for a realistic one
(d_model 576, 50k tokens, bf16, one layer); 1.0 means the files hold nothing but activations.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from fastsae.store import ShardWriter, init_store, open_store, summarize_store


def build(
    root: Path, *, tokens: int, d_model: int, dtype: str, compression: str | None, seed: int = 0
) -> None:
    if root.exists():
        shutil.rmtree(root)
    init_store(root, meta={"identity": {"model": "benchmark"}})
    rng = np.random.default_rng(seed)
    block = rng.standard_normal((4096, d_model), dtype=np.float32)
    with ShardWriter(
        root,
        writer=0,
        seq=0,
        first_sequence=0,
        layers=[0],
        d_model=d_model,
        dtype=dtype,
        compression=compression,
    ) as w:
        done = 0
        while done < tokens:
            T = int(min(tokens - done, rng.integers(64, 2048)))
            start = int(rng.integers(0, 4096 - T + 1))
            w.append(
                token_ids=np.zeros(T, np.int32),
                token_types=np.full(T, 4, np.uint8),
                acts={0: block[start : start + T]},
                source=(0, w.num_sequences),
            )
            done += T


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (page cache, zarr imports)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=200_000)
    ap.add_argument("--d-model", type=int, default=1024)
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--block-rows", type=int, default=4096)
    ap.add_argument("--compression", default="none", choices=["none", "zstd"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()

    import zarr

    tmp = None if args.dir else tempfile.mkdtemp(prefix="fastsae_store_bench_")
    root = args.dir or Path(tmp)
    try:
        compression = None if args.compression == "none" else args.compression
        t0 = time.perf_counter()
        build(root, tokens=args.tokens, d_model=args.d_model, dtype=args.dtype, compression=compression)
        write_s = time.perf_counter() - t0
        shard = open_store(root).shards[0]
        raw = shard.raw_acts(0)
        za = zarr.open_array(shard.path / "acts" / "layer_0", mode="r")
        T, d = raw.shape
        nbytes = T * d * raw.dtype.itemsize
        blocks = [(a, min(T, a + args.block_rows)) for a in range(0, T, args.block_rows)]
        buf = np.empty((args.block_rows, d), dtype=raw.dtype)

        def read_memmap() -> None:
            for a, b in blocks:
                np.copyto(buf[: b - a], raw[a:b])

        def read_zarr() -> None:
            for a, b in blocks:
                za[a:b]

        rng = np.random.default_rng(1)
        batches = [np.sort(rng.choice(T, size=min(8192, T), replace=False)) for _ in range(8)]
        gather_bytes = sum(len(r) for r in batches) * d * raw.dtype.itemsize

        def gather_memmap() -> None:
            for rows in batches:
                raw[rows]

        def gather_zarr() -> None:
            for rows in batches:
                za.get_orthogonal_selection((rows, slice(None)))

        gb = 1e9
        t_mm, t_z = timed(read_memmap, args.repeats), timed(read_zarr, args.repeats)
        g_mm, g_z = timed(gather_memmap, args.repeats), timed(gather_zarr, args.repeats)
        print(f"shard: {T:,} tokens x {d} {args.dtype} ({nbytes / 2**20:.0f} MiB, compression={args.compression}, "
              f"rows/chunk={shard.attrs['fastsae']['rows_per_chunk']}), written in {write_s:.2f} s "
              f"({nbytes / write_s / gb:.2f} GB/s)")  # fmt: skip
        print(f"sequential read  memmap {nbytes / t_mm / gb:7.2f} GB/s   zarr {nbytes / t_z / gb:7.2f} GB/s   "
              f"memmap/zarr = {t_z / t_mm:.1f}x")  # fmt: skip
        print(f"random gather    memmap {gather_bytes / g_mm / gb:7.2f} GB/s   zarr {gather_bytes / g_z / gb:7.2f} GB/s   "
              f"memmap/zarr = {g_z / g_mm:.1f}x")  # fmt: skip
        info = summarize_store(root)
        print(
            f"bytes/token: {info['bytes_per_token']:.1f}; ratio to dtype bytes x d_model: {info['overhead_ratio']:.4f}"
        )
        real = root.with_name(root.name + "_576")
        build(real, tokens=50_000, d_model=576, dtype="bfloat16", compression=None)
        info = summarize_store(real)
        print(f"realistic shard (d=576, 50k tokens, bf16): bytes/token {info['bytes_per_token']:.1f}, "
              f"ratio {info['overhead_ratio']:.4f} (limit 1.02)")  # fmt: skip
        shutil.rmtree(real)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
