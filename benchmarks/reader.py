"""Benchmark of the mixing reader (train/reader.py) against a sequential raw memmap read.

    python benchmarks/reader.py [--tokens 1048576] [--d-model 576] [--dtype bfloat16]
                                [--buffer-tokens 262144] [--chunk-tokens 4096] [--batch-size 4096]
                                [--rounds 3] [--no-reuse-host-memory]

Builds (once, cached) a synthetic store larger than the buffer under /tmp with store.ShardWriter,
then runs each measurement in a fresh subprocess (so peak RSS is per measurement):

  baseline_raw   sequential read of the same shard files through np.memmap (copy out, no decode)
  baseline_f32   the same plus the bf16/fp16 -> float32 decode (store.to_float32)
  sequential     ActivationReader(shuffle=False): batches in store order
  shuffled       ActivationReader (mixing buffer): one full epoch of shuffled float32 batches
                 (rows read in place from the memmaps: zero_copy, the default for an uncompressed store)
  shuffled_copy  the same with zero_copy=False: rows copied into the mixing buffer (compressed stores do this)
  shuffled_stored  shuffled with decode=False: batches in the stored dtype, the host side of the CUDA path
                 (which uploads the stored dtype from pinned memory and widens it on the device); this is
                 the like-for-like comparison with baseline_raw, which does not decode either
  shuffled_cuda  (--cuda) the CUDA path itself: float32 batches on the GPU

Each runs "cold" (the shard files evicted from the page cache with posix_fadvise(DONTNEED)
first) and "warm" (right after a read), in --rounds rounds of every mode back to back. Ratios: tokens/s
of the reader ÷ tokens/s of the baseline in the same condition and round, the median over rounds (goal
>= 0.8), and peak anonymous RSS growth ÷ buffer bytes (goal <= 1.2; file-backed RSS of the memmap is
page cache, reclaimable, and reported separately). Every worker, baselines included, runs with glibc
keeping freed memory for reuse, as `fastsae train` on CPU does (--no-reuse-host-memory: glibc's defaults).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("RssAnon:", "RssFile:", "VmRSS:")):
                key, val = line.split(":")
                out[key] = int(val.split()[0]) * 1024
    return out


class PeakRss:
    """Samples /proc/self/status every 5 ms in a thread; .peak[key] is the max seen."""

    def __init__(self):
        self.peak = rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.wait(0.005):
            for k, v in rss().items():
                self.peak[k] = max(self.peak[k], v)

    def stop(self):
        self._stop.set()
        self._t.join()
        for k, v in rss().items():
            self.peak[k] = max(self.peak[k], v)
        return self.peak


def build(root: Path, *, tokens: int, d_model: int, dtype: str, shards: int, seed: int = 0) -> None:
    from fastsae.store import ShardWriter, TokenType

    marker = root / "bench.json"
    spec = {"tokens": tokens, "d_model": d_model, "dtype": dtype, "shards": shards, "seed": seed}
    if marker.exists() and json.loads(marker.read_text()) == spec:
        return
    if root.exists():
        import shutil

        shutil.rmtree(root)
    rng = np.random.default_rng(seed)
    per_shard = tokens // shards
    first = 0
    for k in range(shards):
        with ShardWriter(
            root,
            writer=0,
            seq=k,
            first_sequence=first,
            layers=[9],
            d_model=d_model,
            dtype=dtype,
            meta={"identity": {"bench": spec}},
        ) as w:
            left = per_shard
            while left > 0:
                n = int(min(left, rng.integers(64, 2048)))
                acts = rng.standard_normal((n, d_model), dtype=np.float32)
                types = rng.integers(0, len(TokenType), n).astype(np.uint8)
                w.append(
                    token_ids=np.zeros(n, np.int32), token_types=types, acts={9: acts}, source=(0, first)
                )
                left -= n
                first += 1
    marker.write_text(json.dumps(spec))


def evict(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def worker(args) -> dict:
    import torch

    torch.set_num_threads(1)
    if args.reuse_host_memory:  # as fastsae train does on CPU; for every mode, the baselines included
        from fastsae.train.host_memory import reuse_freed_host_memory

        reuse_freed_host_memory()
    from fastsae.store import open_store, to_float32
    from fastsae.train.reader import ActivationReader

    store = open_store(args.root)
    if args.cold:
        evict(Path(args.root))
    base = rss()
    mon = PeakRss()
    t0 = time.perf_counter()
    tokens = 0
    if args.worker.startswith("baseline"):
        block = 65536
        for sh in store.shards:
            raw = sh.raw_acts(9)
            for a in range(0, sh.num_tokens, block):
                x = np.array(raw[a : a + block])
                if args.worker == "baseline_f32":
                    x = to_float32(x, store.dtype)
                tokens += len(x)
        buffer_bytes = 0
        wait = first = 0.0
    else:
        reader = ActivationReader(
            store,
            layer=9,
            batch_size=args.batch_size,
            buffer_tokens=args.buffer_tokens,
            chunk_tokens=args.chunk_tokens,
            shuffle=args.worker.startswith("shuffled"),
            decode=args.worker != "shuffled_stored",
            zero_copy=args.worker != "shuffled_copy",
            device="cuda" if args.worker == "shuffled_cuda" else None,
            epochs=1,
            drop_last=False,
            seed=0,
        )
        buffer_bytes = reader.buffer_bytes
        wait = first = 0.0
        it = iter(reader)
        while True:
            w0 = time.perf_counter()
            batch = next(it, None)
            if tokens == 0:
                first = time.perf_counter() - w0  # the first batch waits for the whole buffer fill
            else:
                wait += time.perf_counter() - w0
            if batch is None:
                break
            tokens += len(batch)
            if args.step_ms:  # a stand-in for a GPU training step (the host waits, GIL released)
                time.sleep(args.step_ms / 1e3)
        assert tokens == reader.tokens_per_epoch
        if args.worker == "shuffled_cuda":
            torch.cuda.synchronize()  # the last uploads and widenings are done
    dt = time.perf_counter() - t0
    peak = mon.stop()
    return {
        "mode": args.worker + (f"+{args.step_ms:g}ms_steps" if args.step_ms else ""),
        "wait_ms_per_batch": 1e3 * wait / max(1, tokens // args.batch_size - 1),
        "first_batch_s": first,
        "cold": args.cold,
        "tokens": tokens,
        "seconds": dt,
        "tokens_per_s": tokens / dt,
        "buffer_bytes": buffer_bytes,
        "anon_growth": peak["RssAnon"] - base["RssAnon"],
        "file_peak": peak["RssFile"],
    }


MODES = ("baseline_raw", "baseline_f32", "sequential", "shuffled", "shuffled_copy", "shuffled_stored")


def run_worker(args, mode: str, *, cold: bool, step_ms: float = 0.0) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--root", str(args.root)]
    cmd += ["--buffer-tokens", str(args.buffer_tokens), "--chunk-tokens", str(args.chunk_tokens)]
    cmd += ["--batch-size", str(args.batch_size)] + (["--cold"] if cold else [])
    cmd += [] if args.reuse_host_memory else ["--no-reuse-host-memory"]
    cmd += ["--step-ms", f"{step_ms:.1f}"] if step_ms else []
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{mode} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="/tmp/fastsae_bench_reader_store")
    p.add_argument("--tokens", type=int, default=2**20)
    p.add_argument("--d-model", type=int, default=576)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--buffer-tokens", type=int, default=2**18)
    p.add_argument("--chunk-tokens", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="Rounds per condition; a round runs every mode once, back to back (reversed order in odd rounds), "
        "and each ratio is the median of its per-round ratios (a shared machine's load drifts between rounds).",
    )
    p.add_argument(
        "--no-reuse-host-memory",
        dest="reuse_host_memory",
        action="store_false",
        help="Leave glibc's defaults (fastsae train on CPU keeps freed memory for reuse: train/host_memory.py).",
    )
    p.add_argument(
        "--cuda",
        action="store_true",
        help="Add shuffled_cuda: the reader with device='cuda' (pinned stored-dtype batches uploaded and widened"
        " on the GPU, float32 there), synchronized at the end.",
    )
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--cold", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--step-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    root = Path(args.root)
    t0 = time.perf_counter()
    build(root, tokens=args.tokens, d_model=args.d_model, dtype=args.dtype, shards=args.shards)
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    print(
        f"store {root}: {args.tokens:,} tokens d={args.d_model} {args.dtype}, {size / 2**30:.2f} GiB "
        f"(ready in {time.perf_counter() - t0:.0f} s); buffer {args.buffer_tokens:,} tokens "
        f"= {args.buffer_tokens * args.d_model * 4 / 2**30:.2f} GiB fp32, chunk {args.chunk_tokens}, "
        f"batch {args.batch_size}; host memory reuse {'on' if args.reuse_host_memory else 'off'}"
    )
    modes = MODES + (("shuffled_cuda",) if args.cuda else ())
    rounds: dict[bool, list[dict[str, dict]]] = {True: [], False: []}  # cold -> [{mode: result}] per round
    for cold in (True, False):
        for r in range(args.rounds):
            order = modes if r % 2 == 0 else modes[::-1]
            rounds[cold].append({mode: run_worker(args, mode, cold=cold) for mode in order})
            c = "cold" if cold else "warm"
            print(
                f"  {c} round {r}: "
                + ", ".join(f"{m} {rounds[cold][-1][m]['tokens_per_s'] / 1e6:.2f}" for m in modes)
                + " M tok/s"
            )

    def med(cold: bool, mode: str, key: str) -> float:
        return statistics.median(rd[mode][key] for rd in rounds[cold])

    def ratio(cold: bool, mode: str, base: str) -> float:
        return statistics.median(rd[mode]["tokens_per_s"] / rd[base]["tokens_per_s"] for rd in rounds[cold])

    print(f"medians of {args.rounds} rounds:")
    for cold in (True, False):
        for mode in modes:
            print(
                f"  {'cold' if cold else 'warm'} {mode:15s} {med(cold, mode, 'tokens_per_s') / 1e6:7.2f} M tok/s, "
                f"anon RSS +{med(cold, mode, 'anon_growth') / 2**20:.0f} MiB, "
                f"file RSS {med(cold, mode, 'file_peak') / 2**20:.0f} MiB"
            )
    # overlap: the consumer "trains" (sleeps) for about the reader's own time per batch
    per_batch_ms = 1e3 * args.batch_size / med(False, "shuffled", "tokens_per_s")
    ov = run_worker(args, "shuffled", cold=False, step_ms=per_batch_ms)
    print(
        f"  overlap: with a {per_batch_ms:.1f} ms step per batch the loop waits "
        f"{ov['wait_ms_per_batch']:.1f} ms per batch in next() (alone: {med(False, 'shuffled', 'wait_ms_per_batch'):.1f} ms);"
        f" first batch (waits for the buffer fill) {med(False, 'shuffled', 'first_batch_s'):.2f} s"
    )
    print("ratios, median of the per-round ratios (goal: throughput >= 0.8, RAM <= 1.2):")
    for cold in (True, False):
        c = "cold" if cold else "warm"
        for mode in ("shuffled", "shuffled_copy", "shuffled_stored", "sequential") + modes[len(MODES) :]:
            for base in ("baseline_raw", "baseline_f32"):
                print(f"  {c} {mode:15s} / {base}: {ratio(cold, mode, base):.2f}")
        fp32 = args.buffer_tokens * args.d_model * 4
        for mode in ("shuffled", "shuffled_copy"):
            buffer_bytes = rounds[cold][0][mode]["buffer_bytes"]
            copy = f"{args.dtype} row copy {buffer_bytes / 2**20:.0f} MiB" if buffer_bytes else "no row copy"
            print(
                f"  {c} {mode} peak anon RSS growth / (buffer_tokens*d*4): {med(cold, mode, 'anon_growth') / fp32:.2f}"
                f"  (buffer: {copy}; growth without a buffer, sequential mode: "
                f"{med(cold, 'sequential', 'anon_growth') / 2**20:.0f} MiB)"
            )


if __name__ == "__main__":
    main()
