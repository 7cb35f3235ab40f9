"""Segment gather-sum: the one sparse kernel behind the decoder and both backward passes.

    out[s, :] = Σ_{p in [offsets[s], offsets[s+1])} val[p] · A[idx[p], :]  (+ bias)

With segments = rows of a sparse [N, d_sae] matrix M (CSR) and A = W [d_sae, d], this is M @ W reading only
the rows of W that M touches (decoder forward, encoder grad_x with A = W_enc.T). With segments = columns of M
(CSC) and A = B [N, d], it is M.T @ B for the active features only (grad_W_dec = acts.T @ grad_xhat,
grad_W_enc.T = grad_z.T @ x). Empty segments write zeros (or the bias), so the output needs no zero-fill.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .dispatch import is_interpreted

GPU_SEGMENT_BLOCKS = {"BLOCK_SEG": 2, "BLOCK_P": 16}  # untuned first guess (no GPU measured yet)


@triton.jit
def _segment_gather_kernel(
    off_ptr,  # [S+1] int64
    idx_ptr,  # [nnz] int64
    val_ptr,  # [nnz]
    a_ptr,  # [*, D]
    bias_ptr,  # [D]
    out_ptr,  # [S, D]
    S,
    D,
    stride_a,
    stride_o,
    HAS_BIAS: tl.constexpr,
    BLOCK_SEG: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # one program: BLOCK_SEG segments x BLOCK_D output columns; each step gathers BLOCK_P entries per segment
    segs = tl.program_id(0).to(tl.int64) * BLOCK_SEG + tl.arange(0, BLOCK_SEG)
    smask = segs < S
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    start = tl.load(off_ptr + segs, mask=smask, other=0)
    end = tl.load(off_ptr + segs + 1, mask=smask, other=0)
    longest = tl.max(end - start, axis=0)
    acc = tl.zeros((BLOCK_SEG, BLOCK_D), tl.float32)
    for p0 in range(0, longest, BLOCK_P):
        p = start[:, None] + p0 + tl.arange(0, BLOCK_P)[None, :]  # [SEG, P]
        pmask = p < end[:, None]
        idx = tl.load(idx_ptr + p, mask=pmask, other=0)
        v = tl.load(val_ptr + p, mask=pmask, other=0.0).to(tl.float32)
        a = tl.load(
            a_ptr + idx[:, :, None] * stride_a + cols[None, None, :],
            mask=pmask[:, :, None] & cmask[None, None, :],
            other=0.0,
        ).to(tl.float32)  # upcast right after load: bf16 arithmetic is wrong in the interpreter
        acc += tl.sum(v[:, :, None] * a, axis=1)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    tl.store(
        out_ptr + segs[:, None] * stride_o + cols[None, :],
        acc.to(out_ptr.dtype.element_ty),
        mask=smask[:, None] & cmask[None, :],
    )


def segment_gather(
    offsets: torch.Tensor,  # [S+1] int64
    idx: torch.Tensor,  # [nnz] int64
    val: torch.Tensor,  # [nnz]
    a: torch.Tensor,  # [R, D]
    *,
    bias: torch.Tensor | None = None,  # [D]
    out_dtype: torch.dtype,
) -> torch.Tensor:  # [S, D]
    """Launch the segment gather-sum (see module doc)."""
    if a.stride(-1) != 1:
        a = a.contiguous()
    n_seg, d = offsets.shape[0] - 1, a.shape[1]
    out = torch.empty(n_seg, d, dtype=out_dtype, device=a.device)
    if n_seg == 0 or d == 0:
        return out
    if is_interpreted(
        _segment_gather_kernel
    ):  # few, large programs: the interpreter's cost is per program and per op
        blocks = {"BLOCK_SEG": 64, "BLOCK_P": 4, "BLOCK_D": min(256, triton.next_power_of_2(d))}
    else:
        blocks = {**GPU_SEGMENT_BLOCKS, "BLOCK_D": min(256, triton.next_power_of_2(d))}
    grid = (triton.cdiv(n_seg, blocks["BLOCK_SEG"]), triton.cdiv(d, blocks["BLOCK_D"]))
    _segment_gather_kernel[grid](
        offsets,
        idx,
        val,
        a,
        bias if bias is not None else a,
        out,
        n_seg,
        d,
        a.stride(0),
        out.stride(0),
        HAS_BIAS=bias is not None,
        **blocks,
        num_warps=4,
    )
    return out


def row_segments(m: torch.Tensor):
    """CSR of the nonzeros of m [N, S]: (offsets [N+1], cols [nnz], vals [nnz])."""
    rows, cols = (m != 0).nonzero(as_tuple=True)
    return _offsets(rows, m.shape[0]), cols, m[rows, cols]


def col_segments(m: torch.Tensor):
    """CSC of the nonzeros of m [N, S]: (offsets [S+1], rows [nnz], vals [nnz]), sorted by column."""
    cols, rows = (m.t() != 0).nonzero(as_tuple=True)
    return _offsets(cols, m.shape[1]), rows, m[rows, cols]


def _offsets(keys: torch.Tensor, n: int) -> torch.Tensor:
    off = torch.zeros(n + 1, dtype=torch.int64, device=keys.device)
    torch.cumsum(torch.bincount(keys, minlength=n), 0, out=off[1:])
    return off


def density(m: torch.Tensor) -> float:
    """Nonzero fraction of m (one device sync)."""
    return int(torch.count_nonzero(m)) / max(m.numel(), 1)
