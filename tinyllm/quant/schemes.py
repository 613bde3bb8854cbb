"""Integer quantization schemes: absmax and zero-point; per-tensor, per-channel, per-group.

A weight W [N, K] (PyTorch layout: N output rows, K input columns) is cut along its *input*
dimension into groups of g columns (the last group may be shorter); per-channel is g = K,
per-tensor is one group for the whole matrix. Each (row, group) -- or the whole tensor --
gets a scale s and an integer zero point z, and every element becomes an unsigned code

    q = clamp(rint(w / s) + z, 0, 2^b - 1)            w_hat = s (q - z)

- **absmax (symmetric)**: s = max|w| / (2^(b-1) - 1), z = 2^(b-1); codes span
  [1, 2^b - 1], i.e. the signed range [-(2^(b-1) - 1), 2^(b-1) - 1] shifted by z (for INT8:
  s = max|w| / 127, the bitsandbytes/LLM.int8() row-wise scheme).
- **zero-point (asymmetric)**: the range is widened to contain 0 (min <= 0 <= max, as GPTQ's
  quantizer does), s = (max - min) / (2^b - 1), z = clamp(rint(-min / s), 0, 2^b - 1).

``rint`` rounds half to even (NumPy's rule; C's ``round`` rounds half away from zero). An
all-zero group gets s = 1 instead of 0 (its codes all equal z and it dequantizes to 0).
Inside the clamp range the error is at most s/2 per element, and quantizing a dequantized
tensor again gives the same codes (idempotence); the tests check both.

Codes are stored packed, row by row: ``pack_codes(q, bits)`` writes each row's codes as a
big-endian bit stream, so that for 4 bits the first code of a pair sits in the *high*
nibble (bitsandbytes' order: byte = q[0] << 4 | q[1]), for 8 bits one code per byte, and
for 2, 3, 5, 6, 7 bits the codes straddle bytes. Each row starts on a byte boundary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tinyllm.backend import get_array_module

__all__ = [
    "GRANULARITIES",
    "QuantizedWeight",
    "compute_qparams",
    "dequantize_codes",
    "fake_quantize",
    "group_bounds",
    "num_groups",
    "pack_codes",
    "quantize_codes",
    "quantize_weight",
    "unpack_codes",
]

GRANULARITIES = ("tensor", "channel", "group")


def num_groups(K: int, group_size: int) -> int:
    """G = ceil(K / g): the number of column groups of a row of K columns."""
    return -(-K // group_size)


def group_bounds(K: int, group_size: int) -> list[tuple[int, int]]:
    """The column ranges [start, end) of the groups of a row (the last may be shorter)."""
    return [(j, min(j + group_size, K)) for j in range(0, K, group_size)]


def _check_bits(op: str, bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise ValueError(f"{op}: bits must be an int in [1, 8], got {bits!r}")


def _resolve_group(op: str, K: int, granularity: str, group_size: int | None) -> int:
    if granularity not in GRANULARITIES:
        raise ValueError(f"{op}: granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if granularity == "group":
        if group_size is None or group_size < 1:
            raise ValueError(
                f"{op}: per-group quantization needs group_size >= 1, got {group_size}"
            )
        return min(int(group_size), K)
    return K


def _expand(p: np.ndarray, K: int, group_size: int) -> np.ndarray:
    """[N, G] per-group values repeated to [N, K] (column k uses group k // g)."""
    return np.repeat(p, group_size, axis=1)[:, :K]


def compute_qparams(
    w: np.ndarray,
    bits: int,
    granularity: str = "group",
    group_size: int | None = 128,
    symmetric: bool = True,
) -> tuple[np.ndarray, np.ndarray, int]:
    """(scale [N, G] float32, zero [N, G] int32, g) for W [N, K] (a vector counts as [1, K]).

    Per-tensor quantization returns one scale and zero broadcast to [N, 1] with g = K.
    A CuPy ``w`` gives CuPy scale and zero, computed on its device (nothing read back).
    """
    op = "compute_qparams"
    _check_bits(op, bits)
    xp = get_array_module(w)
    w = xp.asarray(w)
    if w.ndim == 1:
        w = w.reshape(1, -1)
    if w.ndim != 2:
        raise ValueError(f"{op}: w must be [N, K] or [K], got shape {w.shape}")
    N, K = w.shape
    g = _resolve_group(op, K, granularity, group_size)
    w64 = w.astype(xp.float64)
    qmax = 2**bits - 1
    if granularity == "tensor":
        wp = w64.reshape(1, 1, -1)  # one group of every element
    else:
        G = num_groups(K, g)
        pad = G * g - K
        # pad with zeros: they never widen a range that must contain 0 anyway
        wp = xp.pad(w64, ((0, 0), (0, pad))).reshape(N, G, g)
    if wp.size == 0:  # an empty tensor: the ranges are [0, 0]
        wp = xp.zeros(wp.shape[:2] + (1,))
    lo = xp.minimum(wp.min(axis=2), 0.0)
    hi = xp.maximum(wp.max(axis=2), 0.0)
    amax = xp.abs(wp).max(axis=2)
    if granularity == "tensor":  # [1, 1] -> [N, 1]
        lo, hi, amax = (xp.broadcast_to(a, (N, 1)) for a in (lo, hi, amax))
    if symmetric:
        half = 2 ** (bits - 1) - 1
        if half == 0:
            raise ValueError(f"{op}: symmetric quantization needs bits >= 2")
        scale = amax / half
        zero = xp.full(scale.shape, 2 ** (bits - 1), dtype=xp.int32)
    else:
        scale = (hi - lo) / qmax
        safe = xp.where(scale > 0, scale, 1.0)
        zero = xp.clip(xp.rint(-lo / safe), 0, qmax).astype(xp.int32)
    scale = xp.where(scale > 0, scale, 1.0).astype(xp.float32)
    return scale, zero, g


def quantize_codes(
    w: np.ndarray, scale: np.ndarray, zero: np.ndarray, bits: int, group_size: int
) -> np.ndarray:
    """Codes q = clamp(rint(w / s) + z, 0, 2^b - 1) as uint8 [N, K] (s, z: [N, G])."""
    w = np.asarray(w, dtype=np.float64)
    K = w.shape[1]
    s = _expand(scale.astype(np.float64), K, group_size)
    z = _expand(zero.astype(np.float64), K, group_size)
    return np.clip(np.rint(w / s) + z, 0, 2**bits - 1).astype(np.uint8)


def dequantize_codes(
    q: np.ndarray, scale: np.ndarray, zero: np.ndarray, group_size: int, dtype=np.float32
) -> np.ndarray:
    """w_hat = s (q - z) [N, K] in ``dtype`` (computed in float32 as the kernels do)."""
    K = q.shape[1]
    s = _expand(scale.astype(np.float32), K, group_size)
    z = _expand(zero.astype(np.float32), K, group_size)
    return ((q.astype(np.float32) - z) * s).astype(dtype, copy=False)


def fake_quantize(
    w: np.ndarray,
    bits: int,
    granularity: str = "group",
    group_size: int | None = 128,
    symmetric: bool = True,
) -> np.ndarray:
    """Quantize then dequantize (round-to-nearest): w_hat [N, K] float32."""
    w = np.asarray(w)
    scale, zero, g = compute_qparams(w, bits, granularity, group_size, symmetric)
    return dequantize_codes(quantize_codes(w, scale, zero, bits, g), scale, zero, g)


# ---------------------------------------------------------------- packing
def pack_codes(q: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned codes q [N, K] (< 2^bits) into uint8 [N, ceil(K bits / 8)], row-wise.

    Each row is a big-endian bit stream: code 0's most significant bit first. For 4 bits
    this is byte = q[2i] << 4 | q[2i + 1]; for 8 bits the bytes are the codes.
    """
    _check_bits("pack_codes", bits)
    q = np.asarray(q)
    if q.ndim == 1:
        return pack_codes(q[None], bits)[0]
    if q.size and int(q.max()) >= 2**bits:
        raise ValueError(f"pack_codes: a code {int(q.max())} does not fit in {bits} bits")
    N, K = q.shape
    if bits == 8:
        return np.ascontiguousarray(q, dtype=np.uint8)
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint8)  # MSB first
    stream = ((q.astype(np.uint8)[:, :, None] >> shifts) & 1).reshape(N, K * bits)
    return np.packbits(stream, axis=1, bitorder="big")


def unpack_codes(packed: np.ndarray, bits: int, K: int) -> np.ndarray:
    """The inverse of ``pack_codes``: uint8 codes [N, K] from packed [N, ceil(K bits / 8)]."""
    _check_bits("unpack_codes", bits)
    packed = np.asarray(packed, dtype=np.uint8)
    if packed.ndim == 1:
        return unpack_codes(packed[None], bits, K)[0]
    N = packed.shape[0]
    if packed.shape[1] != math.ceil(K * bits / 8):
        raise ValueError(
            f"unpack_codes: {K} codes of {bits} bits need {math.ceil(K * bits / 8)} bytes per "
            f"row, got {packed.shape[1]}"
        )
    if bits == 8:
        return packed.copy()
    stream = np.unpackbits(packed, axis=1, bitorder="big")[:, : K * bits].reshape(N, K, bits)
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.uint16)
    return (stream.astype(np.uint16) @ weights).astype(np.uint8)


# ---------------------------------------------------------------- the stored weight
@dataclass
class QuantizedWeight:
    """An integer-quantized W [N, K]: packed codes, per-group scales and zero points.

    ``qweight`` uint8 [N, ceil(K bits / 8)]; ``scales`` float32 [N, G]; ``zeros`` uint8
    [N, G] (2^(b-1) everywhere for absmax); ``perm`` (GPTQ act-order) is None: the codes are
    always stored in the original column order.
    """

    qweight: np.ndarray
    scales: np.ndarray
    zeros: np.ndarray
    bits: int
    group_size: int
    shape: tuple[int, int]
    symmetric: bool = True

    @property
    def codes(self) -> np.ndarray:
        """The unpacked codes uint8 [N, K]."""
        return unpack_codes(self.qweight, self.bits, self.shape[1])

    def dequantize(self, dtype=np.float32) -> np.ndarray:
        """w_hat = s (q - z) [N, K]."""
        return dequantize_codes(self.codes, self.scales, self.zeros, self.group_size, dtype)

    @property
    def nbytes(self) -> int:
        """Bytes stored: packed codes + float32 scales + uint8 zeros (none for absmax)."""
        zeros = 0 if self.symmetric else self.zeros.nbytes
        return int(self.qweight.nbytes + self.scales.nbytes + zeros)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays to save (names relative to the layer)."""
        return {"qweight": self.qweight, "scales": self.scales, "zeros": self.zeros}

    def meta(self) -> dict:
        return {
            "kind": "int",
            "bits": int(self.bits),
            "group_size": int(self.group_size),
            "shape": [int(s) for s in self.shape],
            "symmetric": bool(self.symmetric),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict) -> QuantizedWeight:
        return cls(
            arrays["qweight"].astype(np.uint8),
            arrays["scales"].astype(np.float32),
            arrays["zeros"].astype(np.uint8),
            int(meta["bits"]),
            int(meta["group_size"]),
            tuple(meta["shape"]),
            bool(meta["symmetric"]),
        )

    @classmethod
    def from_codes(
        cls,
        codes: np.ndarray,
        scales: np.ndarray,
        zeros: np.ndarray,
        bits: int,
        group_size: int,
        symmetric: bool,
    ) -> QuantizedWeight:
        return cls(
            pack_codes(codes, bits),
            np.ascontiguousarray(scales, dtype=np.float32),
            np.ascontiguousarray(zeros, dtype=np.uint8),
            int(bits),
            int(group_size),
            tuple(int(s) for s in codes.shape),
            bool(symmetric),
        )


def quantize_weight(
    w: np.ndarray,
    bits: int = 4,
    granularity: str = "group",
    group_size: int | None = 128,
    symmetric: bool = True,
) -> QuantizedWeight:
    """Round-to-nearest quantization of W [N, K] into a packed ``QuantizedWeight``."""
    w = np.asarray(w)
    scale, zero, g = compute_qparams(w, bits, granularity, group_size, symmetric)
    codes = quantize_codes(w, scale, zero, bits, g)
    return QuantizedWeight.from_codes(codes, scale, zero, bits, g, symmetric)
