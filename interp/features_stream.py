"""Per-feature statistics of one streaming pass, in memory bounded by d_sae (not by the tokens read).

Each batch's firings (activation > 0) are taken as a sparse list (token, feature, value); from it:
- counts, the activation mass per token type (float64 sums) and a log-spaced histogram;
- a streaming top-k per feature: the batch's candidates that beat the feature's current k-th value are
  ranked within their feature, laid out as [F, K] and merged by one torch.topk over [F, 2K];
- a uniform reservoir of firings per feature: each firing gets a key, a hash of (sequence, position,
  feature, seed), and the R largest keys are kept in the same kind of merge. A hash rather than a random
  stream, so that the sample does not depend on the batch size or the order of the batches.
"""

from __future__ import annotations

import numpy as np
import torch

EMPTY_SEQ = -1


def _signed(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLD, _M1, _M2 = _signed(0x9E3779B97F4A7C15), _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)
_POS, _FEAT = _signed(0xD6E8FEB86659FD93), _signed(0xA0761D6478BD642F)


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def firing_keys(seq: torch.Tensor, pos: torch.Tensor, feat: torch.Tensor, seed: int) -> torch.Tensor:
    """splitmix64 of (seq, pos, feature, seed) -> int64 keys >= 0 (int64 products wrap around)."""
    x = seq * _GOLD + pos * _POS + feat * _FEAT + _signed((seed * 0x2545F4914F6CDD1D) % (1 << 64))
    x = (x ^ _shr(x, 30)) * _M1
    x = (x ^ _shr(x, 27)) * _M2
    x = x ^ _shr(x, 31)
    return x & 0x7FFFFFFFFFFFFFFF


