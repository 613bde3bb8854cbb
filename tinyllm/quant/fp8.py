"""FP8 E4M3 and E5M2: rounding to the formats, their byte encodings, scaled quantization.

A float format with M mantissa bits, exponent bias b and smallest normal exponent
e_min = 1 - b represents, in the binade [2^e, 2^(e+1)) (e >= e_min), the multiples of
2^(e - M); below 2^e_min (subnormals) the multiples of 2^(e_min - M). Rounding x to the
format is therefore

    step(x) = 2^(max(floor(log2 |x|), e_min) - M)        x_fp8 = rint(x / step) * step

(half to even, exact because step is a power of two), after **saturating** x to the
format's largest finite value: casting 500 to E4M3 gives NaN, not 448, in ``ml_dtypes``.

| format    | bits (s.e.m) | bias | e_min | largest finite | specials                    |
|-----------|--------------|------|-------|----------------|-----------------------------|
| E4M3 (fn) | 1.4.3        | 7    | -6    | 448            | NaN = s.1111.111, no inf    |
| E5M2      | 1.5.2        | 15   | -14   | 57344          | inf and NaN at exponent 31  |

The byte of a value: sign << 7 | exponent_field << M | mantissa_field, with the exponent
field e + bias for normals and 0 for subnormals. ``ml_dtypes`` (optional) provides the same
casts as NumPy dtypes; the tests hold this module to it bit for bit.

Scaled quantization (``quantize_fp8``) divides by s = amax / largest_finite per tensor or per
row, so the largest magnitude lands on the format's largest value: x_hat = s * fp8(x / s).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FP8_FORMATS", "FP8Tensor", "fp8_decode", "fp8_encode", "fp8_round", "quantize_fp8"]


@dataclass(frozen=True)
class _Format:
    name: str
    exponent_bits: int
    mantissa_bits: int
    bias: int
    max_finite: float
    ml_dtype: str  # the ml_dtypes name


FP8_FORMATS = {
    "e4m3": _Format("e4m3", 4, 3, 7, 448.0, "float8_e4m3fn"),
    "e5m2": _Format("e5m2", 5, 2, 15, 57344.0, "float8_e5m2"),
}


def _format(fmt: str) -> _Format:
    if fmt not in FP8_FORMATS:
        raise ValueError(f"fp8: format must be one of {sorted(FP8_FORMATS)}, got {fmt!r}")
    return FP8_FORMATS[fmt]


def _step(a: np.ndarray, f: _Format) -> np.ndarray:
    """The spacing of the format's values around |x| = a (a >= 0)."""
    e_min = 1 - f.bias
    _, exp = np.frexp(a)  # a = m 2^exp, m in [0.5, 1): floor(log2 a) = exp - 1
    e = np.maximum(exp.astype(np.int64) - 1, e_min)
    return np.ldexp(1.0, e - f.mantissa_bits)


def fp8_round(x: np.ndarray, fmt: str = "e4m3") -> np.ndarray:
    """x saturated to +-max_finite and rounded (half to even) to the format: float32."""
    f = _format(fmt)
    x = np.clip(np.asarray(x, dtype=np.float64), -f.max_finite, f.max_finite)
    step = _step(np.abs(x), f)
    return (np.rint(x / step) * step).astype(np.float32)


def fp8_encode(x: np.ndarray, fmt: str = "e4m3") -> np.ndarray:
    """The bytes (uint8) of x saturated and rounded to the format."""
    f = _format(fmt)
    v = fp8_round(x, fmt).astype(np.float64)
    sign = (np.signbit(v)).astype(np.uint8) << 7
    a = np.abs(v)
    e_min = 1 - f.bias
    mant, exp = np.frexp(a)
    e = exp.astype(np.int64) - 1
    normal = (a >= 2.0**e_min) & (a > 0)
    man_normal = np.rint((mant * 2.0 - 1.0) * 2**f.mantissa_bits).astype(np.int64)
    man_sub = np.rint(a / 2.0 ** (e_min - f.mantissa_bits)).astype(np.int64)
    field = np.where(normal, e + f.bias, 0)
    man = np.where(normal, man_normal, man_sub)
    return (sign | (field << f.mantissa_bits | man).astype(np.uint8)).astype(np.uint8)


def fp8_decode(codes: np.ndarray, fmt: str = "e4m3") -> np.ndarray:
    """float32 values of FP8 bytes (finite codes; E4M3's NaN code decodes to NaN)."""
    f = _format(fmt)
    c = np.asarray(codes, dtype=np.uint8).astype(np.int64)
    sign = np.where(c >> 7, -1.0, 1.0)
    field = (c >> f.mantissa_bits) & (2**f.exponent_bits - 1)
    man = c & (2**f.mantissa_bits - 1)
    e_min = 1 - f.bias
    normal = np.ldexp(1.0 + man / 2**f.mantissa_bits, field - f.bias)
    sub = man * 2.0 ** (e_min - f.mantissa_bits)
    out = sign * np.where(field > 0, normal, sub)
    if f.name == "e4m3":
        out = np.where((field == 15) & (man == 7), np.nan, out)
    else:
        out = np.where(field == 31, np.where(man == 0, sign * np.inf, np.nan), out)
    return out.astype(np.float32)


@dataclass
class FP8Tensor:
    """FP8 bytes uint8 (the shape of x) and float32 scales (one, or one per row)."""

    codes: np.ndarray
    scale: np.ndarray
    fmt: str

    def dequantize(self, dtype=np.float32) -> np.ndarray:
        return (fp8_decode(self.codes, self.fmt) * self.scale).astype(dtype, copy=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.codes.shape)

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + self.scale.nbytes)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"codes": self.codes, "scale": self.scale}

    def meta(self) -> dict:
        return {"kind": "fp8", "fmt": self.fmt, "shape": [int(s) for s in self.codes.shape]}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict) -> FP8Tensor:
        return cls(
            arrays["codes"].astype(np.uint8), arrays["scale"].astype(np.float32), meta["fmt"]
        )


def quantize_fp8(x: np.ndarray, fmt: str = "e4m3", granularity: str = "tensor") -> FP8Tensor:
    """x / s rounded to FP8, s = amax / max_finite per tensor or per row ("channel")."""
    f = _format(fmt)
    x = np.asarray(x, dtype=np.float32)
    if granularity == "tensor":
        amax = np.abs(x).max(initial=0.0).reshape((1,) * max(x.ndim, 1))
    elif granularity == "channel":
        amax = np.abs(x).max(axis=-1, keepdims=True, initial=0.0)
    else:
        raise ValueError(
            f"quantize_fp8: granularity must be 'tensor' or 'channel', got {granularity!r}"
        )
    scale = np.where(amax > 0, amax / f.max_finite, 1.0).astype(np.float32)
    return FP8Tensor(fp8_encode(x / scale, fmt), scale, fmt)
