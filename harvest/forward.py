"""One window of sequences through the model: sorted into padded batches, forwarded once, and cut back into
per-sequence rows of each captured layer, in the store's dtype (fp8: encoded on the model's device first)."""

from __future__ import annotations

import numpy as np

from fastsae.harvest.batching import SeqItem, pad_right, plan_batches
from fastsae.harvest.config import HarvestConfig
from fastsae.store.dtypes import Fp8Rows, encode_fp8_torch, is_fp8
from fastsae.store.stochastic_rounding import sequence_keys


def forward_window(
    hooks, window: list[SeqItem], cfg: HarvestConfig, device, pad_id: int, store_dtype, *, resume_at: int = 0
):
    """Forward one window (sorted into batches), -> per item {layer: tensor [T, d]} in window order; None for
    items of batches that hold only sequences before `resume_at` (committed already: not forwarded)."""
    import torch

    results: list[dict | None] = [None] * len(window)
    # Rows are at most 12.5% padding (plan_batches' default): more padding bought more speed than it cost
    # (benchmarks/harvest.py measures both).
    for batch in plan_batches([len(item) for item in window], cfg.batch_budget(device)):
        if all(window[i].index < resume_at for i in batch):
            continue
        ids, lengths = pad_right([window[i].token_ids for i in batch], pad_id)
        input_ids = torch.from_numpy(ids).to(device)
        hidden = hooks(input_ids).captured  # {layer: [B, T_max, d]}
        mask = torch.from_numpy(np.arange(ids.shape[1])[None, :] < lengths[:, None]).to(device)
        split = lengths.tolist()
        if is_fp8(cfg.dtype):  # encoded on the model's device: a byte a value crosses, not four
            seqs = [window[i].index for i in batch] if cfg.fp8_rounding == "stochastic" else None
            per_layer = {layer: fp8_parts(h[mask], cfg.dtype, split, seqs, layer) for layer, h in hidden.items()}
        else:
            per_layer = {
                layer: torch.split(h[mask].to(store_dtype).cpu(), split)  # one transfer per batch and layer
                for layer, h in hidden.items()
            }
        for row, i in enumerate(batch):
            results[i] = {layer: parts[row] for layer, parts in per_layer.items()}
    return results


def fp8_parts(h, dtype: str, split: list[int], seqs: list[int] | None, layer: int) -> list[Fp8Rows]:
    """A batch's rows of one layer [N, d] (global sequences ``seqs``, ``split`` tokens each), fp8-encoded where
    they are (stochastic rounding keyed as ShardWriter keys it; ``seqs`` None: nearest), moved in one transfer,
    cut per sequence."""
    keys = None if seqs is None else sequence_keys(seqs, split, layer)
    q, scale = encode_fp8_torch(h, dtype, keys=keys)
    q, scale = q.cpu().numpy(), scale.cpu().numpy()
    bounds = np.cumsum([0, *split])
    return [Fp8Rows(q[a:b], scale[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
