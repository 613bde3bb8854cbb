"""Low-precision storage emulated on float32 arrays: the differentiable rounding op of autocast.

``round_to(x, "float16" | "bfloat16")`` returns the nearest value of the low format (ties to
even), still in ``x``'s float32 (or float64) array: "stored in 16 bits, computed in 32". This
is what a GPU GEMM with float32 accumulation does to its operands and its output, and the
only way to get a bfloat16 GEMM on NumPy, which has no bfloat16 arithmetic.

    float16:  1 sign, 5 exponent, 10 stored mantissa bits; unit roundoff u = 2^-11;
              |x| >= 65520 rounds to inf (max finite 65504): the overflow loss scaling
              guards against; below 2^-14 subnormals, below 2^-25 zero.
    bfloat16: float32's sign and 8 exponent bits, 7 stored mantissa bits; u = 2^-8;
              float32's range (overflow only past 3.39e38).

Rounding goes through ``ml_dtypes.bfloat16`` / ``numpy.float16`` on NumPy arrays and through
the bit-pattern ``round_to_bfloat16`` / CuPy's float16 on CuPy arrays (no bfloat16 dtype
there).

The op (``RoundToLowPrecision``) treats rounding as the identity for differentiation, as
``x.to(torch.bfloat16)`` does, and stores the gradient in the same format:

    y = round(x)        dx = round(dy)

because in a real low-precision pipeline the gradient of a 16-bit tensor is itself a 16-bit
tensor (the GEMM's backward writes 16-bit outputs): a float16 gradient larger than 65504
becomes inf here exactly as it would on a GPU, which is what ``GradScaler`` detects.
"""

from __future__ import annotations

import numpy as np

from tinyllm import backend
from tinyllm.amp.bfloat16 import round_to_bfloat16
from tinyllm.function import Function

LOW_DTYPES = ("float16", "bfloat16")
UNIT_ROUNDOFF = {"float16": 2.0**-11, "bfloat16": 2.0**-8}
_ALIASES = {"float16": "float16", "half": "float16", "fp16": "float16",
            "bfloat16": "bfloat16", "bf16": "bfloat16"}  # fmt: skip


def low_dtype_name(dtype) -> str:
    """'float16' or 'bfloat16' from a name, a NumPy dtype or ``ml_dtypes.bfloat16``."""
    if isinstance(dtype, str):
        name = _ALIASES.get(dtype.lower())
    else:
        name = _ALIASES.get(getattr(np.dtype(dtype), "name", ""))
    if name is None:
        raise ValueError(f"autocast: dtype must be 'float16' or 'bfloat16', got {dtype!r}")
    return name


def round_array(x, dtype: str):
    """``x`` (float32 or float64, NumPy or CuPy) rounded to ``dtype``'s nearest values, in x's
    own dtype. Infinities and NaNs pass through; float16 overflow gives +-inf."""
    xp = backend.get_array_module(x)
    if dtype == "float16":
        with np.errstate(over="ignore"):
            return x.astype(xp.float16).astype(x.dtype)
    if xp is np:
        import ml_dtypes

        return x.astype(ml_dtypes.bfloat16).astype(x.dtype)
    # CuPy: bit-pattern rounding on float32 (float64 is rounded to float32 first; a double
    # rounding that can differ from the direct one by one bfloat16 ulp on exact ties only)
    return round_to_bfloat16(x.astype(xp.float32, copy=False)).astype(x.dtype)


class RoundToLowPrecision(Function):
    """y = round_dtype(x); dx = round_dtype(dy) (straight through, gradient stored low)."""

    @staticmethod
    def forward(ctx, x, dtype):
        ctx.low = dtype
        return round_array(x, dtype)

    @staticmethod
    def backward(ctx, dy):
        # forward: y = round(x); d round / dx is taken as 1, the gradient kept in 16 bits
        return round_array(dy, ctx.low), None


def round_to(input, dtype):
    """``input`` (a float32/float64 Tensor) rounded to float16 or bfloat16 values, keeping its
    array dtype; differentiable (straight through, the gradient rounded the same way)."""
    name = low_dtype_name(dtype)
    if input.dtype not in (np.float32, np.float64):
        raise TypeError(
            f"round_to: input must be float32 or float64, got dtype {input.dtype} "
            f"(shape {tuple(input.shape)})"
        )
    return RoundToLowPrecision.apply(input, name)
