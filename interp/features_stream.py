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


INT64_MAX = torch.iinfo(torch.int64).max


def _sort(x: torch.Tensor) -> torch.Tensor:
    """Sorted values of an int64 tensor (numpy's SIMD sort on CPU is several times torch's)."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.sort(x.numpy()))
    return torch.sort(x).values


def _group_order(f: torch.Tensor) -> torch.Tensor:
    """A stable order grouping equal small ints (numpy's radix sort on CPU for 16-bit keys)."""
    if f.device.type == "cpu":
        small = f.numpy().astype(np.uint16 if len(f) and int(f.max()) < 1 << 16 else np.int64)
        return torch.from_numpy(np.argsort(small, kind="stable"))
    return torch.argsort(f, stable=True)


class TopSlots:
    """Per feature, the K entries of largest score (int64 >= 0), with their columns.

    Candidates are compared with each feature's threshold (its K-th best, once it has K), buffered, and
    merged when the buffer holds about 2·F·K of them (and at the end). Thresholds only rise, so
    filtering against slightly old ones lets through a few more candidates, never fewer: the result is
    the same as merging every batch. A merge sorts values only (no argsort): (feature, score
    descending) packed in one int64, the score's low bits giving way to the feature's; each feature's
    K-th packed value is its new threshold and everything at or below it is kept (exact ties at the
    threshold: the first in buffer order). The slots of a feature are in no order until `ordered`."""

    def __init__(self, F: int, K: int, columns: dict[str, tuple[torch.dtype, float]], *, device):
        self.F, self.K = F, K
        self.empty = {name: fill for name, (_, fill) in columns.items()}
        self.score = torch.full((F, K), -1, dtype=torch.int64, device=device)
        self.cols = {
            n: torch.full((F, K), fill, dtype=dt, device=device) for n, (dt, fill) in columns.items()
        }
        self.fbits = max(1, (F - 1).bit_length())
        self.shift = 63 - self.fbits
        self.thr = torch.full((F,), INT64_MAX, dtype=torch.int64, device=device)  # packed; MAX: not full
        self.pending: list[tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]] = []
        self.n_pending, self.flush_at = 0, max(2 * F * K, 1 << 20)

    def pack(self, feat: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """Ascending packed order = by feature, then by score descending."""
        return (feat << self.shift) | (((1 << self.shift) - 1) - (score >> self.fbits))

    def add(self, feat: torch.Tensor, score: torch.Tensor, cols: dict[str, torch.Tensor]) -> None:
        idx = (self.pack(feat, score) <= self.thr[feat]).nonzero().squeeze(1)
        if len(idx) == 0:
            return
        self.pending.append((feat[idx], score[idx], {n: c[idx] for n, c in cols.items()}))
        self.n_pending += len(idx)
        if self.n_pending >= self.flush_at:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        F, K = self.F, self.K
        rows = torch.bincount(torch.cat([p[0] for p in self.pending]), minlength=F).nonzero().squeeze(1)
        old = self.score[rows].reshape(-1)
        filled = (old >= 0).nonzero().squeeze(1)  # the slots already holding an entry
        feat = torch.cat([rows.repeat_interleave(K)[filled], *(p[0] for p in self.pending)])
        score = torch.cat([old[filled], *(p[1] for p in self.pending)])
        cols = {n: torch.cat([c[rows].reshape(-1)[filled], *(p[2][n].to(c.dtype) for p in self.pending)])
                for n, c in self.cols.items()}  # fmt: skip
        self.pending, self.n_pending = [], 0
        packed = self.pack(feat, score)
        srt = _sort(packed)
        counts = torch.bincount(srt >> self.shift, minlength=F)
        starts = torch.cumsum(counts, 0) - counts
        kth = srt[(starts + counts.clamp(max=K) - 1).clamp(min=0)]  # each feature's K-th packed value
        t = kth[feat]
        lt, eq = (packed < t).nonzero().squeeze(1), (packed == t).nonzero().squeeze(1)
        ci = torch.cat([lt, eq])  # the strictly better first, then the ties at the threshold
        ci = ci[_group_order(feat[ci])]
        f = feat[ci]
        n_f = torch.bincount(f, minlength=F)
        slot = torch.arange(len(ci), device=ci.device) - (torch.cumsum(n_f, 0) - n_f)[f]
        keep = (slot < K).nonzero().squeeze(1)
        ci, g, k = ci[keep], torch.searchsorted(rows, f[keep]), slot[keep]
        new = torch.full((len(rows), K), -1, dtype=torch.int64, device=feat.device)
        new[g, k] = score[ci]
        self.score[rows] = new
        for n, c in cols.items():
            b = torch.full((len(rows), K), self.empty[n], dtype=c.dtype, device=feat.device)
            b[g, k] = c[ci]
            self.cols[n][rows] = b
        full = rows[counts[rows] >= K]
        self.thr[full] = kth[full]

    def ordered(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(scores [F, K] descending, columns in the same order); empty slots last."""
        self.flush()
        score, idx = self.score.sort(dim=1, descending=True, stable=True)
        return score, {n: c.gather(1, idx) for n, c in self.cols.items()}


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
        self.top = TopSlots(F, top_k, cols, device=device)
        self.res = TopSlots(F, reservoir, cols, device=device)

    def update(self, acts: torch.Tensor, seq: torch.Tensor, pos: torch.Tensor, types: torch.Tensor):
        """acts [n, F] >= 0; seq, pos, types [n] int64 on the device. -> the firings (token, feature, value)."""
        F = self.F
        self.n_tokens += acts.shape[0]
        flat = acts.reshape(-1)
        idx = flat.nonzero().squeeze(1)  # acts >= 0 (-0.0 is zero): one flat pass, no mask
        tok, feat, val = idx // F, idx % F, flat[idx]
        if idx.numel() == 0:
            return tok, feat, val
        self.count += torch.bincount(feat, minlength=F)
        self.mass.index_add_(0, types[tok] * F + feat, val.double())
        b = torch.bucketize(val, self.edges[1:-1], right=True)  # bin i holds [edge i, edge i+1)
        self.hist.index_add_(0, feat * self.B + b, torch.ones_like(b))
        s, p = seq[tok], pos[tok]
        key = firing_keys(s, p, feat, self.seed)
        cols = {"act": val, "seq": s, "pos": p}
        self.top.add(feat, top_score(val, key), cols)
        self.res.add(feat, key, cols)
        return tok, feat, val

    def quantiles(self, q: int) -> dict[str, torch.Tensor]:
        """q of each feature's reservoir firings, evenly spaced in its activation order, weakest first."""
        self.res.flush()
        act, seq, pos = self.res.cols["act"], self.res.cols["seq"], self.res.cols["pos"]
        filled = seq >= 0
        n = filled.sum(1, keepdim=True)  # [F, 1]
        score = torch.where(filled, top_score(act, self.res.score), INT64_MAX)
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
        _, top = self.top.ordered()
        F, cnt = self.F, self.count.double()
        mass = self.mass.view(self.n_types, F).T  # [F, n_types]
        total = mass.sum(1)
        live = self.count > 0
        out = {
            "density": (cnt / max(self.n_tokens, 1)),
            "max_act": top["act"][:, 0],
            "mean_act": torch.where(live, total / cnt.clamp(min=1), 0.0).float(),
            "dead": (~live).to(torch.uint8),
            "hist_counts": self.hist.view(F, self.B),
            "type_mass": torch.where(live[:, None], mass / total.clamp(min=1e-300)[:, None], 0.0),
            "top_act": top["act"],
            "top_seq": top["seq"],
            "top_pos": top["pos"].int(),
            "n_fired": self.count,
        }
        q = self.quantiles(n_quantile)
        out.update({"q_act": q["act"].float(), "q_seq": q["seq"], "q_pos": q["pos"].int()})
        return {k: v.cpu().numpy() for k, v in out.items()}
