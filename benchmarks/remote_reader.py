"""Benchmark of the remote reader (a store on S3: range requests through the block cache) against the local
memmap reader on the same store, and the block cache's hit rate per epoch.

    python benchmarks/remote_reader.py [--tokens 262144] [--d-model 576] [--shards 4] [--epochs 2]
                                       [--batch-size 4096] [--buffer-tokens 65536] [--chunk-tokens 4096]
                                       [--token-types all] [--small-cache 0.5]

Builds a synthetic bf16 store under /tmp with store.ShardWriter, starts moto's S3 server on loopback
(moto.server.ThreadedMotoServer: a real HTTP S3 endpoint, in this process's threads) and uploads the same
files to a bucket. Then ``--epochs`` passes of shuffled float32 batches, each pass a fresh one-epoch reader with its own seed:

  local        ActivationReader over the local directory (rows in place from the memmaps: the zero-copy path)
  local_copy   the same with zero_copy=False: rows copied into the mixing buffer, as for every row source that
               is not a local memmap (a remote or compressed store)
  remote       ActivationReader over s3://..., an empty block cache first (epoch 1 fetches every block it
               reads; later epochs should be served by the cache: hit rate 1.0, nothing fetched)
  remote_small the same with a cache of ``--small-cache`` x the activation bytes (LRU evicts: later epochs
               fetch again what was evicted)

Per epoch: tokens/s, and for the remote runs the cache's hits, misses (block reads that waited for a
request, an in-flight read-ahead included) and bytes fetched. Loopback S3 measures the reader's own costs
(HTTP, copies, the cache), not a network: moto is a Python server sharing this machine's cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build(
    root: Path, *, tokens: int, d_model: int, shards: int, seed: int = 0, dtype: str = "bfloat16"
) -> None:
    from fastsae.store import ShardWriter

    rng = np.random.default_rng(seed)
    per_shard, first = tokens // shards, 0
    for k in range(shards):
        with ShardWriter(
            root, writer=0, seq=k, first_sequence=first, layers=[0], d_model=d_model, dtype=dtype,
            meta={"identity": {"bench": "remote_reader"}},
        ) as w:  # fmt: skip
            left = per_shard
            while left > 0:
                n = min(left, int(rng.integers(64, 1024)))
                acts = rng.standard_normal((n, d_model), dtype=np.float32)
                types = rng.integers(0, 7, n).astype(np.uint8)
                w.append(
                    token_ids=np.arange(n, dtype=np.int32),
                    token_types=types,
                    acts={0: acts},
                    source=(0, first),
                )
                left -= n
                first += 1


def start_s3() -> tuple[object, str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=f"http://{host}:{port}",
    )  # fmt: skip
    import boto3

    boto3.client("s3").create_bucket(Bucket="fastsae-bench")
    return server, "s3://fastsae-bench/store"


def upload(local: Path, url: str) -> None:
    """The local store's files as objects, data objects before each shard's manifest (as a writer commits)."""
    from fastsae.store.remote import RemoteRoot

    remote = RemoteRoot(url)
    files = sorted(p for p in local.rglob("*") if p.is_file() and not p.name.startswith("."))
    heads = [p for p in files if p.name == "zarr.json" and p.parent.parent == local]
    rest = [p for p in files if p not in heads]
    remote.put_files([(p, p.relative_to(local).as_posix()) for p in rest])
    remote.put_files([(p, p.relative_to(local).as_posix()) for p in heads])


def run(store, args, label: str, **reader_kw) -> dict:
    """``--epochs`` passes, each a fresh one-epoch reader with its own seed (another permutation of the same
    chunks, as a later epoch is): timing and cache counts are then exactly that pass's."""
    from fastsae.train.reader import ActivationReader

    cache = getattr(store, "cache", None)
    epochs = []
    for e in range(args.epochs):
        before = None if cache is None else (cache.stats.hits, cache.stats.misses, cache.stats.fetched_bytes)
        t0 = time.perf_counter()
        reader = ActivationReader(
            store, layer=0, batch_size=args.batch_size, buffer_tokens=args.buffer_tokens,
            chunk_tokens=args.chunk_tokens, token_types=args.token_types, epochs=1, seed=1 + e, **reader_kw,
        )  # fmt: skip
        tokens = sum(batch.shape[0] for batch in reader)
        seconds = time.perf_counter() - t0
        row = {
            "epoch": e + 1,
            "tokens": tokens,
            "seconds": round(seconds, 3),
            "tokens_per_s": round(tokens / seconds),
        }
        if cache is not None:
            after = (cache.stats.hits, cache.stats.misses, cache.stats.fetched_bytes)
            hits, misses, fetched = (a - b for a, b in zip(after, before, strict=True))
            row.update(hits=hits, misses=misses, hit_rate=round(hits / max(1, hits + misses), 4),
                       fetched_mib=round(fetched / 2**20, 1))  # fmt: skip
        epochs.append(row)
    print(json.dumps({"run": label, "epochs": epochs}), flush=True)
    return {"run": label, "epochs": epochs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=2**18)
    p.add_argument("--d-model", type=int, default=576)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--buffer-tokens", type=int, default=2**16)
    p.add_argument("--chunk-tokens", type=int, default=4096)
    p.add_argument("--token-types", default="all")
    p.add_argument("--dtype", default="bfloat16", help="stored dtype of the synthetic store (e.g. fp8_e4m3)")
    p.add_argument("--small-cache", type=float, default=0.5, help="cache of the last run, x activation bytes")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fastsae_bench_remote_"))
    os.environ["FASTSAE_STORE_CACHE"] = str(work / "cache")
    try:
        from fastsae.store import open_store

        build(work / "local", tokens=args.tokens, d_model=args.d_model, shards=args.shards, dtype=args.dtype)
        server, url = start_s3()
        upload(work / "local", url)
        local = open_store(work / "local")
        act_bytes = local.num_tokens * args.d_model * 2
        print(
            json.dumps(
                {"tokens": local.num_tokens, "shards": len(local.shards), "act_mib": act_bytes / 2**20}
            )
        )
        run(local, args, "local")
        run(local, args, "local_copy", zero_copy=False)
        run(open_store(url), args, "remote")
        shutil.rmtree(work / "cache", ignore_errors=True)
        run(open_store(url, cache_bytes=int(args.small_cache * act_bytes)), args, "remote_small")
        server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
