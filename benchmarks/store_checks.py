"""What the store's integrity checks cost, against the read path they must not slow down.

    python benchmarks/store_checks.py [--tokens 200000] [--d-model 1024] [--dtype bfloat16] [--shards 200]
                                      [--repeats 3] [--dir /tmp/fastsae_checks_bench]

One synthetic shard of --tokens tokens, read warm (page cache) so the figures compare CPU-side cost:

  memmap read     Shard.raw_acts(layer) copied into a preallocated buffer in 4096-row blocks (the reader's path)
  crc32c          crc32c of the whole activation file through a read-only mapping (what verify adds per byte)
  verify          verify_store: crc32c + finite/|x| <= 1e6 scan of every activation, small arrays, index
  write           ShardWriter appends + commit (the crc32c runs beside every write)

and prints the ratios crc32c/memmap, verify/memmap and crc32c-of-the-file/write. Then --shards small shards
(one sequence of 64 tokens each): open_store (declared sizes vs files, per shard) and quick_check, in ms per shard.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from fastsae.store import ShardWriter, init_store, open_store, quick_check, verify_store
from fastsae.store.format import act_shard_file, file_crc32c


def build(root: Path, *, tokens: int, d_model: int, dtype: str, seq: int = 0, first: int = 0) -> float:
    rng = np.random.default_rng(seq)
    block = rng.standard_normal((4096, d_model), dtype=np.float32)
    t = time.perf_counter()
    with ShardWriter(
        root, writer=0, seq=seq, first_sequence=first, layers=[0], d_model=d_model, dtype=dtype
    ) as w:
        done = 0
        while done < tokens:
            T = int(min(tokens - done, rng.integers(64, 2048)))
            start = int(rng.integers(0, 4096 - T + 1))
            w.append(token_ids=np.zeros(T, np.int32), token_types=np.full(T, 4, np.uint8),
                     acts={0: block[start : start + T]}, source=(0, w.num_sequences))  # fmt: skip
            done += T
    return time.perf_counter() - t


def best(fn, repeats: int) -> float:
    fn()  # warm-up: page cache, imports
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=200_000)
    ap.add_argument("--d-model", type=int, default=1024)
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--shards", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()

    tmp = None if args.dir else tempfile.mkdtemp(prefix="fastsae_checks_bench_")
    root = args.dir or Path(tmp)
    try:
        big, many = root / "big", root / "many"
        for p in (big, many):
            shutil.rmtree(p, ignore_errors=True)
            init_store(p, meta={"identity": {"model": "benchmark"}})
        write_s = build(big, tokens=args.tokens, d_model=args.d_model, dtype=args.dtype)
        shard = open_store(big).shards[0]
        raw, path = shard.raw_acts(0), act_shard_file(shard.path, 0)
        assert isinstance(raw, np.memmap)
        T, d = raw.shape
        nbytes = path.stat().st_size
        buf = np.empty((4096, d), dtype=raw.dtype)

        def read_memmap() -> None:
            for a in range(0, T, 4096):
                b = min(T, a + 4096)
                np.copyto(buf[: b - a], raw[a:b])

        t_read, t_crc = best(read_memmap, args.repeats), best(lambda: file_crc32c(path), args.repeats)
        t_verify = best(lambda: verify_store(big), args.repeats)
        gb = 1e9
        print(f"shard: {T:,} tokens x {d} {args.dtype}, file {nbytes / 2**20:.0f} MiB")
        print(f"memmap read {nbytes / t_read / gb:6.2f} GB/s   crc32c {nbytes / t_crc / gb:6.2f} GB/s   "
              f"verify {nbytes / t_verify / gb:6.2f} GB/s   write {nbytes / write_s / gb:6.2f} GB/s")  # fmt: skip
        print(f"crc32c / memmap read = {t_crc / t_read:.2f}   verify / memmap read = {t_verify / t_read:.2f}   "
              f"crc32c of the file / write = {t_crc / write_s:.3f}")  # fmt: skip

        for i in range(args.shards):
            build(many, tokens=64, d_model=64, dtype=args.dtype, seq=i, first=i)  # 1 sequence each
        n = args.shards
        t_open = best(lambda: open_store(many), args.repeats)
        s = open_store(many)
        t_quick = best(lambda: quick_check(s), args.repeats)
        print(
            f"{n} shards: open_store {1e3 * t_open / n:.3f} ms/shard, quick_check {1e3 * t_quick / n:.3f} ms/shard"
        )
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
