"""Sparse bookkeeping of the torch path: one ActsPlan per sparse acts tensor, shared by encoder and decoder.

The encoder's forward finds the nonzeros of acts once (row-major coordinates = a CSR pattern) and the few
near-threshold "band" entries. Inside the training-only op (kernels/training.py) it attaches that plan to the
acts tensor it returns, and the op's decoder, given that same, unmodified tensor, reuses the pattern for its
forward (CSR @ W_dec) and, in its backward, computes grad_acts = grad_xhat @ W_dec.T only at the entries the
encoder's backward reads — the active ones and the band — with a sampled matmul (SDDMM, cost nnz·d_in
instead of N·d_sae·d_in), and returns it as a sparse COO tensor holding exactly those entries: every gradient
that reaches a leaf through the encoder is exact, but the gradient of x_hat with respect to acts itself
(acts.retain_grad(), hooks on acts) is that sparse tensor, valid at those entries only. That is why only the
training op does it: the public jumprelu_encode / relu_encode attach no plan and the public sae_decode never
reads one, so their gradients are exact at every entry. The CSR products are embedding_bag calls (_bag_sum).
"""

from __future__ import annotations

import warnings

import torch

PLAN_ATTR = "_fastsae_plan"


def _offsets(keys: torch.Tensor, n: int) -> torch.Tensor:
    off = torch.zeros(n + 1, dtype=torch.int64, device=keys.device)
    torch.cumsum(torch.bincount(keys, minlength=n), 0, out=off[1:])
    return off


def _pick(v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """v[idx] for a 1-D v: index_select, faster than advanced indexing on CPU (benchmarks/cpu_ops.py pick)."""
    return v.index_select(0, idx)


def _sort_key(cols: torch.Tensor, n: int) -> torch.Tensor:
    """cols in [0, n) as the narrowest signed int dtype that holds them: torch's stable CPU sort is faster on
    narrower keys (benchmarks/cpu_ops.py sort_key)."""
    for dtype in (torch.int16, torch.int32):
        if n <= torch.iinfo(dtype).max + 1:
            return cols.to(dtype)
    return cols


def _wide(t: torch.Tensor) -> torch.Tensor:
    """CPU sparse kernels (MKL CSR, sampled_addmm) take float32/float64 only: 16-bit operands go as float32."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _bag_sum(
    index: torch.Tensor, table: torch.Tensor, crow: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """out[r] = Σ_{k in crow[r]:crow[r+1]} weights[k]·table[index[k]]  [len(crow) - 1, d]: a CSR matrix times
    table [n, d], as embedding_bag (the recommender-system kernel): on CPU faster than torch.sparse.mm on the
    same CSR, and than the dense matmul, at training densities (benchmarks/cpu_ops.py bag_sum). Computed in
    float32 (16-bit inputs widened), returned in table's dtype."""
    out = torch.nn.functional.embedding_bag(
        index, _wide(table).contiguous(), crow[:-1], mode="sum", per_sample_weights=_wide(weights)
    )
    return out.to(table.dtype)


def _csr(crow, col, vals, shape) -> torch.Tensor:
    with warnings.catch_warnings():  # torch warns once per process that sparse CSR is "in beta"
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, vals, shape, check_invariants=False)


