"""The timing harness of benchmarks/cpu_ops.py: contenders alternating within a round, per-round ratios,
the printed (and --json) rows; the shapes and the synthetic sparse activations the measurements share."""

from __future__ import annotations

import statistics
import time

import torch

N, D_SAE, D_IN = 4096, 4608, 576  # a default-recipe batch of a d_in 576, 8x SAE
N_SMALL_DSAE = 2048  # d_in 256, 8x: 420k nonzeros at 5%


# ----------------------------------------------------------------------------------------------- timing
def timed(contenders: dict, *, rounds: int, reps: int) -> dict[str, list[float]]:
    """{name: [median seconds of `reps` calls, per round]}. A contender is fn() or (prepare, fn): prepare()'s
    result (untimed) is fn's argument. Contenders alternate within a round; one untimed warm-up call each."""
    out: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(rounds + 1):
        for name, c in contenders.items():
            prepare, fn = c if isinstance(c, tuple) else (None, c)
            times = []
            for _ in range(reps if r else 1):
                arg = prepare() if prepare else None
                t0 = time.perf_counter()
                fn(arg) if prepare else fn()
                times.append(time.perf_counter() - t0)
            if r:  # round 0 warms up
                out[name].append(statistics.median(times))
    return out


def ratio(t: dict[str, list[float]], base: str, chosen: str) -> float:
    """Median over rounds of t[base] / t[chosen] of the same round."""
    return statistics.median(a / b for a, b in zip(t[base], t[chosen], strict=True))


ROWS: list[tuple] = []


def report(name: str, where: str, t: dict, base: str, chosen: str, what: str) -> None:
    row = (name, where, what, base, chosen, statistics.median(t[base]), statistics.median(t[chosen]))
    ROWS.append((*row, ratio(t, base, chosen)))
    print(
        f"{name:15} {ratio(t, base, chosen):6.2f}x  {1e3 * row[5]:9.3f} ms {base} -> {1e3 * row[6]:9.3f} ms "
        f"{chosen}   ({where}: {what})",
        flush=True,
    )


def sparse_acts(n: int, d_sae: int, density: float, seed: int = 0) -> torch.Tensor:
    """[n, d_sae] float32, nonnegative, with about `density` nonzeros, at random places."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, d_sae, generator=g)
    return torch.where(u < density, u / density, torch.zeros(()))
