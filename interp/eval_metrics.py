"""The metrics of one SAE spliced into the model, overall and per token-type group.

Downstream (per scored position t: the prediction at t of token t+1, grouped by the type of token t+1):
    nll_t      = −log p(token t+1 | spliced forward)                      for clean, zero, mean, each SAE
    ce         = Σ_t nll_t / #scored        (token-weighted, as SAELens and SAEBench)
    ce_per_seq = mean over sequences of their own token-weighted mean
    delta_loss = ce_sae − ce_clean
    recovered  = (ce_ablation − ce_sae) / (ce_ablation − ce_clean)       for zero- and mean-ablation
    kl         = mean_t KL(p_clean,t ‖ p_sae,t)     (--saelens-compatible: also at the sequence's last token,
                                                   whose prediction has no target: it counts in "all" only)
Reconstruction: saes.ReconstructionStats (train's math) on the residuals the model computed here, per
group of the token's own type ("first": the conversation's first token).

Every value that cannot be computed is None with a reason in "null_reasons" (never NaN in the output).
"""

from __future__ import annotations

import math

import torch

from fastsae.interp.eval_config import GROUPS, TYPE_NAMES
from fastsae.saes import CORE_KEYS, ReconstructionStats
from fastsae.store.token_types import NUM_TOKEN_TYPES

RECON_KEYS = (*CORE_KEYS, "cosine_sim", "relative_norm", "dead_frac", "dense_frac")
NO_PREDICTION = "the first token is never predicted"


