"""Input checks shared by both ops and both backends, and the errors they raise.

Every error names the offending tensor and its shape, dtype or device, and inherits the builtin a
caller would catch (ValueError for shapes/layout/devices, TypeError for dtypes).
"""

from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
ENCODE_SHAPES = {"x": ("N", "d_in"), "W_enc": ("d_in", "d_sae"), "b_enc": ("d_sae",), "threshold": ("d_sae",)}
DECODE_SHAPES = {"acts": ("N", "d_sae"), "W_dec": ("d_sae", "d_in"), "b_dec": ("d_in",)}


class KernelError(Exception):
    """Base class of every error raised by fastsae's kernels."""


class KernelShapeError(KernelError, ValueError):
    """A tensor has the wrong number of dimensions or a size that does not match the others."""


class KernelDtypeError(KernelError, TypeError):
    """A tensor has an unsupported dtype or one that differs from the others."""


class KernelDeviceError(KernelError, ValueError):
    """Tensors live on different devices, or the backend cannot run on their device."""


class KernelLayoutError(KernelError, ValueError):
    """A tensor is not contiguous where a Triton launcher needs it to be."""


class KernelBackendError(KernelError, ValueError):
    """FASTSAE_KERNELS names an unknown backend, or Triton is unavailable."""


def _describe(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {str(t.dtype).removeprefix('torch.')}, device {t.device}"


def check_tensors(
    op: str, tensors: dict[str, torch.Tensor], shapes: dict[str, tuple[str | int, ...]]
) -> dict:
    """Check types, ranks, sizes (symbolic names must agree), dtypes and devices; return the size map.

    `shapes` maps tensor name -> symbolic shape, e.g. {"x": ("N", "d_in"), "b_enc": ("d_sae",)}.
    """
    sizes: dict[str, tuple[int, str]] = {}
    first = None
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise KernelDtypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        spec = shapes[name]
        if t.dim() != len(spec):
            raise KernelShapeError(
                f"{op}: {name} must have {len(spec)} dims {list(spec)}, got shape {tuple(t.shape)}"
            )
        for dim, sym in zip(t.shape, spec, strict=True):
            if isinstance(sym, int):
                if dim != sym:
                    raise KernelShapeError(f"{op}: {name} has shape {tuple(t.shape)}, expected {list(spec)}")
            elif sym in sizes and sizes[sym][0] != dim:
                other, seen = sizes[sym][1], sizes[sym][0]
                raise KernelShapeError(
                    f"{op}: {name} has shape {tuple(t.shape)} but {other} says {sym} = {seen} "
                    f"(expected {name} {list(spec)})"
                )
            else:
                sizes.setdefault(sym, (dim, name))
        if t.dtype not in FLOAT_DTYPES:
            raise KernelDtypeError(f"{op}: {name} must be float32, float16 or bfloat16, got {_describe(t)}")
        if first is None:
            first = (name, t)
        else:
            fname, ft = first
            if t.dtype != ft.dtype:
                raise KernelDtypeError(
                    f"{op}: {name} ({_describe(t)}) must have the same dtype as {fname} ({_describe(ft)})"
                )
            if t.device != ft.device:
                raise KernelDeviceError(
                    f"{op}: {name} ({_describe(t)}) is on a different device than {fname} ({_describe(ft)})"
                )
    return {sym: v[0] for sym, v in sizes.items()}


def check_launch(op: str, tensors: dict[str, torch.Tensor], shapes: dict, *, interpreted: bool) -> None:
    """Everything a Triton launcher needs: shapes, dtypes and one device (check_tensors), a device the kernels
    can run on (CUDA, or anything in the interpreter), and contiguous row-major layout."""
    check_tensors(op, tensors, shapes)
    name, t = next(iter(tensors.items()))
    if t.device.type != "cuda" and not interpreted:
        raise KernelDeviceError(
            f"{op}: compiled Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 before Triton is imported), "
            f"got {name} with {_describe(t)}"
        )
    check_contiguous(op, tensors)


def check_contiguous(op: str, tensors: dict[str, torch.Tensor]) -> None:
    """Triton launchers index rows with unit column stride; demand plain row-major tensors."""
    for name, t in tensors.items():
        if not t.is_contiguous():
            raise KernelLayoutError(
                f"{op}: {name} must be contiguous (row-major), got {_describe(t)} with strides "
                f"{tuple(t.stride())}; call .contiguous() first"
            )


def check_bandwidth(op: str, bandwidth: float) -> float:
    bw = float(bandwidth)
    if not bw > 0 or bw != bw or bw == float("inf"):
        raise KernelShapeError(f"{op}: bandwidth must be a finite number > 0, got {bandwidth!r}")
    return bw
