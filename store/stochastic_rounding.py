"""Stochastic rounding to fp8, reproducible on any device: the dither of each value comes from an integer hash
of where the value sits in the store (global sequence, token, layer, dimension), not from an RNG stream.

Why: a token whose rows barely vary between occurrences (``<|im_start|>`` and ``<|im_end|>`` in ChatML) gets
nearly the same nearest-even rounding every time; an SAE that reconstructs those tokens well then learns the
rounded row, and that shared rounding error is what its special-token MSE keeps (benchmarks/README.md, fp8
section). Rounded up with probability (y - lo) / (hi - lo), each value is unbiased: the occurrences' errors
average out. The hash uses only int64 arithmetic on 32-bit values (no RNG, no float), so the CPU and the GPU
give the same codes: a store harvested on a GPU equals one converted on a CPU, bit for bit.
"""

from __future__ import annotations

from typing import Any

M32 = 0xFFFFFFFF
_MUL = 0x45D9F3B  # a 32-bit integer hash's multiplier (x * _MUL < 2^59: no int64 overflow)
_GOLDEN = 0x9E3779B1


def hash32(x: Any) -> Any:
    """An integer hash of int64 tensors holding values in [0, 2^32), elementwise, into [0, 2^32)."""
    x = ((x >> 16) ^ x) * _MUL & M32
    x = ((x >> 16) ^ x) * _MUL & M32
    return (x >> 16) ^ x


def row_keys(sequences: Any, positions: Any, layer: int) -> Any:
    """int64 keys [n] of rows: token ``positions`` [n] of global ``sequences`` [n] (int64 tensors) at ``layer``."""
    seq = hash32((sequences & M32) ^ (layer * _GOLDEN & M32))
    return hash32((seq + (positions & M32)) & M32)


def sequence_keys(sequences: Any, lengths: Any, layer: int) -> Any:
    """int64 keys of every row of consecutive ``sequences`` (global indices [S]) of ``lengths`` [S] tokens."""
    import torch

    seqs, n = torch.as_tensor(sequences, dtype=torch.int64), torch.as_tensor(lengths, dtype=torch.int64)
    starts = torch.cumsum(n, 0) - n
    positions = torch.arange(int(n.sum())) - torch.repeat_interleave(starts, n)
    return row_keys(torch.repeat_interleave(seqs, n), positions, layer)


def round_stochastic(y: Any, fp8: Any, keys: Any) -> Any:
    """Values y [n, d] (float32, within the format's finite range) -> fp8 codes [n, d] (uint8), each the fp8
    value just below or just above y, the nearer one more often in proportion: unbiased. ``keys`` [n] from
    ``row_keys``; ``fp8`` the torch dtype. Exact values (zeros included) keep their code."""
    import torch

    near = y.to(fp8)  # nearest even: one of the two neighbours
    v = near.float()
    code = near.view(torch.uint8).to(torch.int64)
    up = v.abs() < y.abs()  # the other neighbour is one code away in magnitude, on y's side of v
    mag = torch.where(up, (code & 0x7F) + 1, (code & 0x7F) - 1).clamp_(0, 0x7E)
    other = (mag | torch.where(y < 0, 0x80, 0)).to(torch.uint8)
    gap = (other.view(fp8).float() - v).abs()
    p = torch.where(gap > 0, (y - v).abs() / gap, 0.0)  # the chance to take the other neighbour
    dims = torch.arange(y.shape[1], device=y.device, dtype=torch.int64)
    u = hash32((keys[:, None] ^ (dims[None, :] * _GOLDEN & M32)) & M32)  # [n, d] in [0, 2^32)
    take = u.double() < p.double() * 4294967296.0  # p = 0 for an exact value: it keeps its code
    return torch.where(take, other, near.view(torch.uint8))