def token_nll(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """[B, T-1] −log p(token t+1) of the prediction at t: logsumexp − the target's logit (float32 passes
    over the vocabulary, no log-softmax tensor)."""
    x = logits[:, :-1].float()
    return (torch.logsumexp(x, -1) - x.gather(-1, input_ids[:, 1:, None]).squeeze(-1)).double()


KL_CHUNK = 256  # vocabulary slice of one float32 partial dot in token_kl


class CleanDist:
    """The clean predictions of a batch, computed once for every SAE's KL: p_clean and its logsumexp (every
    position, the last one's too: SAELens scores its KL)."""

    def __init__(self, clean_logits: torch.Tensor):
        self.logits = clean_logits.float()
        self.lse = torch.logsumexp(self.logits, -1)
        self.p = torch.exp(self.logits - self.lse[..., None])


def token_kl(clean: CleanDist, logits: torch.Tensor) -> torch.Tensor:
    """[B, T] KL(p_clean ‖ p) = Σ_v p_clean,v (x_clean,v − x_v) − lse_clean + lse (x: logits), at every
    position (t < T-1: the prediction of token t+1)."""
    x = logits.float()
    d, V = clean.logits - x, x.shape[-1]
    m = V // KL_CHUNK * KL_CHUNK
    # partial dots over KL_CHUNK-wide slices of the vocabulary, then their sum: one float32 dot over the
    # whole vocabulary (49k terms) is biased by ~1e-4 on SmolLM2 and depends on the batch's shape
    dot = torch.einsum(
        "btkv,btkv->btk",
        clean.p[..., :m].unflatten(-1, (-1, KL_CHUNK)),
        d[..., :m].unflatten(-1, (-1, KL_CHUNK)),
    ).sum(-1)
    dot = dot + torch.einsum("btv,btv->bt", clean.p[..., m:], d[..., m:])
    return (dot.double() - clean.lse.double() + torch.logsumexp(x, -1).double()).clamp_min(0.0)


NO_TARGET = NUM_TOKEN_TYPES  # the "type" of the prediction after a sequence's last token: in "all" only


class PositionSums:
    """Float64 sums of per-position values by (sequence, type of the predicted token), per named variant.

    Each variant is divided by the position counts of its `counts` key (the CE positions by default;
    --saelens-compatible's KL has positions of its own)."""

    def __init__(self, num_sequences: int, device):
        self.shape = (num_sequences, NUM_TOKEN_TYPES + 1)
        self.device = device
        self.counts: dict[str, torch.Tensor] = {}
        self.sums: dict[str, torch.Tensor] = {}
        self.counted_by: dict[str, str] = {}

    def _zeros(self) -> torch.Tensor:
        return torch.zeros(self.shape, dtype=torch.float64, device=self.device)

    def _index(self, seq, types, mask):
        return (seq[mask] * self.shape[1] + types[mask]).long()

    def count(self, seq, types, mask, key: str = "") -> None:
        idx = self._index(seq, types, mask)
        c = self.counts.setdefault(key, self._zeros())
        c.view(-1).index_add_(0, idx, torch.ones(idx.shape, dtype=torch.float64, device=self.device))

    def add(self, name: str, seq, types, mask, values, counts: str = "") -> None:
        if name not in self.sums:
            self.sums[name] = self._zeros()
            self.counted_by[name] = counts
        self.sums[name].view(-1).index_add_(0, self._index(seq, types, mask), values[mask].double())

    def group(self, name: str, group: str) -> dict:
        """{"ce": token-weighted mean, "ce_per_seq": mean of per-sequence means, "positions": n} of one group."""
        if group == "first":
            return {"ce": None, "ce_per_seq": None, "positions": 0}
        s, c = self.sums[name], self.counts.get(self.counted_by[name], self._zeros())
        if group != "all":
            col = int(TYPE_NAMES[group])
            s, c = s[:, col : col + 1], c[:, col : col + 1]
        s, c = s.sum(1), c.sum(1)
        n = float(c.sum())
        if n == 0:
            return {"ce": None, "ce_per_seq": None, "positions": 0}
        has = c > 0
        return {
            "ce": float(s.sum() / n),
            "ce_per_seq": float((s[has] / c[has]).mean()),
            "positions": int(n),
        }


def recovered(ablation: float | None, sae: float | None, clean: float | None) -> float | None:
    if None in (ablation, sae, clean) or ablation == clean:
        return None
    return (ablation - sae) / (ablation - clean)


class ReconGroups:
    """A ReconstructionStats per group, fed the valid positions of each batch."""

    def __init__(self):
        self.stats = {g: ReconstructionStats() for g in GROUPS}

    def update(self, x, x_hat, acts, *, types, seq, first) -> None:
        special = types == 0
        for g, st in self.stats.items():
            if g == "all":
                m = None
            elif g == "first":
                m = first
            else:
                m = types == int(TYPE_NAMES[g])
            if m is None:
                st.update(x, x_hat, acts=acts, special=special, seq=seq)
            elif bool(m.any()):
                st.update(x[m], x_hat[m], acts=acts[m], special=special[m], seq=seq[m])

    def group(self, g: str) -> dict:
        st = self.stats[g]
        return {**dict.fromkeys(RECON_KEYS), **st.compute(), **st.extras(), "tokens": st.num_tokens}


def downstream(sums: PositionSums, *, sae: str, kl: str, zero: str, mean: str, group: str) -> dict:
    """The CE-family metrics of one SAE for one group, from the named variants' sums."""
    clean, z, m = sums.group("clean", group), sums.group(zero, group), sums.group(mean, group)
    s, k = sums.group(sae, group), sums.group(kl, group)
    out = {
        "ce_clean": clean["ce"], "ce_sae": s["ce"], "ce_zero_abl": z["ce"], "ce_mean_abl": m["ce"],
        "delta_loss": None if s["ce"] is None else s["ce"] - clean["ce"],
        "ce_loss_recovered_zero": recovered(z["ce"], s["ce"], clean["ce"]),
        "ce_loss_recovered_mean": recovered(m["ce"], s["ce"], clean["ce"]),
        "kl": k["ce"],
        "ce_clean_per_seq": clean["ce_per_seq"], "ce_sae_per_seq": s["ce_per_seq"],
        "ce_zero_abl_per_seq": z["ce_per_seq"], "ce_mean_abl_per_seq": m["ce_per_seq"],
        "delta_loss_per_seq": None if s["ce_per_seq"] is None else s["ce_per_seq"] - clean["ce_per_seq"],
        "kl_per_seq": k["ce_per_seq"],
        "scored_positions": s["positions"],
    }  # fmt: skip
    return out


def clean_nulls(metrics: dict, group: str) -> tuple[dict, dict]:
    """(metrics with NaN/inf -> None, {metric: reason} for every None)."""
    out, reasons = {}, {}
    for k, v in metrics.items():
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = v
        if v is None:
            reasons[k] = _reason(k, group, metrics)
    return out, reasons


def _reason(key: str, group: str, metrics: dict) -> str:
    if group == "first" and (key.startswith(("ce", "kl", "delta")) or "recovered" in key):
        return NO_PREDICTION
    if metrics.get("tokens") == 0 or (
        key.startswith(("ce", "kl", "delta")) and not metrics.get("scored_positions")
    ):
        return f"no {group} tokens in the evaluation set"
    if key in ("mse_st", "log2_mse_st"):
        return f"no special tokens among the {group} tokens"
    if "recovered" in key:
        return "the ablation's CE equals the clean CE"
    if key.startswith("log2"):
        return "the MSE is 0"
    return "undefined on these tokens"
