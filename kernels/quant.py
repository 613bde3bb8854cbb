"""Packed-weight matmul: y = x W_hat^T with W_hat decoded from packed low-bit codes on the fly.

W [N, K] is stored as codes q of ``bits`` bits (1 to 8), each row a big-endian bit stream of
ceil(K bits / 8) bytes (for 2, 4, 8 bits: 8 / bits codes a byte, the first in the high bits,
for 4 bits byte = q[2i] << 4 | q[2i + 1]; 3, 5, 6, 7-bit codes straddle bytes), with
per-(row, group) scales s and zeros z over groups of g input columns, and a decode table of
2^bits values:

    w_hat[n, k] = (table[q[n, k]] - z[n, k // g]) * s[n, k // g]
    y[r, n]     = sum_k x[r, k] w_hat[n, k]                       x [R, K], y [R, N]

One formula covers the formats: integer codes (table = 0, 1, ..., 2^b - 1; z the zero point),
NF4 (table = the 16 NF4 levels, z = 0, s the block absmax, g = 64) and FP8 (table = the 256
decoded FP8 values, z = 0, s the row scale).

Tiers: ``reference`` decodes all of W then multiplies; ``numba`` (``quant_numba.py``) never
holds W in float: for few rows (R < ``GEMM_ROWS``, decoding) a fused GEMV reads the packed
bytes directly -- for 4- and 8-bit codes whose groups start on a byte, a shift and a mask per
code against x split into its even and odd columns (``byte_gemv_rows``); otherwise it decodes
one group of one row at a time into a buffer (``dequant_matmul_rows``) -- and applies the
scale once per group; for many rows it decodes tiles of ``TILE`` rows of W and multiplies
each with BLAS; ``cuda`` (``quant_matmul.cu``) one thread per output, decoding as it goes.
float32 and float64 x; every width from 1 to 8 bits runs on every tier.
"""

from __future__ import annotations

import functools

import numpy as np

from tinyllm.backend import get_array_module
from tinyllm.kernels import dispatch
from tinyllm.kernels.arrays import Array, check_float, contiguous
from tinyllm.kernels.cuda_loader import function, with_cuda

__all__ = ["GEMM_ROWS", "TILE", "dequant_matmul", "dequantize_packed"]

_CU = "quant_matmul.cu"
KERNEL_BITS = (1, 2, 3, 4, 5, 6, 7, 8)
GEMM_ROWS = 16  # from this many rows of x on, the numba tier decodes tiles and calls BLAS
TILE = 128  # rows of W decoded per BLAS call


@functools.cache
def _numba():
    from tinyllm.kernels import quant_numba

    return quant_numba


def dequantize_packed(packed, scales, zeros, table, bits: int, group_size: int, K: int):
    """w_hat [N, K] (the reference decode, on ``xp``), in ``table``'s dtype."""
    xp = get_array_module(packed)
    N = packed.shape[0]
    per = 8 // bits if 8 % bits == 0 else None
    if per is not None:
        shifts = xp.asarray(np.arange(per - 1, -1, -1) * bits, dtype=np.uint8)
        q = ((packed[:, :, None] >> shifts) & ((1 << bits) - 1)).reshape(N, -1)[:, :K]
    else:  # a bit stream
        stream = xp.unpackbits(packed, axis=1)[:, : K * bits].reshape(N, K, bits)
        weights = xp.asarray(1 << np.arange(bits - 1, -1, -1), dtype=np.int64)
        q = stream.astype(np.int64) @ weights
    groups = xp.arange(K) // group_size
    return (table[q] - zeros[:, groups]) * scales[:, groups]


def _reference(x, packed, scales, zeros, table, bits, group_size):
    w = dequantize_packed(packed, scales, zeros, table, bits, group_size, x.shape[1])
    return x @ w.T


def _byte_aligned(bits: int, G: int, group_size: int) -> bool:
    """Whether the byte GEMV applies: 4 or 8 bits, every group starting on a byte."""
    return bits in (4, 8) and (G == 1 or group_size * bits % 8 == 0)


