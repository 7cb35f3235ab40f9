"""Benchmark: fp8 stores (one float32 scale per token) against bf16, from ONE float32 harvest.

From a float32 store (`fastsae harvest --dtype float32`), the same rows are written again as bfloat16,
fp8_e4m3 and fp8_e5m2 stores (store.ShardWriter: the encoding `harvest --dtype` uses; same sequences, same
shards), then it prints:
  * round-trip error per token against the float32 rows: relative L2 ||x^ - x|| / ||x||, max and mean,
    over all tokens and over SPECIAL tokens (their norms are the largest);
  * disk bytes per token and layer (activation file + scale file) and of the whole store, against bf16;
  * reader tokens/s (train's ActivationReader, one shuffled epoch, float32 batches) of each store;
  * the same SAE (same config and seed) trained on the bf16 store and on the fp8 store, both evaluated on
    the SAME held-out sequences' bf16 activations (MSE, MSE_st, explained variance, L0), per seed, with the
    fp8/bf16 ratios. The held-out sequences are picked once (--split-seed, --holdout) and left out of the
    training stores (written again without them; train runs with --holdout 0), so every seed, which sets
    the SAE's init and the data order, is evaluated on the same tokens;
  * the noise band: the bf16 runs of every seed (--seeds plus the bf16-only --noise-seeds) against each
    other, to set beside the fp8/bf16 ratios.

    fastsae harvest --out /tmp/fp8bench/f32 --dtype float32 --layers 9 --limit 60 --no-progress
    python benchmarks/fp8_store.py --store /tmp/fp8bench/f32 --layer 9 --seeds 0,1 --noise-seeds 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent  # benchmarks/kernels.py would shadow the `kernels` package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

DTYPES = ("bfloat16", "fp8_e4m3", "fp8_e5m2")
DROP = ("schema_version", "format", "created")
METRICS = ("mse", "mse_st", "explained_variance", "l0")


def rewrite(src, out: Path, dtype: str, keep: set[int] | None = None, rounding: str = "stochastic") -> None:
    """The float32 store's sequences (all, or the global indices in ``keep``, renumbered from 0) as a
    ``dtype`` store, shard for shard (fp8: ``rounding``, ShardWriter's fp8_rounding)."""
    from fastsae.store import ShardWriter

    meta = {k: v for k, v in src.meta.items() if k not in DROP}
    meta["dtype"] = dtype
    first = 0
    for sh in src.shards:
        rows = [i for i in range(sh.num_sequences) if keep is None or sh.first_sequence + i in keep]
        if not rows:
            continue
        info = sh.attrs["fastsae"]
        start = sh.first_sequence if keep is None else first
        with ShardWriter(out, writer=info["writer"], seq=info["seq"], first_sequence=start,
                         layers=sh.layers, d_model=sh.d_model, dtype=dtype, meta=meta,
                         fp8_rounding=rounding) as w:  # fmt: skip
            for i in rows:
                q = sh.sequence(i)
                w.append(token_ids=q.token_ids, token_types=q.token_types,
                         acts={L: np.asarray(q.raw_acts(L)) for L in sh.layers}, source=tuple(q.source),
                         doc_starts=q.doc_starts, doc_sources=q.doc_sources)  # fmt: skip
        first += len(rows)


def layer_rows(store, layer: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([np.asarray(sh.acts(layer), dtype=np.float32) for sh in store.shards])
    types = np.concatenate([np.asarray(sh.token_types) for sh in store.shards])
    return x, types


def round_trip(x: np.ndarray, y: np.ndarray, types: np.ndarray) -> dict:
    norm = np.linalg.norm(x, axis=1)
    ok = norm > 0
    rel = np.linalg.norm(y - x, axis=1)[ok] / norm[ok]
    sp = (types == 0)[ok]
    out = {"max": float(rel.max()), "mean": float(rel.mean())}
    if sp.any():
        out |= {"special_max": float(rel[sp].max()), "special_mean": float(rel[sp].mean())}
    return out


def layer_bytes(store, layer: int) -> int:
    total = 0
    for sh in store.shards:
        total += (sh.path / "acts" / f"layer_{layer}" / "c" / "0" / "0").stat().st_size
        scale = sh.path / "acts" / f"layer_{layer}_scale" / "c" / "0"
        total += scale.stat().st_size if scale.exists() else 0
    return total


def train(store_path: Path, out: Path, layer: int, seed: int, a) -> Path:
    """One SAE on the whole of ``store_path`` (a training store: the held-out sequences are not in it)."""
    from fastsae.train.config import TrainConfig, TrainConfigError
    from fastsae.train.trainer import train_saes

    try:
        cfg = TrainConfig(store=str(store_path), layer=layer, out=str(out), arch=(a.arch,),
                          expansion=(a.expansion,), lr=(a.lr,), k=a.k and (a.k,),
                          sparsity_coef=a.sparsity_coef and (a.sparsity_coef,), tokens=a.tokens,
                          batch_size=a.batch_size, seed=seed, holdout=0.0, device=a.device, progress=False,
                          eval_every=0, checkpoint_every=0, log_every=100, buffer_tokens=1 << 16,
                          normalize_activations=a.normalize_activations,
                          jumprelu_init_threshold=a.jumprelu_init_threshold)  # fmt: skip
    except TrainConfigError as e:  # a bad flag combination (e.g. --sparsity-coef with topk): one line, exit 2
        bad(str(e))
    train_saes(cfg)
    (sae_dir,) = [p for p in out.iterdir() if (p / "cfg.json").is_file()]
    return sae_dir


def heldout_eval(sae_dir: Path, bf16, layer: int, holdout: np.ndarray, device: str) -> dict:
    import torch

    from fastsae.saes.metrics import ReconstructionStats
    from fastsae.saes.saelens import load_sae

    sae = load_sae(sae_dir, device=device)
    stats = ReconstructionStats()
    with torch.no_grad():
        for k, s in enumerate(holdout):
            q = bf16.sequence(int(s))
            x = torch.from_numpy(np.asarray(q.acts(layer), dtype=np.float32)).to(device)
            acts = sae.encode(x)
            stats.update(x, sae.decode(acts), acts=acts, token_types=np.asarray(q.token_types),
                         seq=torch.full((len(x),), k, dtype=torch.int64))  # fmt: skip
    m = stats.compute()
    return {k: float(m[k]) for k in METRICS}


def reader_rate(store, layer: int, batch_size: int, repeats: int = 2) -> float:
    from fastsae.train.reader import ActivationReader

    best = 0.0
    for _ in range(repeats):
        t0, n = time.perf_counter(), 0
        with ActivationReader(store, layer=layer, batch_size=batch_size, epochs=1, drop_last=False) as r:
            for b in r:
                n += len(b)
        best = max(best, n / (time.perf_counter() - t0))
    return best


def bad(msg: str) -> None:
    print(f"fp8_store.py: {msg}", file=sys.stderr)
    sys.exit(2)


def sae_name(a) -> str:
    value = a.k if a.arch in ("topk", "batchtopk") else a.sparsity_coef
    sparsity = ("k" if a.arch in ("topk", "batchtopk") else "sc") + str(value or "default")
    init = "" if a.jumprelu_init_threshold is None else f"-th{a.jumprelu_init_threshold}"
    return f"{a.arch}-x{a.expansion}-{sparsity}{init}{'-norm' if a.normalize_activations else ''}-t{a.tokens}"


def noise_band(bf16: dict[int, dict], fp8: dict[int, dict]) -> dict:
    """Every pair of bf16 runs (seed b / seed a) and each seed's fp8/bf16 ratio, per metric, with the
    largest |ratio - 1| of each kind."""
    seeds = sorted(bf16)
    pairs = {f"{b}/{a}": {k: bf16[b][k] / bf16[a][k] for k in METRICS}
             for i, a in enumerate(seeds) for b in seeds[i + 1:]}  # fmt: skip
    fp8_ratios = {str(s): {k: fp8[s][k] / bf16[s][k] for k in METRICS} for s in sorted(fp8)}

    def widest(ratios: dict) -> dict:
        return {k: max((abs(r[k] - 1) for r in ratios.values()), default=float("nan")) for k in METRICS}

    return {"bf16_runs": seeds, "bf16_pairs": pairs, "bf16_max_dev": widest(pairs),
            "fp8_over_bf16": fp8_ratios, "fp8_max_dev": widest(fp8_ratios)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True, help="a float32 store (fastsae harvest --dtype float32)")
    ap.add_argument("--layer", type=int, default=9)
    ap.add_argument(
        "--seeds", default="0,1", help="SAE seeds (init and data order), each trained on bf16 and fp8"
    )
    ap.add_argument("--noise-seeds", default="", help="more seeds trained on bf16 only, for the noise band")
    ap.add_argument("--fp8", default="fp8_e4m3", help="the fp8 dtype whose SAE is trained against bf16's")
    ap.add_argument("--fp8-rounding", default="stochastic", choices=("stochastic", "nearest"),
                    help="how the fp8 stores are rounded (harvest/convert --fp8-rounding)")  # fmt: skip
    ap.add_argument("--arch", default="jumprelu")
    ap.add_argument("--expansion", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--k", type=int, default=None, help="topk/batchtopk: active latents (default: train's)")
    ap.add_argument(
        "--sparsity-coef", type=float, default=None, help="jumprelu/standard: λ (default: train's)"
    )
    ap.add_argument(
        "--jumprelu-init-threshold", type=float, default=None, help="jumprelu: initial θ (default: train's)"
    )
    ap.add_argument(
        "--normalize-activations",
        action="store_true",
        help="train's --normalize-activations (E||x|| = sqrt d)",
    )
    ap.add_argument("--tokens", type=int, default=150_000)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--holdout", type=float, default=0.1, help="fraction of the sequences held out")
    ap.add_argument("--split-seed", type=int, default=0, help="seed of the held-out choice (train.selection)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--work", default=None, help="folder for the derived stores and SAEs (default: a temp one)"
    )
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--no-reader", action="store_true", help="skip the reader tokens/s measurement")
    a = ap.parse_args()
    if a.k is not None and a.sparsity_coef is not None:
        bad("--k (topk/batchtopk) and --sparsity-coef (jumprelu/standard) exclude each other")

    from fastsae.store import open_store
    from fastsae.train.selection import pick_holdout

    src = open_store(a.store)
    if src.dtype != "float32":
        bad(f"--store {a.store} must be a float32 store, is {src.dtype}")
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="fastsae-fp8-"))
    report: dict = {"tokens": src.num_tokens, "sequences": src.num_sequences, "d_model": src.d_model}
    x, types = layer_rows(src, a.layer)
    report["special_tokens"] = int((types == 0).sum())
    stores, rows = {}, {}
    def named(dtype: str) -> str:  # stores of the two roundings side by side in one --work folder
        return dtype + ("-nearest" if dtype.startswith("fp8") and a.fp8_rounding == "nearest" else "")

    for dtype in DTYPES:
        path = work / named(dtype)
        if not path.exists():
            rewrite(src, path, dtype, rounding=a.fp8_rounding)
        stores[dtype] = open_store(path)
        rows[dtype], _ = layer_rows(stores[dtype], a.layer)
        report[f"round_trip_{dtype}"] = round_trip(x, rows[dtype], types)
        report[f"bytes_per_token_{dtype}"] = layer_bytes(stores[dtype], a.layer) / src.num_tokens
        report[f"store_bytes_{dtype}"] = sum(sh.bytes() for sh in stores[dtype].shards)
    bf = report["bytes_per_token_bfloat16"]
    for dtype in DTYPES[1:]:
        report[f"bytes_ratio_{dtype}"] = report[f"bytes_per_token_{dtype}"] / bf
        report[f"store_bytes_ratio_{dtype}"] = report[f"store_bytes_{dtype}"] / report["store_bytes_bfloat16"]
    if not a.no_reader:
        for dtype in DTYPES:
            report[f"reader_tokens_per_s_{dtype}"] = reader_rate(stores[dtype], a.layer, 4096)
    print(json.dumps(report, indent=1), flush=True)
    if a.no_train:
        return
    holdout = pick_holdout(src.num_sequences, a.split_seed, fraction=a.holdout, count=None)
    keep = set(range(src.num_sequences)) - {int(s) for s in holdout}
    held = np.concatenate([np.arange(src.seq_offsets[s], src.seq_offsets[s + 1]) for s in holdout])
    # what an SAE adds to the held-out error by reproducing the fp8 rows exactly: mean_d (fp8 - bf16)^2
    err = ((rows[a.fp8][held] - rows["bfloat16"][held]) ** 2).mean(1)
    sp = types[held] == 0
    info = {"heldout_sequences": len(holdout), "heldout_tokens": len(held),
            "heldout_special_tokens": int(sp.sum()), "fp8_vs_bf16_sq_err": float(err.mean()),
            "fp8_vs_bf16_sq_err_special": float(err[sp].mean()), "sae": sae_name(a)}  # fmt: skip
    print(json.dumps(info), flush=True)
    train_stores = {}
    for dtype in ("bfloat16", a.fp8):
        path = work / f"{named(dtype)}-train-split{a.split_seed}-h{a.holdout}"
        if not path.exists():
            rewrite(src, path, dtype, keep, rounding=a.fp8_rounding)
        train_stores[dtype] = path

    def run(dtype: str, seed: int) -> dict:
        out = work / f"sae-{sae_name(a)}-{named(dtype)}-seed{seed}"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        sae_dir = train(train_stores[dtype], out, a.layer, seed, a)
        m = heldout_eval(sae_dir, stores["bfloat16"], a.layer, holdout, a.device)
        return m | {"train_s": round(time.perf_counter() - t0, 1)}

    bf16, fp8 = {}, {}
    for seed in (int(s) for s in a.seeds.split(",") if s):
        bf16[seed], fp8[seed] = run("bfloat16", seed), run(a.fp8, seed)
        res = {"bfloat16": bf16[seed], a.fp8: fp8[seed],
               "ratio": {k: fp8[seed][k] / bf16[seed][k] for k in METRICS}}  # fmt: skip
        print(json.dumps({"seed": seed, **res}, indent=1), flush=True)
    for seed in (int(s) for s in a.noise_seeds.split(",") if s):
        bf16[seed] = run("bfloat16", seed)
        print(json.dumps({"seed": seed, "bfloat16": bf16[seed]}, indent=1), flush=True)
    print(json.dumps({"noise_band": noise_band(bf16, fp8)}, indent=1), flush=True)


if __name__ == "__main__":
    main()
