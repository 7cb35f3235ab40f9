"""Activation dtypes: stored representations and conversions (bfloat16 is stored as uint16 bit patterns)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .errors import StoreWriteError
from .format import DTYPES, FP8_MAX, SCALE_DTYPE

_TORCH_FP8 = {"fp8_e4m3": "float8_e4m3fn", "fp8_e5m2": "float8_e5m2"}
_FP8_LUT: dict[str, np.ndarray] = {}


def fp8_table(dtype: str) -> np.ndarray:
    """[256] float32: the value of each fp8 bit pattern (torch's own decoding, so reader and writer agree)."""
    if dtype not in _FP8_LUT:
        import torch

        bits = torch.arange(256, dtype=torch.int32).to(torch.uint8)
        _FP8_LUT[dtype] = bits.view(getattr(torch, _TORCH_FP8[dtype])).float().numpy()
    return _FP8_LUT[dtype]


def is_fp8(dtype: str | None) -> bool:
    return dtype in FP8_MAX


def to_float32(raw: np.ndarray, dtype: str, scale: np.ndarray | None = None) -> np.ndarray:
    """Stored representation -> float32. bfloat16 bit patterns (uint16) are widened by a 16-bit shift; fp8
    bit patterns (uint8) need their rows' ``scale`` ([n] float32): x = scale[:, None] * value(q).
    float32 input is returned as is (no copy)."""
    if is_fp8(dtype):
        if scale is None:
            raise ValueError(f"{dtype} rows need their per-token scales to decode")
        q = np.asarray(raw)
        out = fp8_values(q, dtype, out=np.empty(q.shape, np.float32))
        out *= np.asarray(scale, dtype=np.float32).reshape(-1, *([1] * (q.ndim - 1)))
        return out
    if dtype == "bfloat16":
        raw = np.asarray(raw)
        return (raw.astype(np.uint32) << 16).view(np.float32)
    if dtype in ("float32", "float16"):
        return np.asarray(raw, dtype=np.float32)
    raise ValueError(f"unsupported dtype {dtype!r}; expected one of {sorted(DTYPES)}")


def packed_width(dtype: str, d_model: int) -> int:
    """Bytes (fp8: packed row) or elements (other dtypes) of one stored row as the training reader moves it."""
    return d_model + SCALE_DTYPE.itemsize if is_fp8(dtype) else d_model


def pack_fp8(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """fp8 codes [n, d] uint8 and their scales [n] -> packed rows [n, d + 4] uint8: the codes, then the scale's
    little-endian float32 bytes. One row is one unit for the mixing buffer, the gathers and the upload, so the
    scales travel with their rows and are decoded where the batch lands (``unpack_fp8``)."""
    n, d = q.shape
    out = np.empty((n, d + SCALE_DTYPE.itemsize), np.uint8)
    out[:, :d] = q
    out[:, d:] = np.ascontiguousarray(scale, dtype=SCALE_DTYPE).view(np.uint8).reshape(n, -1)
    return out


def unpack_fp8(packed: Any, dtype: str, *, out: Any = None) -> Any:
    """Packed fp8 rows [n, d + 4] -> float32 [n, d], x = scale * value(q), bit for bit what ``to_float32`` gives
    (one float32 product of two exact values, the same on every device). numpy or torch in, the same kind out; a
    CUDA tensor is decoded on its device (torch's exact fp8 -> float32 cast), a CPU one by ``fp8_values``."""
    is_torch = type(packed).__module__.startswith("torch")
    if is_torch and packed.device.type != "cpu":
        return unpack_fp8_cast(packed, dtype, out=out)
    if is_torch:
        import torch

        n, d = packed.shape[0], packed.shape[1] - SCALE_DTYPE.itemsize
        res = out if out is not None else torch.empty((n, d), dtype=torch.float32)
        unpack_fp8(packed.numpy(), dtype, out=res.numpy())
        return res
    d = packed.shape[1] - SCALE_DTYPE.itemsize
    if out is None:
        out = np.empty((packed.shape[0], d), np.float32)
    fp8_values(packed[:, :d], dtype, out=out)
    out *= np.ascontiguousarray(packed[:, d:]).view(SCALE_DTYPE)  # [n, 1]
    return out


def fp8_values(codes: np.ndarray, dtype: str, *, out: np.ndarray) -> np.ndarray:
    """fp8 bit patterns (uint8, any shape) -> their values into float32 ``out`` (same shape), exactly."""
    shift, unbias = _FP8_BITS[dtype]
    if _denormals_kept(shift, unbias):
        # the code's exponent and mantissa bits placed in float32's make value(q) * 2^-bias_difference exactly,
        # subnormals included (as float32 denormals): 3 in-place passes, several times faster than a table lookup
        bits = out.view(np.int32)
        bits[...] = codes.view(np.int8)  # sign-extended: the sign bit fills bits 7-31
        bits <<= shift
        bits &= np.uint32(0x80000000 | 0x7F << shift).view(np.int32)  # sign, exponent, mantissa
        out *= np.float32(unbias)  # exact: a power of two, and value(q) <= 57344 cannot overflow
    else:  # this thread flushes float32 denormals (FTZ/DAZ): the exact table lookup instead
        np.take(fp8_table(dtype), codes, out=out)
    return out


# shift of an fp8 code's 7 exponent+mantissa bits into float32's, and 2^(127 - the format's exponent bias). Bit
# patterns the encoder never writes with a finite scale (e4m3fn's NaN, e5m2's inf/NaN) come out finite here; their
# row's scale is NaN, so the row still decodes to NaN.
_FP8_BITS = {"fp8_e4m3": (20, 2.0**120), "fp8_e5m2": (21, 2.0**112)}


def _denormals_kept(shift: int, unbias: float) -> bool:
    """Whether float32 arithmetic in this thread keeps denormals (the smallest fp8 subnormal decodes right)."""
    smallest = np.array([1 << shift], np.int32).view(np.float32) * np.float32(unbias)
    return bool(smallest[0] == np.float32(2.0 ** (-9 if shift == 20 else -16)))


def widen(stored: Any, dtype: str, *, out: Any = None) -> Any:
    """A torch tensor of stored rows as the reader moves them (bf16 bits as int16, fp8 packed with the scales) ->
    float32 [n, d_model] on its own device, exactly; into ``out`` when given."""
    import torch

    if is_fp8(dtype):
        return unpack_fp8(stored, dtype, out=out)
    value = stored.view(torch.bfloat16) if dtype == "bfloat16" else stored
    return value.float() if out is None else out.copy_(value)


def unpack_fp8_cast(packed: Any, dtype: str, *, out: Any = None) -> Any:
    """``unpack_fp8`` for a torch tensor on any device, by torch's fp8 -> float32 cast: the GPU path."""
    import torch

    d = packed.shape[1] - SCALE_DTYPE.itemsize
    scale = packed[:, d:].contiguous().view(torch.float32)  # [n, 1]; the store's little-endian = the device's
    if out is None:
        out = torch.empty((packed.shape[0], d), dtype=torch.float32, device=packed.device)
    out.copy_(packed[:, :d].view(getattr(torch, _TORCH_FP8[dtype])))
    return out.mul_(scale)


def encode_acts(x: Any, dtype: str, *, fix_nan: bool = True) -> np.ndarray:
    """Activations of any float dtype (numpy or torch) -> C-contiguous stored representation."""
    if type(x).__module__.startswith("torch"):
        import torch

        t = x.detach()
        if t.device.type != "cpu":
            t = t.to("cpu")
        if not t.is_floating_point():
            raise StoreWriteError(f"activations must be floating point, got torch {t.dtype}")
        if dtype == "bfloat16" and t.dtype == torch.bfloat16:
            return t.contiguous().view(torch.int16).numpy().view(np.uint16)  # bit-exact
        if dtype == "float16" and t.dtype == torch.float16:
            return np.ascontiguousarray(t.numpy())
        x = t.float().numpy()
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise StoreWriteError(f"activations must be floating point, got {x.dtype}")
    if dtype == "float32":
        return np.ascontiguousarray(x, dtype=np.float32)
    if dtype == "float16":
        return np.ascontiguousarray(x, dtype=np.float16)
    return float32_to_bf16_bits(np.asarray(x, dtype=np.float32), fix_nan=fix_nan)


class Fp8Rows(NamedTuple):
    """Activations already encoded by ``encode_fp8_torch`` (harvest encodes on the model's device, before the
    transfer: a byte a value crosses instead of four); ``ShardWriter.append`` stores them as they are."""

    codes: np.ndarray  # [n, d] uint8 fp8 bit patterns
    scales: np.ndarray  # [n] float32


def fp8_row_keys(sequence: int, n: int, layer: int) -> Any:
    """The stochastic-rounding keys of the n rows of global ``sequence`` at ``layer`` (int64 tensor [n])."""
    from .stochastic_rounding import sequence_keys

    return sequence_keys([sequence], [n], layer)


def fp8_shard_keys(first_sequence: int, offsets: Any, layer: int) -> Any:
    """The keys of every row of a shard (its first global sequence and its [S + 1] token offsets), as its writer
    drew them: what re-encoding a shard's float rows needs to give its codes again."""
    from .stochastic_rounding import sequence_keys

    n = np.diff(np.asarray(offsets, dtype=np.int64))
    return sequence_keys(first_sequence + np.arange(len(n)), n, layer)


def fp8_rows(rows: Fp8Rows, *, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(codes, scales) of pre-encoded rows as the writer stores them, checked: uint8 [n, d] and [n] scales."""
    q, scale = np.ascontiguousarray(rows.codes), np.ascontiguousarray(rows.scales)
    if q.dtype != np.uint8 or q.ndim != 2 or scale.dtype != np.float32 or scale.shape != (len(q),):
        raise StoreWriteError(
            f"{where}: encoded fp8 rows need uint8 codes [n, d] and float32 scales [n], got {q.dtype} "
            f"{q.shape} and {scale.dtype} {scale.shape}"
        )
    return q, scale


def encode_fp8(x: Any, dtype: str, *, keys: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Activations [n, d] (numpy, or torch on any device) -> (fp8 bit patterns [n, d] uint8, float32 scales [n])
    as numpy arrays; see ``encode_fp8_torch``."""
    import torch

    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x, dtype=np.float32))
    q, scale = encode_fp8_torch(t, dtype, keys=keys)
    return np.ascontiguousarray(q.cpu().numpy()), np.ascontiguousarray(scale.cpu().numpy(), dtype=np.float32)


def encode_fp8_torch(t: Any, dtype: str, *, keys: Any = None) -> tuple[Any, Any]:
    """A torch tensor [n, d] -> (uint8 codes [n, d], float32 scales [n]) on its own device: each row's max |x|
    maps to the format's largest finite value, clamped first so nothing saturates to NaN (e4m3fn has no inf);
    an all-zero row has scale 0 and q 0. Non-finite input gives a NaN scale. Rounding: with ``keys`` (int64 [n],
    ``store.stochastic_rounding.row_keys``: where the rows sit in the store) stochastic, unbiased and the same on
    every device; without, to nearest even (torch's cast)."""
    import torch

    if t.ndim != 2:
        raise StoreWriteError(f"activations must be [tokens, d_model], got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise StoreWriteError(f"activations must be floating point, got torch {t.dtype}")
    t = t.detach().float()
    amax = t.abs().amax(dim=1) if t.shape[1] else t.new_zeros(t.shape[0])  # NaN if the row holds one, inf if inf
    amax = torch.where(torch.isfinite(amax), amax, torch.nan)
    scale = amax / FP8_MAX[dtype]
    y = (t / torch.where(scale > 0, scale, 1.0)[:, None]).clamp_(-FP8_MAX[dtype], FP8_MAX[dtype])
    fp8 = getattr(torch, _TORCH_FP8[dtype])
    if keys is None:
        return y.to(fp8).view(torch.uint8), scale
    from .stochastic_rounding import round_stochastic

    return round_stochastic(y, fp8, keys.to(y.device)), scale


def float32_to_bf16_bits(x: np.ndarray, *, fix_nan: bool = True) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round-to-nearest-even; NaN stays NaN (fix_nan=False skips that
    pass for callers that reject non-finite values anyway)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).reshape(-1)
    out = np.empty(u.shape, dtype=np.uint16)
    step = 1 << 18  # blockwise, in place: temporaries stay in cache
    for a in range(0, u.size, step):
        ub = u[a : a + step]
        y = ub >> 16
        y &= 1
        y += 0x7FFF
        y += ub
        y >>= 16
        out[a : a + step] = y
    if fix_nan and not all_finite(
        out, "bfloat16"
    ):  # rounding may carry a NaN's payload into inf: keep NaN a NaN
        nan = (u & 0x7FFFFFFF) > 0x7F800000
        out[nan] = (u[nan] >> 16) | 0x0040
    return out.reshape(np.shape(x))


def all_finite(raw: np.ndarray, dtype: str) -> bool:
    if dtype != "bfloat16":
        return bool(np.isfinite(raw).all())
    flat = raw.reshape(-1)
    step = 1 << 18
    tmp = np.empty(min(step, flat.size), dtype=np.uint16)
    for a in range(0, flat.size, step):  # exponent all ones <=> |bits| >= 0x7F80 (inf or NaN)
        t = np.bitwise_and(flat[a : a + step], 0x7FFF, out=tmp[: min(step, flat.size - a)])
        if t.max() >= 0x7F80:
            return False
    return True
