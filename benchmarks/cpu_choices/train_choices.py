"""cpu_ops.py's measurements of train/: mixing.py's row gathers, widening and ahead block, trainer.py's fused
Adam and concurrent SAE steps, each against what it replaced."""

from __future__ import annotations

import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from benchmarks.cpu_choices.timing import D_IN, N, report, timed


# ------------------------------------------------------------------------------------------ train/mixing
def mixing_buffer(rows: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """A bf16 mixing buffer (uint16 bits) [rows, 576] and the sorted slots of one 4096-token batch."""
    rng = np.random.default_rng(0)
    buf = rng.integers(0x3C00, 0x4000, size=(rows, D_IN), dtype=np.uint16)  # finite bf16 patterns
    return buf, np.sort(rng.choice(rows, size=N, replace=False))


def bench_gather_rows(a) -> None:
    buf, slots = mixing_buffer()
    buf_t, idx = torch.from_numpy(buf.view(np.int16)), torch.from_numpy(slots)  # as Mixer keeps it
    out_np, out_t = np.empty((N, D_IN), np.uint16), torch.empty((N, D_IN), dtype=torch.int16)
    t = timed(
        {
            "numpy take": lambda: np.take(buf, slots, axis=0, out=out_np),
            "index_select": lambda: torch.index_select(buf_t, 0, idx, out=out_t),
        },
        rounds=a.rounds,
        reps=a.reps * 2,
    )
    what = "4096 sorted rows of a [65536, 576] bf16 buffer"
    report("gather_rows", "train/mixing.py Mixer._gather", t, "numpy take", "index_select", what)


def bench_widen(a) -> None:
    buf, slots = mixing_buffer()
    rows = buf[slots]
    rows_t = torch.from_numpy(rows.view(np.int16))
    out = torch.empty((N, D_IN), dtype=torch.float32)

    def numpy_shift():  # train/selection.py TokenSelection.decode
        np.left_shift(rows, 16, out=out.numpy().view(np.uint32), dtype=np.uint32)

    t = timed(
        {"numpy shift": numpy_shift, "torch copy_": lambda: out.copy_(rows_t.view(torch.bfloat16))},
        rounds=a.rounds,
        reps=a.reps * 2,
    )
    what = "bf16 -> float32 of a 4096 x 576 batch (exact either way)"
    report("widen", "train/mixing.py Mixer._gather", t, "numpy shift", "torch copy_", what)


def _small_store(root: Path, *, shards: int = 8, per_shard: int = 8192) -> None:
    from fastsae.store import ShardWriter, TokenType

    rng = np.random.default_rng(0)
    seq = 0
    for k in range(shards):
        with ShardWriter(
            root, writer=0, seq=k, first_sequence=seq, layers=[9], d_model=D_IN, dtype="bfloat16",
            meta={"model": "synthetic"},
        ) as w:  # fmt: skip
            for _ in range(per_shard // 512):
                x = rng.normal(size=(512, D_IN)).astype(np.float32)
                types = np.full(512, TokenType.ASSISTANT, np.uint8)
                w.append(token_ids=np.zeros(512, np.int32), token_types=types, acts={9: x}, source=(0, seq))
                seq += 1


def bench_rows_ahead(a) -> None:
    from fastsae.store import TokenType, open_store
    from fastsae.train.mixing import AHEAD_ROWS
    from fastsae.train.selection import TokenSelection

    tmp = Path(tempfile.mkdtemp(prefix="fastsae-cpu-ops-"))
    try:
        _small_store(tmp / "store")
        sel = TokenSelection(
            open_store(tmp / "store"), layer=9, token_types=frozenset(TokenType), seed=0, chunk_tokens=4096
        )
        rng = np.random.default_rng(1)
        ahead_ids = np.sort(rng.choice(sel.num_tokens, size=AHEAD_ROWS, replace=False))  # over all 8 shards
        batches = [np.sort(b) for b in ahead_ids[rng.permutation(AHEAD_ROWS)].reshape(-1, 128)]
        block = torch.empty((AHEAD_ROWS, D_IN), dtype=torch.int16)
        out = torch.empty((128, D_IN), dtype=torch.int16)
        sel.gather_ids(ahead_ids, block)  # pages in

        def direct():  # every 128-token batch gathered from the memmaps: one index_select per shard
            for ids in batches:
                sel.gather_ids(ids, out)

        def ahead():  # as Mixer._rows_ahead: one gather of AHEAD_ROWS rows, batches cut from it
            sel.gather_ids(ahead_ids, block)
            for ids in batches:
                torch.index_select(block, 0, torch.from_numpy(np.searchsorted(ahead_ids, ids)), out=out)

        t = timed({"direct": direct, "ahead": ahead}, rounds=a.rounds, reps=a.reps)
        what = f"{len(batches)} batches of 128 tokens over 8 shards, d 576 bf16"
        report("rows_ahead", "train/mixing.py Mixer._rows_ahead", t, "direct", "ahead", what)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------ train/trainer
def _saes(d_in: int, d_sae_list, *, density: float | None, x: torch.Tensor, arch: str = "jumprelu"):
    from fastsae.saes import Arch, SAESpec, SparseAutoencoder

    out = []
    for i, d_sae in enumerate(d_sae_list):
        sae = SparseAutoencoder(SAESpec(Arch(arch), d_in, d_sae), generator=torch.Generator().manual_seed(i))
        if density is not None:  # θ at the quantile that leaves `density` of the pre-activations active
            with torch.no_grad():
                z = x[:1024] @ sae.W_enc + sae.b_enc
                sae.threshold.copy_(torch.quantile(z, 1 - density, dim=0).clamp_min(1e-3))
        out.append(sae)
    return out


def bench_adam_fused(a) -> None:
    # the optimizer of a 4-SAE sweep (benchmarks/sweep.py's default: d_in 128, expansion 4 and 8, 2 coefs)
    x = torch.randn(1024, 128)
    saes = _saes(128, (512, 512, 1024, 1024), density=None, x=x)
    for sae in saes:
        for p in sae.parameters():
            p.grad = torch.randn_like(p) * 1e-3
    opts = {
        "per-tensor loop": torch.optim.Adam([{"params": list(s.parameters())} for s in saes], lr=1e-5),
        "fused": torch.optim.Adam([{"params": list(s.parameters())} for s in saes], lr=1e-5, fused=True),
    }
    t = timed({k: o.step for k, o in opts.items()}, rounds=a.rounds, reps=a.reps * 4)
    report("adam_fused", "train/trainer.py SweepTrainer", t, "per-tensor loop", "fused", "Adam step, 4 SAEs")


def bench_sae_workers(a) -> None:
    # forward + backward of two JumpReLU SAEs at 5% density, one after another with all threads, or
    # concurrently with the threads split between them (train/trainer.py, --sae-workers)
    if torch.get_num_threads() < 2:
        print("sae_workers     skipped: needs --threads >= 2")
        return
    for d_in in (256, 576):
        _sae_workers(a, d_in)


def _sae_workers(a, d_in: int) -> None:
    threads = torch.get_num_threads()
    x = torch.randn(N, d_in)
    saes = _saes(d_in, (8 * d_in, 8 * d_in), density=0.05, x=x)

    def one(sae):
        sae.training_forward(x, sparsity_coef=1e-3).loss.backward()

    def sequential():
        for sae in saes:
            one(sae)

    def concurrent():
        torch.set_num_threads(max(1, threads // len(saes)))
        try:
            list(pool.map(one, saes))
        finally:
            torch.set_num_threads(threads)

    with ThreadPoolExecutor(len(saes)) as pool:
        t = timed(
            {"sequential": sequential, "concurrent": concurrent}, rounds=a.rounds, reps=max(1, a.reps // 4)
        )
    what = f"fwd+bwd of 2 JumpReLU SAEs, d_in {d_in} 8x, batch 4096, 5%, {threads} threads"
    report(f"sae_workers {d_in}", "train/trainer.py SweepTrainer.run", t, "sequential", "concurrent", what)
