"""The held-out split of a store's sequences: a pure function of (sequence count, seed, fraction or count),
so that train (which holds them out) and the analysis stage (which evaluates on them) agree without
importing each other."""

from __future__ import annotations

import numpy as np

HOLDOUT_STREAM = 0x401D  # rng stream tag of the held-out choice: seeds are [seed, tag]


def holdout_indices(
    num_sequences: int, seed: int, *, fraction: float = 0.0, count: int | None = None
) -> np.ndarray:
    """Sorted global indices of the held-out sequences: ``count`` of them, or ``round(fraction * S)``
    (at least 1 when ``fraction > 0`` and S >= 2); never all of them."""
    if count is None:
        count = max(1, round(fraction * num_sequences)) if fraction > 0 else 0
    count = min(count, num_sequences - 1) if num_sequences >= 2 else 0
    if count == 0:
        return np.zeros(0, np.int64)
    rng = np.random.default_rng([seed, HOLDOUT_STREAM])
    return np.sort(rng.choice(num_sequences, size=count, replace=False)).astype(np.int64)
