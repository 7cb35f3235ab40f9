"""`fastsae features` against the SAE's encode alone over the same tokens, and its peak memory at N and 4N
sequences, in one run (ratios, not seconds).

Prints:
  1. the features pass's tokens/s / the encode's alone (the same token batches, already in memory):
     - the streaming pass (store reads, encode, statistics, top-k, reservoir, special-token table) goal >= 0.7
     - the whole run after the input checks (pass, windows, writing the artifact)               (shown)
  2. peak RSS of `fastsae features` at 4N sequences / at N (each in its own subprocess), after its
     input checks (the store's tokenizer loads before)                                        goal <= 1.10

    python benchmarks/features.py [--sae demo/saes/topk-x8-k64] [--sequences 300] [--batch-tokens 4096]
                                  [--device cpu] [--repeats 1]

The SAE: any `fastsae train` folder (default: the README demo's). The store read is its store's
sequences copied over and over into a temporary store of 4N sequences (same model, so `--store` takes
it): a store big enough that both runs read well past the first batches, where the allocator's heap
is still growing to its working size. The pass timings read N of them, the memory runs N and 4N
(seeded samples). Nothing here depends on what the tokens say.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))


def timed(fn, device) -> float:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def config(args, out: str, n: int):
    from fastsae.interp.features_config import FeaturesConfig

    return FeaturesConfig(
        sae=args.sae, out=out, store=args.store, sequences=n, batch_tokens=args.batch_tokens,
        device=args.device, progress=False,
    )  # fmt: skip


def build_store(sae: str, out: Path, n: int) -> Path:
    """A store of n sequences: the SAE's own store's, repeated, with its store.json (same model)."""
    from fastsae.saes import read_sae_info
    from fastsae.store import ShardWriter, open_store, to_float32

    src = open_store(read_sae_info(sae).extra["store"]["path"])
    layer = read_sae_info(sae).extra["store"]["layer"]
    meta = {k: v for k, v in src.meta.items() if k not in ("created", "schema_version", "format")}
    kw = {"layers": [layer], "d_model": src.d_model, "dtype": src.dtype, "meta": meta}
    with ShardWriter(out, writer=0, seq=0, first_sequence=0, **kw) as w:
        for i in range(n):
            sq = src.sequence(i % src.num_sequences)
            acts = {layer: to_float32(sq.raw_acts(layer), src.dtype)}
            w.append(token_ids=sq.token_ids, token_types=sq.token_types, acts=acts, source=(0, i))
    return out


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def child_rss(args) -> None:
    """One `fastsae features` run; prints as JSON its peak RSS (MiB) after the input checks (the peak is
    reset there: loading the tokenizer peaks higher than the pass on a small store), the RSS before it
    and the whole process's peak."""
    import gc

    from fastsae.interp.features import features_from
    from fastsae.interp.features_inputs import open_inputs

    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(args, tmp, args.child)
        inp = open_inputs(cfg)
        gc.collect()
        process_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
        before = _status_mib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM to the current RSS
        meta = features_from(cfg, inp)
    peak = _status_mib("VmHWM")
    process_peak = max(process_peak, peak)
    out = {"rss_mib": peak, "before_mib": before, "process_mib": process_peak}
    print(json.dumps({**out, "tokens": meta["n_tokens"], "sequences": meta["n_sequences"]}))


def throughput(args) -> None:
    import torch

    from fastsae.interp.features import feature_pass, features_from
    from fastsae.interp.features_inputs import open_inputs
    from fastsae.interp.features_read import read_batches
    from fastsae.lm import pick_device
    from fastsae.saes import load_sae

    device = pick_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(args, tmp, args.sequences)
        inp = open_inputs(cfg)
        sae = load_sae(inp.sae_path, device=device).eval()
        batches = list(
            read_batches(inp.store, inp.layer, inp.seqs, batch_tokens=cfg.batch_tokens, device=device)
        )
        tokens = sum(len(b) for b in batches)

        @torch.no_grad()
        def encode_only():
            for b in batches:
                sae.encode(b.x)

        encode_only()  # warm-up: thread pools, allocator
        best = {"encode": [], "pass": [], "whole": []}
        for _ in range(args.repeats):
            best["encode"].append(timed(encode_only, device))
            best["pass"].append(timed(lambda: feature_pass(cfg, inp, sae, device), device))
            best["whole"].append(timed(lambda: features_from(cfg, inp), device))
    t = {k: min(v) for k, v in best.items()}
    print(
        f"{tokens} tokens of {len(inp.seqs)} sequences, SAE {inp.info.spec.arch.value} d_sae {sae.d_sae}, {device}"
    )
    print(f"encode alone          {tokens / t['encode']:10.0f} tokens/s")
    print(
        f"features pass         {tokens / t['pass']:10.0f} tokens/s   ratio {t['encode'] / t['pass']:.2f} (goal >= 0.7)"
    )
    print(
        f"whole run (no checks) {tokens / t['whole']:10.0f} tokens/s   ratio {t['encode'] / t['whole']:.2f}"
    )


def memory(args) -> None:
    runs = {}
    for n in (args.sequences, 4 * args.sequences):
        cmd = [sys.executable, __file__, "--child", str(n), "--sae", args.sae, "--store", args.store, "--batch-tokens", str(args.batch_tokens), "--device", args.device]  # fmt: skip
        r = subprocess.run(cmd, capture_output=True, text=True, check=True)
        runs[n] = json.loads(r.stdout.strip().splitlines()[-1])
    a, b = runs[args.sequences], runs[4 * args.sequences]
    for r in (a, b):
        print(
            f"peak RSS {r['sequences']:6d} sequences ({r['tokens']} tokens): {r['rss_mib']:.0f} MiB during the "
            f"run ({r['before_mib']:.0f} MiB after the input checks; process peak {r['process_mib']:.0f} MiB)"
        )
    print(f"peak RSS 4N / N: {b['rss_mib'] / a['rss_mib']:.3f} (goal <= 1.10)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sae", default=str(ROOT / "demo" / "saes" / "topk-x8-k64"))
    ap.add_argument("--sequences", type=int, default=300, help="N: the runs read N and 4N sequences")
    ap.add_argument("--batch-tokens", type=int, default=4096)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=1, help="best of this many timings of each side")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--store", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        return child_rss(args)
    with tempfile.TemporaryDirectory() as tmp:
        args.store = str(build_store(args.sae, Path(tmp) / "store", 4 * args.sequences))
        throughput(args)
        memory(args)


if __name__ == "__main__":
    main()