class ActsPlan:
    """Nonzero pattern of an [N, d_sae] matrix (rows sorted, from nonzero()) plus an optional band pattern."""

    def __init__(self, rows, cols, shape, band_rows=None, band_cols=None):
        self.rows, self.cols, self.shape = rows, cols, tuple(shape)
        self.crow = _offsets(rows, self.shape[0])
        self.band_rows, self.band_cols = band_rows, band_cols
        self._band_crow = None
        self._perm = self._crow_t = self._rows_t = None
        self._flat = None  # rows * d_sae + cols, for gathers out of contiguous [N, d_sae] tensors
        self._vals = None  # values of the attached acts at (rows, cols), gathered once
        self.version = -1  # acts._version when attached
        self.grad_acts = self.grad_vals = self.grad_band = None  # left by the decoder's backward

    def attach(self, acts: torch.Tensor) -> None:
        self.version = acts._version
        setattr(acts, PLAN_ATTR, self)

    @staticmethod
    def mark_dense(acts: torch.Tensor) -> None:
        """Record that the encoder found acts too dense for a plan (the decoder then skips its own count)."""
        setattr(acts, PLAN_ATTR, (acts._version, tuple(acts.shape)))

    @staticmethod
    def known_dense(acts: torch.Tensor) -> bool:
        mark = getattr(acts, PLAN_ATTR, None)
        return isinstance(mark, tuple) and mark == (acts._version, tuple(acts.shape))

    @staticmethod
    def of(acts: torch.Tensor) -> ActsPlan | None:
        plan = getattr(acts, PLAN_ATTR, None)
        if not isinstance(plan, ActsPlan) or plan.version != acts._version or plan.shape != tuple(acts.shape):
            return None
        return plan

    def gather(self, m: torch.Tensor) -> torch.Tensor:
        """m at the pattern [nnz]: take() of flat indices, faster than m[rows, cols] on CPU (cpu_ops.py take)."""
        if not m.is_contiguous():
            return m[self.rows, self.cols]
        if self._flat is None:
            self._flat = self.rows * self.shape[1] + self.cols
        return m.view(-1).take(self._flat)

    def values(self, acts: torch.Tensor) -> torch.Tensor:
        """acts at the pattern [nnz], gathered once: acts must be the (unmodified) tensor this plan describes."""
        if self._vals is None:
            self._vals = self.gather(acts)
        return self._vals

    def sparse_grad(
        self, acts: torch.Tensor, vals: torch.Tensor, band_vals: torch.Tensor | None
    ) -> torch.Tensor:
        """The decoder's grad_acts as a sparse COO tensor: vals at the pattern, band_vals at the band entries
        outside it (band entries inside the pattern hold the same value already). Autograd adds it to any dense
        gradient another consumer of acts produces; alone, it reaches the encoder as is (no dense zeros)."""
        rows, cols = self.rows, self.cols
        coalesced = True
        if band_vals is not None and band_vals.numel():
            outside = self.gather_band(acts) == 0  # band entries with z <= θ
            outside = outside.nonzero().squeeze(1)
            rows = torch.cat([rows, _pick(self.band_rows, outside)])
            cols = torch.cat([cols, _pick(self.band_cols, outside)])
            vals = torch.cat([vals, _pick(band_vals, outside)])
            coalesced = False  # unsorted (never duplicated)
        return torch.sparse_coo_tensor(
            torch.stack([rows, cols]), vals, acts.shape, is_coalesced=coalesced, check_invariants=False
        )

    def gather_band(self, m: torch.Tensor) -> torch.Tensor:
        return m[self.band_rows, self.band_cols]

    def mm(self, vals: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """M @ w for M [N, d_sae] with these nonzeros and values: reads only the rows of w [d_sae, d] in cols."""
        return _bag_sum(self.cols, w, self.crow, vals)

    def mm_t(self, vals: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """M.T @ b  [d_sae, d] for b [N, d] (M.T's pattern, its column order computed once and shared)."""
        if self._perm is None:
            self._perm = torch.argsort(_sort_key(self.cols, self.shape[1]), stable=True)
            self._crow_t = _offsets(self.cols, self.shape[1])
            self._rows_t = _pick(self.rows, self._perm)
        return _bag_sum(self._rows_t, b, self._crow_t, _pick(vals, self._perm))

    def sddmm(self, a: torch.Tensor, w: torch.Tensor, *, band: bool = False) -> torch.Tensor:
        """(a @ w.T)[r, c] at each (r, c) of the pattern (or of the band), for a [N, d], w [d_sae, d]."""
        if band:
            if self._band_crow is None:
                self._band_crow = _offsets(self.band_rows, self.shape[0])
            crow, col = self._band_crow, self.band_cols
        else:
            crow, col = self.crow, self.cols
        if col.numel() == 0:
            return a.new_zeros(0)
        a, wt = _wide(a), _wide(w).t()
        mask = _csr(crow, col, a.new_zeros(col.numel()), self.shape)
        return torch.sparse.sampled_addmm(mask, a, wt, beta=0.0).values().to(w.dtype)

    def sum_cols(self, vals: torch.Tensor) -> torch.Tensor:
        """Σ_n M[n, :]  [d_sae]."""
        return torch.zeros(self.shape[1], dtype=vals.dtype, device=vals.device).index_add_(0, self.cols, vals)


def plan_from(m: torch.Tensor, band_rows=None, band_cols=None) -> ActsPlan:
    rows, cols = m.nonzero(as_tuple=True)
    return ActsPlan(rows, cols, m.shape, band_rows, band_cols)
