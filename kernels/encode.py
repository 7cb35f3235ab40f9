"""Fused JumpReLU encoder in Triton: kernels, launchers and the autograd Function.

Forward, one program per (BLOCK_N, BLOCK_S) tile of z = x @ W_enc + b_enc: K-loop over d_in with tl.dot into
a float32 accumulator; the epilogue adds b_enc, compares with θ and writes acts (dense, the output contract),
adds the tile's active count to l0[row] atomically (integer-valued floats, so exact and order-free), and packs
two bitmasks, 1 bit per entry in int32 words [N, ceil(d_sae/32)]: active = 1[z > θ] and band = 1[|z-θ| < ε/2].
z itself is never written. That is all the backward needs: the θ gradient is
    grad_θ[j] = -(1/ε) Σ_n band[n,j] · (θ_j·grad_acts[n,j] + grad_l0[n])
and grad_z = grad_acts · active. Backward: one tiled kernel writes grad_z and per-row-block partial sums of
grad_b_enc and grad_θ (summed in a fixed order afterwards: deterministic); grad_x = grad_z @ W_enc.T and
grad_W_enc = x.T @ grad_z then use the segment gather kernel (kernels/sparse.py) when grad_z is sparse enough,
dense cuBLAS matmuls otherwise.

fp32 matmul precision follows torch: input_precision="ieee" when torch.get_float32_matmul_precision() is
"highest" (torch's default, i.e. the same numbers as torch eager), "tf32" otherwise. bf16/fp16 use tensor cores
with float32 accumulation; the interpreter upcasts them to float32 after load, and replaces tl.dot (a slow
non-BLAS numpy loop there) by a broadcast multiply-sum unless FASTSAE_INTERPRET_DOT=1.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

from .checks import ENCODE_SHAPES, check_launch
from .dispatch import is_interpreted, use_sparse
from .sparse import col_segments, density, row_segments, segment_gather


@triton.jit
def _encode_fwd_kernel(
    x_ptr,  # [N, D_IN]
    w_ptr,  # [D_IN, D_SAE]
    b_ptr,  # [D_SAE]
    th_ptr,  # [D_SAE]
    acts_ptr,  # [N, D_SAE] out
    l0_ptr,  # [N] float32, zero-initialised, accumulated
    active_ptr,  # [N, WORDS] int32 out
    band_ptr,  # [N, WORDS] int32 out
    N,
    D_IN,
    D_SAE,
    WORDS,
    half_eps,
    UPCAST: tl.constexpr,
    USE_DOT: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_N: tl.constexpr,
):
    # grouped tile order: consecutive programs share W_enc column blocks (better L2 reuse)
    pid = tl.program_id(0)
    n_tiles_n = tl.cdiv(N, BLOCK_N)
    n_tiles_s = tl.cdiv(D_SAE, BLOCK_S)
    group = GROUP_N * n_tiles_s
    first_n = (pid // group) * GROUP_N
    group_n = min(n_tiles_n - first_n, GROUP_N)
    pid_n = first_n + (pid % group) % group_n
    pid_s = (pid % group) // group_n

    rn = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    rs = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    rk = tl.arange(0, BLOCK_K)
    nmask = rn < N
    smask = rs < D_SAE
    acc = tl.zeros((BLOCK_N, BLOCK_S), dtype=tl.float32)
    for k0 in range(0, D_IN, BLOCK_K):
        kk = k0 + rk
        kmask = kk < D_IN
        a = tl.load(x_ptr + rn[:, None] * D_IN + kk[None, :], mask=nmask[:, None] & kmask[None, :], other=0.0)
        w = tl.load(
            w_ptr + kk[:, None].to(tl.int64) * D_SAE + rs[None, :],
            mask=kmask[:, None] & smask[None, :],
            other=0.0,
        )
        if UPCAST:
            a = a.to(tl.float32)
            w = w.to(tl.float32)
        if USE_DOT:
            acc = tl.dot(a, w, acc, input_precision=PRECISION)
        else:  # interpreter: its tl.dot is a slow non-BLAS numpy loop; the same fp32 products, summed
            acc += tl.sum(a[:, :, None] * w[None, :, :], axis=1)

    # epilogue: bias, threshold, acts, l0, bitmasks
    b = tl.load(b_ptr + rs, mask=smask, other=0.0).to(tl.float32)
    th = tl.load(th_ptr + rs, mask=smask, other=1.0).to(tl.float32)
    z = acc + b[None, :]
    valid = nmask[:, None] & smask[None, :]
    active = (z > th[None, :]) & valid
    band = (tl.abs(z - th[None, :]) < half_eps) & valid
    acts = tl.where(active, z, 0.0)
    tl.store(acts_ptr + rn[:, None] * D_SAE + rs[None, :], acts.to(acts_ptr.dtype.element_ty), mask=valid)
    tl.atomic_add(l0_ptr + rn, tl.sum(active.to(tl.float32), axis=1), mask=nmask)

    bit = (tl.full((BLOCK_S,), 1, tl.int64) << (tl.arange(0, BLOCK_S) % 32))[None, :]
    words = pid_s * (BLOCK_S // 32) + tl.arange(0, BLOCK_S // 32)
    wmask = nmask[:, None] & (words < WORDS)[None, :]
    woff = rn[:, None] * WORDS + words[None, :]
    # distinct powers of two: their sum is their OR; sum in int64, truncate to the int32 bit pattern
    active_words = tl.sum(tl.reshape(tl.where(active, bit, 0), (BLOCK_N, BLOCK_S // 32, 32)), 2).to(tl.int32)
    band_words = tl.sum(tl.reshape(tl.where(band, bit, 0), (BLOCK_N, BLOCK_S // 32, 32)), 2).to(tl.int32)
    tl.store(active_ptr + woff, active_words, mask=wmask)
    tl.store(band_ptr + woff, band_words, mask=wmask)


@triton.jit
def _encode_bwd_kernel(
    ga_ptr,  # [N, D_SAE] grad of acts (if HAS_GA)
    gl0_ptr,  # [N] grad of l0 (if HAS_GL0)
    th_ptr,  # [D_SAE]
    active_ptr,  # [N, WORDS] int32
    band_ptr,  # [N, WORDS] int32
    gz_ptr,  # [N, D_SAE] out: grad_acts · active (if HAS_GA)
    gb_part_ptr,  # [cdiv(N, BLOCK_N), D_SAE] float32 out: per-row-block Σ grad_z
    gth_part_ptr,  # [cdiv(N, BLOCK_N), D_SAE] float32 out: per-row-block Σ band·(θ·grad_acts + grad_l0)
    N,
    D_SAE,
    WORDS,
    HAS_GA: tl.constexpr,
    HAS_GL0: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    rn = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    rs = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    nmask = rn < N
    smask = rs < D_SAE
    valid = nmask[:, None] & smask[None, :]
    woff = rn[:, None] * WORDS + (rs // 32)[None, :]
    shift = (rs % 32)[None, :]
    active = ((tl.load(active_ptr + woff, mask=valid, other=0) >> shift) & 1) != 0
    band = ((tl.load(band_ptr + woff, mask=valid, other=0) >> shift) & 1) != 0
    th = tl.load(th_ptr + rs, mask=smask, other=0.0).to(tl.float32)
    per = tl.zeros((BLOCK_N, BLOCK_S), dtype=tl.float32)
    if HAS_GA:
        offs = rn[:, None] * D_SAE + rs[None, :]
        ga = tl.load(ga_ptr + offs, mask=valid, other=0.0).to(tl.float32)
        gz = tl.where(active, ga, 0.0)
        tl.store(gz_ptr + offs, gz.to(gz_ptr.dtype.element_ty), mask=valid)
        tl.store(gb_part_ptr + pid_n * D_SAE + rs, tl.sum(gz, axis=0), mask=smask)
        per += th[None, :] * ga
    if HAS_GL0:
        gl0 = tl.load(gl0_ptr + rn, mask=nmask, other=0.0).to(tl.float32)
        per += gl0[:, None]
    per = tl.where(band, per, 0.0)
    tl.store(gth_part_ptr + pid_n * D_SAE + rs, tl.sum(per, axis=0), mask=smask)


_GPU_FWD_CONFIGS = [
    triton.Config({"BLOCK_N": 128, "BLOCK_S": 128, "BLOCK_K": 64, "GROUP_N": 8}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_N": 128, "BLOCK_S": 256, "BLOCK_K": 64, "GROUP_N": 8}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_N": 128, "BLOCK_S": 128, "BLOCK_K": 32, "GROUP_N": 8}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_N": 64, "BLOCK_S": 128, "BLOCK_K": 64, "GROUP_N": 8}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_N": 64, "BLOCK_S": 64, "BLOCK_K": 32, "GROUP_N": 8}, num_warps=4, num_stages=3),
]
# The interpreter has no driver to autotune with; one small config keeps several tiles in the tests' shapes.
_INTERPRET_FWD = {"BLOCK_N": 32, "BLOCK_S": 128, "BLOCK_K": 128, "GROUP_N": 2}
_BWD_BLOCKS = {"BLOCK_N": 32, "BLOCK_S": 128}  # memory-bound; bitmask words need BLOCK_S % 32 == 0


@functools.cache
def _autotuned_fwd():
    """The forward with GPU autotuning (built on first use; the interpreter has no driver to tune with)."""
    return triton.autotune(
        _GPU_FWD_CONFIGS,
        key=["N", "D_IN", "D_SAE", "UPCAST", "USE_DOT", "PRECISION"],
        reset_to_zero=["l0_ptr"],
    )(_encode_fwd_kernel)


def _precision(dtype: torch.dtype) -> str:
    if dtype != torch.float32:
        return "tf32"  # ignored for 16-bit inputs
    return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def encode_forward(x, W_enc, b_enc, threshold, bandwidth: float):
    """Launch the fused forward: (acts [N, d_sae], l0 float32 [N], active bits, band bits)."""
    interp = is_interpreted(_encode_fwd_kernel)
    tensors = {"x": x, "W_enc": W_enc, "b_enc": b_enc, "threshold": threshold}
    check_launch("jumprelu_encode", tensors, ENCODE_SHAPES, interpreted=interp)
    n, d_in = x.shape
    d_sae = W_enc.shape[1]
    words = triton.cdiv(d_sae, 32)
    acts = torch.empty(n, d_sae, dtype=x.dtype, device=x.device)
    l0 = torch.zeros(n, dtype=torch.float32, device=x.device)
    active = torch.empty(n, words, dtype=torch.int32, device=x.device)
    band = torch.empty(n, words, dtype=torch.int32, device=x.device)
    if n == 0 or d_sae == 0:
        return acts, l0, active, band
    args = (x, W_enc, b_enc, threshold, acts, l0, active, band, n, d_in, d_sae, words, 0.5 * bandwidth)
    flags = {
        "UPCAST": interp and x.dtype != torch.float32,
        "USE_DOT": not interp or os.environ.get("FASTSAE_INTERPRET_DOT", "0") == "1",
        "PRECISION": _precision(x.dtype),
    }
    if interp:
        c = _INTERPRET_FWD
        grid = (triton.cdiv(n, c["BLOCK_N"]) * triton.cdiv(d_sae, c["BLOCK_S"]),)
        _encode_fwd_kernel[grid](*args, **flags, **c)
    else:

        def grid(meta):
            return (triton.cdiv(n, meta["BLOCK_N"]) * triton.cdiv(d_sae, meta["BLOCK_S"]),)

        _autotuned_fwd()[grid](*args, **flags)
    return acts, l0, active, band


class JumpReLUTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W_enc, b_enc, threshold, bandwidth: float):
        acts, l0, active, band = encode_forward(x, W_enc, b_enc, threshold, bandwidth)
        ctx.bandwidth = bandwidth
        ctx.save_for_backward(x, W_enc, threshold, active, band)
        return acts, l0.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_acts, grad_l0):
        x, W_enc, threshold, active, band = ctx.saved_tensors
        n, d_sae = x.shape[0], W_enc.shape[1]
        has_ga, has_gl0 = grad_acts is not None, grad_l0 is not None
        bn, bs = _BWD_BLOCKS["BLOCK_N"], _BWD_BLOCKS["BLOCK_S"]
        row_blocks = triton.cdiv(n, bn)
        gz = torch.empty(n, d_sae, dtype=x.dtype, device=x.device) if has_ga else None
        launch = n > 0 and d_sae > 0 and (has_ga or has_gl0)
        alloc = torch.empty if launch else torch.zeros  # the kernel writes every partial it is launched for
        gb_part = alloc(row_blocks, d_sae, dtype=torch.float32, device=x.device)
        gth_part = alloc(row_blocks, d_sae, dtype=torch.float32, device=x.device)
        if launch:
            ga = grad_acts.contiguous() if has_ga else x
            gl0 = grad_l0.contiguous() if has_gl0 else x
            grid = (row_blocks, triton.cdiv(d_sae, bs))
            _encode_bwd_kernel[grid](
                ga, gl0, threshold, active, band, gz if has_ga else x, gb_part, gth_part,
                n, d_sae, active.shape[1], HAS_GA=has_ga, HAS_GL0=has_gl0, BLOCK_N=bn, BLOCK_S=bs,
            )  # fmt: skip
        grad_threshold = (gth_part.sum(0) * (-1.0 / ctx.bandwidth)).to(threshold.dtype)
        if not has_ga:
            return None, None, None, grad_threshold, None
        grad_b_enc = gb_part.sum(0).to(x.dtype)
        grad_x = grad_W_enc = None
        sparse = use_sparse(density(gz), dtype=x.dtype, device=x.device)
        if ctx.needs_input_grad[0]:
            if sparse:  # grad_z @ W_enc.T, gathering only the W_enc columns each row touches
                off, cols, vals = row_segments(gz)
                grad_x = segment_gather(off, cols, vals, W_enc.t().contiguous(), out_dtype=x.dtype)
            else:
                grad_x = gz @ W_enc.t()
        if ctx.needs_input_grad[1]:
            if sparse:  # (grad_z.T @ x).T, one active feature at a time
                off, rows, vals = col_segments(gz)
                grad_W_enc = segment_gather(off, rows, vals, x, out_dtype=x.dtype).t()
            else:
                grad_W_enc = x.t() @ gz
        return grad_x, grad_W_enc, grad_b_enc, grad_threshold, None
