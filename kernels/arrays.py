"""Shape and dtype plumbing shared by the kernel wrappers (arrays in, arrays out).

Kernels see 2-D row-major arrays [R, C]: ``as_rows`` flattens any leading dims into rows
(a view when the input allows it, a copy otherwise) and the wrapper reshapes the result
back. Numba and CUDA bodies want C-contiguous arrays of one float dtype (float32 or
float64); ``contiguous`` makes them so. The reference computes float16/bfloat16 in float32.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tinyllm.backend import get_array_module

__all__ = ["Array", "as_rows", "check_float", "compute_dtype", "contiguous", "upcast"]

# a numpy.ndarray or a cupy.ndarray (CuPy is optional, so no import for the annotation)
Array = Any


def as_rows(x) -> Any:
    """``x`` [..., C] as a 2-D array [R, C], R = prod(leading dims) (R = 1 for a vector)."""
    if x.ndim == 2:
        return x
    C = x.shape[-1] if x.ndim else 1
    return x.reshape(math.prod(x.shape[:-1]) if x.ndim else 1, C)


def contiguous(x):
    """``x`` as a writeable C-contiguous array (no copy when it already is one).

    Read-only inputs (``broadcast_to`` views, memory maps) are copied: Numba compiles a
    separate signature for read-only arrays, which would cost seconds of compilation.
    """
    xp = get_array_module(x)
    if not getattr(x.flags, "writeable", True):
        return xp.array(x, order="C")
    return xp.ascontiguousarray(x)


def compute_dtype(dtype) -> np.dtype:
    """float64 stays float64; float32 and every narrower float compute in float32."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def upcast(x):
    """``x`` in its compute dtype (a no-op for float32 and float64)."""
    dt = compute_dtype(x.dtype)
    return x if x.dtype == dt else x.astype(dt)


def check_float(op: str, name: str, x) -> None:
    """Raise a TypeError naming ``op`` and ``name`` unless ``x`` holds floats."""
    kind = np.dtype(x.dtype).kind
    if kind != "f" and np.dtype(x.dtype).name != "bfloat16":
        raise TypeError(f"{op}: {name} must be a floating-point array, got dtype {x.dtype}")