def _byte_gemv(kernels, x, packed, scales, zeros, table, bits, group_size, y):
    R, K = x.shape
    if bits == 4:  # the even and odd columns of x, each a contiguous [R, ceil(K / 2)]
        xe = np.zeros((R, packed.shape[1]), dtype=x.dtype)
        xo = np.zeros_like(xe)  # an odd K pads xo with 0 (the pad nibble then adds 0)
        xe[:, : (K + 1) // 2] = x[:, 0::2]
        xo[:, : K // 2] = x[:, 1::2]
    else:
        xe = xo = x
    kernel = dispatch.numba_for_work(kernels.byte_gemv_rows, packed.shape[0] * K)
    kernel(xe, xo, packed, scales, zeros, table, bits, group_size, y)


def _numba_body(x, packed, scales, zeros, table, bits, group_size):
    R, K = x.shape
    N = packed.shape[0]
    kernels = _numba()
    y = np.empty((R, N), dtype=x.dtype)
    if R < GEMM_ROWS:
        if _byte_aligned(bits, scales.shape[1], group_size):
            _byte_gemv(kernels, x, packed, scales, zeros, table, bits, group_size, y)
            return y
        kernel = dispatch.numba_for_work(kernels.dequant_matmul_rows, N * K)
        kernel(x, packed, scales, zeros, table, bits, group_size, y)
        return y
    tile = np.empty((min(TILE, N), K), dtype=x.dtype)
    decode = dispatch.numba_for_work(kernels.dequant_rows, tile.size)
    for n0 in range(0, N, TILE):
        rows = min(TILE, N - n0)
        out = tile[:rows]
        decode(packed, scales, zeros, table, bits, group_size, n0, out)
        np.matmul(x, out.T, out=y[:, n0 : n0 + rows])
    return y


def _cuda_body(x, packed, scales, zeros, table, bits, group_size):
    import cupy

    R, K = x.shape
    N = packed.shape[0]
    y = cupy.empty((R, N), dtype=x.dtype)
    if R * N:
        kernel = function(_CU, "quant_matmul", x.dtype)
        args = (x, packed, scales, zeros, table, y, np.int32(R), np.int32(N), np.int32(K),
                np.int32(packed.shape[1]), np.int32(bits), np.int32(group_size),
                np.int32(scales.shape[1]))  # fmt: skip
        threads = 128
        kernel(((N + threads - 1) // threads, R), (threads,), args)
    return y


_BODIES = dispatch.declare(
    with_cuda({"reference": _reference, "numba": _numba_body, "cuda": _cuda_body}, _CU),
    "dequant_matmul",
)
_REFERENCE_ONLY = {"reference": _reference}


def dequant_matmul(
    x: Array,
    packed: Array,
    scales: Array,
    zeros: Array | None,
    table: Array,
    bits: int,
    group_size: int,
) -> Array:
    """y [..., N] = x [..., K] W_hat^T for the packed W (see the module docstring).

    ``packed`` uint8 [N, ceil(K bits / 8)]; ``scales`` [N, G] and ``zeros`` [N, G] (None: 0)
    with G = ceil(K / group_size); ``table`` [2^bits]. Scales, zeros and table are cast to
    x's compute dtype.
    """
    op = "dequant_matmul"
    check_float(op, "x", x)
    xp = get_array_module(x)
    K = x.shape[-1]
    if packed.ndim != 2 or packed.shape[1] != -(-K * bits // 8):
        raise ValueError(
            f"{op}: packed must be [N, ceil(K * bits / 8)] = [N, {-(-K * bits // 8)}] for "
            f"K {K}, bits {bits}, got {tuple(packed.shape)}"
        )
    N = packed.shape[0]
    G = -(-K // group_size)
    if tuple(scales.shape) != (N, G) or (zeros is not None and tuple(zeros.shape) != (N, G)):
        raise ValueError(f"{op}: scales and zeros must be [N, G] = [{N}, {G}], got "
                         f"{tuple(scales.shape)}, "
                         f"{None if zeros is None else tuple(zeros.shape)}")  # fmt: skip
    if table.shape[0] != 2**bits:
        raise ValueError(f"{op}: table must hold 2^bits = {2**bits} values, got {table.shape[0]}")
    dt = np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32)
    rows = contiguous(x.reshape(-1, K).astype(dt, copy=False))
    s = contiguous(scales.astype(dt, copy=False))
    z = xp.zeros((N, G), dtype=dt) if zeros is None else contiguous(zeros.astype(dt, copy=False))
    t = contiguous(table.astype(dt, copy=False))
    p = contiguous(packed.astype(np.uint8, copy=False))
    bodies = _BODIES if bits in KERNEL_BITS and K > 0 else _REFERENCE_ONLY
    y = dispatch.run(op, xp, dt, bodies, rows, p, s, z, t, int(bits), int(group_size))
    return y.reshape(x.shape[:-1] + (N,)).astype(x.dtype, copy=False)
