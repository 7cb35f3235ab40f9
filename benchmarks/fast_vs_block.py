"""FAST against block training (BT) on a real instruct model: the paper's comparison, at laptop scale.

    python benchmarks/fast_vs_block.py [--train-conversations 600] [--eval-conversations 120]
                                       [--arms fast,bt_f,bt_p] [--layer 9] [--expansion 8] [--sae-seeds 42,43]
                                       [--sweep 'standard:2,5,12;jumprelu:0.01,0.03,0.1'] [--sweep-tokens N]
                                       [--work DIR]

  1. Data: chats from ../shared/data/normalized (MT-Bench-101 and hh-rlhf, shuffled with --seed) split into
     disjoint training and evaluation conversations; without that folder, the shipped demo chats, split the
     same way. BT(P)'s plain text is ../shared/data/llamafactory/c4_demo.jsonl (the arm is left out without it).
  2. Harvests (the fastsae CLI, cached in --work: rerunning resumes or reuses them):
       fast   the training chats, one conversation at a time (--packing conversation)
       bt_f   the same chats rendered with the chat template and concatenated into --context-size blocks
       bt_p   plain pretraining-style text in --context-size blocks
       eval   the evaluation chats, one conversation at a time: how an instruct model reads at use time
  3. The same SAE (arch, expansion, lr, batch) is trained on each arm's store for the same number of tokens
     (default: one epoch of the fast store), with no hold-out (evaluation uses the eval store), once per
     --sae-seeds seed; ratios are taken between arms trained with the same seed.
  4. Every SAE is evaluated on every eval conversation, as train.metrics computes held-out metrics: MSE (the
     paper's per-sequence averaging), MSE_st (special tokens), explained variance, L0, plus the MSE of the
     first token of each conversation (in BT it is rarely at a block start, where the attention sink forms)
     and of the ordinary (non-special) tokens.
  5. --sweep: each named architecture's sparsity sweep (one `fastsae train` pass per arm, the first SAE seed)
     is trained on every arm and evaluated as in 4; the arms are then compared at equal L0, each arm's
     (log L0, log2 MSE) and (log L0, log2 MSE_st) frontier interpolated as `fastsae eval --compare` does
     (interp/eval_report.py), at every sweep SAE's L0 inside all arms' L0 ranges. The paper compares at
     equal training settings, and BT's SAEs fire more latents: equal L0 is the fairer comparison.

Prints one row per arm and the ratios of each BT arm's MSE and MSE_st to FAST's (the paper reports BT
worse on both, most on special tokens). Quality figures, not timings; the harvests take minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared" / "data"
CHATS = [
    SHARED / "normalized" / "mtbench101_messages.jsonl",
    SHARED / "normalized" / "hh_rlhf_harmless_test_chosen_messages.jsonl",
]
PLAIN = SHARED / "llamafactory" / "c4_demo.jsonl"
DEMO = ROOT / "harvest" / "data" / "demo_chats.jsonl"


def split_chats(work: Path, *, n_train: int, n_eval: int, seed: int) -> tuple[Path, Path]:
    """Disjoint train/eval JSONL files of {"messages": [...]} records, shuffled with ``seed``."""
    sources = [p for p in CHATS if p.is_file()] or [DEMO]
    records = []
    for path in sources:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                if rec.get("messages"):
                    records.append({"messages": rec["messages"]})
    order = np.random.default_rng(seed).permutation(len(records))
    n_eval = min(n_eval, len(records) // 5)
    n_train = min(n_train, len(records) - n_eval)
    eval_recs = [records[i] for i in order[:n_eval]]
    train_recs = [records[i] for i in order[n_eval : n_eval + n_train]]
    out = []
    for name, recs in (("train", train_recs), ("eval", eval_recs)):
        path = work / f"{name}_chats.jsonl"
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        out.append(path)
    print(
        f"data: {', '.join(p.name for p in sources)}: {len(train_recs)} training, {len(eval_recs)} eval conversations"
    )
    return out[0], out[1]


def fastsae(*args: str) -> None:
    cmd = [sys.executable, "-m", "fastsae", *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd[2:])} failed:\n{proc.stderr[-3000:]}")
    lines = [
        line
        for line in proc.stdout.splitlines() + proc.stderr.splitlines()
        if line.startswith(("harvested", "saved"))
    ]
    for line in lines[-1:]:
        print(f"    {line}")


def harvest(
    out: Path, data: Path, *, layer: int, model: str, packing: str, context: int, limit: int | None
) -> None:
    args = ["harvest", "--model", model, "--data", str(data), "--layers", str(layer), "--out", str(out)]
    args += ["--packing", packing, "--no-progress"]
    if packing == "block":
        args += ["--context-size", str(context)]
    if limit:
        args += ["--limit", str(limit)]
    print(f"  harvest {out.name} ({packing})")
    fastsae(*args)


def train(
    store: Path,
    out: Path,
    a,
    *,
    tokens: int,
    seed: int,
    arch: str = "",
    coefs: str = "",
    resume: bool = False,
    lr: float | None = None,
) -> list[Path]:
    """One `fastsae train` pass: one SAE, or a sweep over the comma-separated sparsity coefficients
    (`resume`: a finished run in `out` is reused, an interrupted one resumed, as train does)."""
    if not resume:
        shutil.rmtree(out, ignore_errors=True)
    arch = arch or a.arch
    coefs = coefs or ("" if a.sparsity_coef is None else str(a.sparsity_coef))
    args = ["train", "--store", str(store), "--layer", str(a.layer), "--out", str(out)]
    args += ["--arch", arch, "--expansion", str(a.expansion), "--batch-size", str(a.batch_size)]
    args += ["--tokens", str(tokens), "--seed", str(seed), "--holdout", "0"]
    args += ["--eval-every", "0", "--checkpoint-every", "0", "--no-progress"]
    if coefs:
        args += ["--sparsity-coef", coefs]
    if lr:
        args += ["--lr", str(lr)]
    if a.normalize:
        args += ["--normalize-activations"]
    print(
        f"  train {arch} {coefs or '(default coefficient)'} on {store.name}, seed {seed}: {tokens:,} tokens"
    )
    fastsae(*args)
    return sorted(p.parent for p in out.rglob("cfg.json"))


def evaluate(sae_dir: Path, eval_store, layer: int) -> dict:
    import torch

    from fastsae.saes import HeldOut, heldout_metrics, load_sae
    from fastsae.store import TokenType

    sae = load_sae(sae_dir)
    seqs = [eval_store.sequence(i) for i in range(eval_store.num_sequences)]
    held = HeldOut.from_sequences(((s.acts(layer), s.token_types) for s in seqs), device="cpu")
    out = heldout_metrics(sae, held)
    with torch.no_grad():  # [N] per-token MSE, in chunks: [chunk, d_sae] latents at a time
        err = torch.cat([(sae(x) - x).pow(2).mean(-1) for x in held.x.split(8192)]).double()
    starts = torch.as_tensor(np.cumsum([0] + [s.num_tokens for s in seqs[:-1]]))
    out["mse_first"] = float(err[starts].mean())
    special = torch.as_tensor(np.concatenate([s.token_types for s in seqs]) == TokenType.SPECIAL)
    plain = ~special
    per_seq = torch.zeros(len(seqs), dtype=torch.float64).index_add_(0, held.seq[plain], err[plain])
    counts = torch.zeros(len(seqs), dtype=torch.float64).index_add_(
        0, held.seq[plain], torch.ones_like(err[plain])
    )
    out["mse_plain"] = float((per_seq[counts > 0] / counts[counts > 0]).mean())
    return out


def sparsity_coef(sae_dir: Path) -> float | None:
    extra = json.loads((sae_dir / "fastsae.json").read_text())["extra"]
    return (extra.get("sweep_point") or {}).get("sparsity_coef")


def parse_sweep(spec: str) -> dict[str, str]:
    """'standard:1,4,16;jumprelu:0.004,0.016,0.064' -> {arch: '1,4,16', ...}"""
    out = {}
    for part in filter(None, (x.strip() for x in spec.split(";"))):
        arch, _, coefs = part.partition(":")
        if not coefs or len(coefs.split(",")) < 2:
            sys.exit(f"--sweep: {part!r}: expected ARCH:COEF,COEF[,...] (at least two coefficients)")
        out[arch.strip()] = coefs.strip()
    return out


def equal_l0(points: dict[str, list[dict]], keys=("log2_mse", "log2_mse_st")) -> list[dict]:
    """Each arm's (L0, metric) frontier interpolated linearly in log L0 (`fastsae eval --compare`'s
    interpolation), at every SAE's L0 that lies inside every arm's L0 range (no extrapolation)."""
    from fastsae.interp.eval_report import _frontier

    grid = sorted({r["l0"] for rs in points.values() for r in rs})
    rows = []
    for l0 in grid:
        row = {"l0": l0}
        for arm, rs in points.items():
            for key in keys:
                row[f"{arm}:{key}"] = _frontier([(r["l0"], r[key]) for r in rs], l0)
        if all(v is not None for v in row.values()):
            rows.append(row)
    return rows


def run_sweep(a, arms: list[str], eval_store, tokens: int, work: Path) -> dict:
    """Train each --sweep architecture's sparsity sweep on every arm (first SAE seed); -> the points and
    the equal-L0 rows per architecture, printed as a table."""
    seed = int(a.sae_seeds.split(",")[0]) if a.sae_seeds.strip() else 42
    result = {}
    for arch, coefs in parse_sweep(a.sweep).items():
        points: dict[str, list[dict]] = {}
        for arm in arms:
            name = f"sweep_{arm}_{arch}_x{a.expansion}_{coefs}_{tokens}_lr{a.sweep_lr or 'recipe'}_{seed}"
            out = work / name  # one folder per setting: train refuses a folder holding another config
            points[arm] = []
            kw = dict(tokens=tokens, seed=seed, arch=arch, coefs=coefs, resume=True, lr=a.sweep_lr)
            for sae_dir in train(work / arm, out, a, **kw):
                m = evaluate(sae_dir, eval_store, a.layer)
                points[arm].append({"sparsity_coef": sparsity_coef(sae_dir), **m})
        rows = equal_l0(points)
        result[arch] = {"points": points, "equal_l0": rows}
        print(
            f"\n{arch} x{a.expansion}: sparsity sweep λ = {coefs} on each arm, {tokens:,} training tokens, seed {seed}"
        )
        print(f"  {'arm':6s} {'λ':>8s} {'L0':>8s} {'MSE':>8s} {'MSE_st':>8s}")
        for arm, rs in points.items():
            for r in sorted(rs, key=lambda r: r["l0"]):
                print(f"  {arm:6s} {r['sparsity_coef']:8g} {r['l0']:8.1f} {r['mse']:8.4f} {r['mse_st']:8.4f}")
        if not rows:
            print("  at equal L0: the arms' L0 ranges do not overlap (widen --sweep)")
            continue
        print("  at equal L0 (interpolated in log L0; BT / FAST ratios in brackets):")
        print(f"  {'L0':>8s}" + "".join(f"{arm + ' MSE':>20s}{arm + ' MSE_st':>20s}" for arm in arms))
        for row in rows:
            cells = []
            for arm in arms:
                for key in ("log2_mse", "log2_mse_st"):
                    v = 2 ** row[f"{arm}:{key}"]
                    ratio = 2 ** (row[f"{arm}:{key}"] - row[f"fast:{key}"])
                    cells.append(f"{v:11.4f}" + (f" ({ratio:5.2f}×)" if arm != "fast" else " " * 9))
            print(f"  {row['l0']:8.1f}" + "".join(f"{c:>20s}" for c in cells))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--work", default="/tmp/fastsae_fast_vs_block", help="Cache of the data split and harvests."
    )
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--layer", type=int, default=9)
    ap.add_argument("--train-conversations", type=int, default=600)
    ap.add_argument("--eval-conversations", type=int, default=120)
    ap.add_argument(
        "--plain-documents", type=int, default=150, help="bt_p: documents of plain text harvested."
    )
    ap.add_argument(
        "--context-size", type=int, default=2048, help="Block length of the BT arms (the paper: 2048)."
    )
    ap.add_argument("--arms", default="fast,bt_f,bt_p")
    ap.add_argument("--arch", default="jumprelu")
    ap.add_argument("--expansion", type=int, default=8)
    ap.add_argument("--sparsity-coef", type=float, default=None)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument(
        "--tokens", type=int, default=0, help="Training tokens per arm (0: one epoch of the fast store)."
    )
    ap.add_argument("--no-normalize", dest="normalize", action="store_false")
    ap.add_argument("--seed", type=int, default=42, help="Seed of the train/eval split.")
    ap.add_argument(
        "--sae-seeds",
        default="42,43",
        help="SAE seeds (init and data order): each arm is trained once per seed ('' : no single-SAE runs).",
    )
    ap.add_argument(
        "--sweep",
        default="",
        help="Also compare the arms at equal L0: ARCH:COEF,COEF,...[;ARCH:...] trains that sparsity sweep "
        "on every arm (one pass each, first SAE seed), e.g. 'standard:1,4,16;jumprelu:0.004,0.016,0.064'.",
    )
    ap.add_argument(
        "--sweep-tokens", type=int, default=0, help="Training tokens of each sweep SAE (0: as --tokens)."
    )
    ap.add_argument(
        "--sweep-lr",
        type=float,
        default=None,
        help="Peak lr of the sweep SAEs (default: the recipe's; a short sweep needs a higher one for λ to "
        "move L0 apart).",
    )
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from fastsae.store import open_store

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    arms = [x.strip() for x in a.arms.split(",") if x.strip()]
    if "bt_p" in arms and not PLAIN.is_file():
        print(f"bt_p left out: {PLAIN} is missing")
        arms.remove("bt_p")
    bad = sorted(set(arms) - {"fast", "bt_f", "bt_p"})
    if bad or "fast" not in arms:
        sys.exit(f"--arms: the arms are fast (required), bt_f, bt_p; got {a.arms!r}")
    train_chats, eval_chats = split_chats(
        work, n_train=a.train_conversations, n_eval=a.eval_conversations, seed=a.seed
    )
    h = dict(layer=a.layer, model=a.model, context=a.context_size)
    harvest(work / "eval", eval_chats, packing="conversation", limit=None, **h)
    harvest(work / "fast", train_chats, packing="conversation", limit=None, **h)
    if "bt_f" in arms:
        harvest(work / "bt_f", train_chats, packing="block", limit=None, **h)
    if "bt_p" in arms:
        harvest(work / "bt_p", PLAIN, packing="block", limit=a.plain_documents, **h)
    stores = {arm: open_store(work / arm) for arm in arms}
    eval_store = open_store(work / "eval")
    tokens = a.tokens or stores["fast"].num_tokens // a.batch_size * a.batch_size
    for arm, s in stores.items():
        print(
            f"  {arm}: {s.num_sequences} sequences, {s.num_tokens:,} tokens ({tokens / s.num_tokens:.2f} epochs)"
        )
    seeds = [int(v) for v in a.sae_seeds.split(",") if v.strip()]
    runs: dict[str, list[dict]] = {arm: [] for arm in arms}  # arm -> one metrics dict per seed
    for seed in seeds:
        for arm in arms:
            (sae_dir,) = train(work / arm, work / f"sae_{arm}_{seed}", a, tokens=tokens, seed=seed)
            runs[arm].append(evaluate(sae_dir, eval_store, a.layer))
    if seeds:
        report(a, runs, arms, seeds, tokens, eval_store)
    sweep = run_sweep(a, arms, eval_store, a.sweep_tokens or tokens, work) if a.sweep else {}
    (work / "results.json").write_text(
        json.dumps(
            {"args": vars(a), "tokens": tokens, "seeds": seeds, "runs": runs, "sweep": sweep}, indent=2
        )
    )


def report(a, runs: dict, arms: list[str], seeds: list[int], tokens: int, eval_store) -> None:
    print(
        f"\n{a.arch} x{a.expansion}, layer {a.layer}, {tokens:,} training tokens per arm, SAE seeds {seeds}; "
        f"evaluated on {eval_store.num_sequences} held-out conversations ({eval_store.num_tokens:,} tokens), "
        "raw units, mean over seeds"
    )
    cols = ["mse", "mse_st", "mse_first", "mse_plain", "explained_variance", "l0"]
    print(f"  {'arm':6s}" + "".join(f"{c:>19s}" for c in cols))
    for arm, rs in runs.items():
        print(f"  {arm:6s}" + "".join(f"{np.mean([r[c] for r in rs]):19.4f}" for c in cols))
    names = {"mse": "MSE", "mse_st": "MSE_st", "mse_first": "first token", "mse_plain": "non-special"}
    for arm in arms[1:]:
        parts = []
        for key, name in names.items():
            ratios = [r[key] / f[key] for r, f in zip(runs[arm], runs["fast"], strict=True)]
            spread = f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
            parts.append(f"{name} {np.mean(ratios):.2f}{spread}")
        print(f"  {arm} / fast, same seed: " + ", ".join(parts))


if __name__ == "__main__":
    main()