def top_score(val: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """int64 ordered as (activation, key): the bits of a float32 >= 0 order as the float does, and the
    key breaks exact ties (a prefix shared by two conversations gives equal activations) the same way
    whatever the batches."""
    bits = val.float().view(torch.int32).to(torch.int64)
    return (bits << 31) | (key & 0x7FFFFFFF)


class TopSlots:
    """Per feature, the K entries of largest score (descending), with their columns (seq, pos, ...)."""

    def __init__(
        self, F: int, K: int, columns: dict[str, tuple[torch.dtype, int]], *, score_dtype, empty, device
    ):
        self.F, self.K, self.empty_score = F, K, empty
        self.empty = {name: fill for name, (_, fill) in columns.items()}
        self.score = torch.full((F, K), empty, dtype=score_dtype, device=device)
        self.cols = {
            n: torch.full((F, K), fill, dtype=dt, device=device) for n, (dt, fill) in columns.items()
        }

    def merge(self, feat: torch.Tensor, score: torch.Tensor, cols: dict[str, torch.Tensor]) -> None:
        """Merge candidates (feature, score, columns); every real score is > the empty one."""
        keep = score > self.score[feat, -1]  # only what beats the feature's current K-th entry
        if not bool(keep.any()):
            return
        feat, score = feat[keep], score[keep]
        order = torch.argsort(score, descending=True, stable=True)
        order = order[torch.argsort(feat[order], stable=True)]  # by feature, then by score descending
        feat, score = feat[order], score[order]
        rows, inv, counts = torch.unique_consecutive(feat, return_inverse=True, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(feat), device=feat.device) - starts[inv]
        r = rank < self.K
        g, k = inv[r], rank[r]
        buf = torch.full((len(rows), self.K), self.empty_score, dtype=self.score.dtype, device=feat.device)
        buf[g, k] = score[r]
        best, idx = torch.cat([self.score[rows], buf], 1).topk(self.K, dim=1)
        self.score[rows] = best
        for n, c in cols.items():
            b = torch.full_like(buf, self.empty[n], dtype=self.cols[n].dtype)
            b[g, k] = c[keep][order][r].to(b.dtype)
            self.cols[n][rows] = torch.cat([self.cols[n][rows], b], 1).gather(1, idx)


class FeatureStats:
    """Everything the pass records per feature; `update` per batch of encoded tokens, `result` at the end."""

    def __init__(
        self, d_sae: int, *, top_k: int, reservoir: int, n_types: int, hist_edges, seed: int, device
    ):
        F = d_sae
        self.F, self.n_types, self.seed, self.device = F, n_types, seed, device
        self.n_tokens = 0
        self.count = torch.zeros(F, dtype=torch.int64, device=device)
        self.mass = torch.zeros(n_types * F, dtype=torch.float64, device=device)  # [type, feature]
        self.edges = torch.as_tensor(np.asarray(hist_edges), dtype=torch.float32, device=device)
        self.B = len(hist_edges) - 1
        self.hist = torch.zeros(F * self.B, dtype=torch.int64, device=device)
        cols = {"act": (torch.float32, 0.0), "seq": (torch.int64, EMPTY_SEQ), "pos": (torch.int64, -1)}
        self.top = TopSlots(F, top_k, cols, score_dtype=torch.int64, empty=-1, device=device)
        self.res = TopSlots(F, reservoir, cols, score_dtype=torch.int64, empty=-1, device=device)

    def update(self, acts: torch.Tensor, seq: torch.Tensor, pos: torch.Tensor, types: torch.Tensor):
        """acts [n, F] >= 0; seq, pos, types [n] int64 on the device. -> the firings (token, feature, value)."""
        F = self.F
        self.n_tokens += acts.shape[0]
        tok, feat = (acts > 0).nonzero(as_tuple=True)
        val = acts[tok, feat]
        if tok.numel() == 0:
            return tok, feat, val
        self.count += torch.bincount(feat, minlength=F)
        self.mass.index_add_(0, types[tok] * F + feat, val.double())
        b = torch.bucketize(val, self.edges[1:-1], right=True)  # bin i holds [edge i, edge i+1)
        self.hist.index_add_(0, feat * self.B + b, torch.ones_like(b))
        s, p = seq[tok], pos[tok]
        key = firing_keys(s, p, feat, self.seed)
        cols = {"act": val, "seq": s, "pos": p}
        self.top.merge(feat, top_score(val, key), cols)
        self.res.merge(feat, key, cols)
        return tok, feat, val

    def quantiles(self, q: int) -> dict[str, torch.Tensor]:
        """q of each feature's reservoir firings, evenly spaced in its activation order, weakest first."""
        act, seq, pos = self.res.cols["act"], self.res.cols["seq"], self.res.cols["pos"]
        filled = seq >= 0
        n = filled.sum(1, keepdim=True)  # [F, 1]
        score = torch.where(filled, top_score(act, self.res.score), torch.iinfo(torch.int64).max)
        order = score.argsort(dim=1, stable=True)
        j = torch.arange(q, device=act.device)[None, :]
        spaced = ((2 * j + 1) * n) // (2 * q)  # floor((j + 1/2) n / q): distinct when n >= q
        pick = torch.where(n >= q, spaced, j).clamp(max=max(self.res.K - 1, 0))
        idx = order.gather(1, pick)
        ok = j < n
        out = {
            "act": torch.where(ok, act.gather(1, idx), 0.0),
            "seq": torch.where(ok, seq.gather(1, idx), EMPTY_SEQ),
            "pos": torch.where(ok, pos.gather(1, idx), -1),
        }
        return out

    def result(self, n_quantile: int) -> dict[str, np.ndarray]:
        F, cnt = self.F, self.count.double()
        mass = self.mass.view(self.n_types, F).T  # [F, n_types]
        total = mass.sum(1)
        live = self.count > 0
        out = {
            "density": (cnt / max(self.n_tokens, 1)),
            "max_act": self.top.cols["act"][:, 0],
            "mean_act": torch.where(live, total / cnt.clamp(min=1), 0.0).float(),
            "dead": (~live).to(torch.uint8),
            "hist_counts": self.hist.view(F, self.B),
            "type_mass": torch.where(live[:, None], mass / total.clamp(min=1e-300)[:, None], 0.0),
            "top_act": self.top.cols["act"],
            "top_seq": self.top.cols["seq"],
            "top_pos": self.top.cols["pos"].int(),
            "n_fired": self.count,
        }
        q = self.quantiles(n_quantile)
        out.update({"q_act": q["act"].float(), "q_seq": q["seq"], "q_pos": q["pos"].int()})
        return {k: v.cpu().numpy() for k, v in out.items()}
