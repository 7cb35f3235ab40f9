"""`fastsae eval` against the bare forwards it needs, all timed in the same run (ratios, not seconds).

Prints:
  1. eval with N SAEs at one layer / bare forwards (one clean forward per batch, plus one rerun from the
     layer on for each SAE and each ablation baseline, zero and mean)                        goal <= 1.15
     (eval also runs pass 1, the residuals up to the layer for the mean ablation: shown apart)
  2. N separate one-SAE evals / one N-SAE eval                                                goal >= 1.5

    python benchmarks/eval.py [--model smollm2|PATH] [--layer 9] [--saes 4] [--limit 16] [--data PATH]
                              [--batch-tokens 4096] [--device cpu]

The SAEs are random JumpReLU SAEs (x8), saved to a temporary folder and loaded as eval loads any SAE; the
evaluation set is --limit conversations of --data (MT-Bench-101 from ../shared/data when present, else the
shipped demo chats), tokenised with the model's chat template.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data" / "normalized" / "mtbench101_messages.jsonl"
DEMO = ROOT / "harvest" / "data" / "demo_chats.jsonl"


def timed(fn, device) -> float:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model", default="smollm2", help="smollm2 (the embedded default) or a model folder/.gguf"
    )
    ap.add_argument("--layer", type=int, default=9)
    ap.add_argument("--saes", type=int, default=4, help="SAEs at the layer")
    ap.add_argument("--limit", type=int, default=16, help="conversations")
    ap.add_argument("--data", default=None)
    ap.add_argument("--batch-tokens", type=int, default=4096)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=1, help="best of this many timings of each side")
    a = ap.parse_args()

    import torch

    from fastsae.interp.eval_config import EvalConfig
    from fastsae.interp.evalset import data_set
    from fastsae.interp.evaluate import evaluate, load_entries
    from fastsae.interp.splice import Splicer, batches
    from fastsae.lm import DEFAULT_MODEL, load_model, pick_device
    from fastsae.saes import SAESpec, SparseAutoencoder, save_sae

    device = pick_device(a.device)
    spec = DEFAULT_MODEL if a.model == "smollm2" else a.model
    loaded = load_model(spec, dtype=torch.float32, device=device, progress=False)
    data = Path(a.data) if a.data else (DATA if DATA.is_file() else DEMO)
    evalset, _ = data_set([str(data)], loaded.tokenizer, max_tokens=8192, limit=a.limit)
    d = loaded.d_model
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(a.saes):
            sae = SparseAutoencoder(SAESpec("jumprelu", d, 8 * d), generator=torch.Generator().manual_seed(i))
            with torch.no_grad():
                sae.threshold.fill_(0.5)
            paths.append(Path(tmp) / f"sae{i}")
            save_sae(sae, paths[-1], hook_name=f"blocks.{a.layer}.hook_resid_post", model_name=spec, extra={})

        def cfg(ps):
            return EvalConfig(
                sae=tuple(map(str, ps)),
                out=tmp,
                allow_overlap=True,
                progress=False,
                batch_tokens=a.batch_tokens,
            )

        def run(ps):
            evaluate(cfg(ps), load_entries(cfg(ps)), loaded, evalset, device)

        splicer = Splicer(loaded.model, [a.layer])
        bs = batches(evalset.sequences, batch_tokens=a.batch_tokens, device=device)

        def bare():  # no SAE, no metric: the reruns take the clean residual
            with torch.no_grad():
                for b in bs:
                    clean = splicer.clean(b)
                    for _ in range(a.saes + 2):
                        splicer.rerun(clean, a.layer, clean.resid[a.layer].clone())

        def pass1():
            for b in bs:
                splicer.residuals(b)

        run(paths[:1])  # warm-up: allocator, kernels
        t_bare = min(timed(bare, device) for _ in range(a.repeats))
        t_pass1 = min(timed(pass1, device) for _ in range(a.repeats))
        t_eval = min(timed(lambda: run(paths), device) for _ in range(a.repeats))
        t_sep = min(timed(lambda: [run([p]) for p in paths], device) for _ in range(a.repeats))
    tokens = evalset.num_tokens
    res = {
        "model": spec, "device": str(device), "layer": a.layer, "saes": a.saes, "conversations": len(evalset),
        "tokens": tokens, "batches": len(bs), "threads": torch.get_num_threads(),
        "eval_s": t_eval, "bare_forwards_s": t_bare, "pass1_s": t_pass1, "separate_evals_s": t_sep,
        "eval_over_bare": t_eval / t_bare, "eval_over_bare_plus_pass1": t_eval / (t_bare + t_pass1),
        "separate_over_one": t_sep / t_eval,
    }  # fmt: skip
    print(json.dumps(res, indent=2))
    print(
        f"\n1. eval / bare forwards: {res['eval_over_bare']:.3f}  (goal <= 1.15; "
        f"eval / (bare forwards + pass 1): {res['eval_over_bare_plus_pass1']:.3f})\n"
        f"2. {a.saes} separate evals / one {a.saes}-SAE eval: {res['separate_over_one']:.2f}  (goal >= 1.5)"
    )


if __name__ == "__main__":
    main()
