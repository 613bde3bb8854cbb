"""Numba bodies of the packed-weight kernels (math in ``quant.py``): output features in parallel.

Codes of ``bits`` in {2, 4, 8} sit 8 / bits to a byte, the first in the high bits. A weight
element decodes as w[n, k] = (table[q] - zeros[n, k // g]) * scales[n, k // g].
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from tinyllm.kernels import numba_math  # noqa: F401  (sets OMP_WAIT_POLICY before any launch)


@njit(cache=True, inline="always")
def _decode_row(packed, scales, zeros, table, bits, group_size, n, K, w):
    """w[:K] = the dequantized row n."""
    per = 8 // bits
    mask = (1 << bits) - 1
    row = packed[n]
    for j in range(row.shape[0]):
        byte = np.int64(row[j])
        for t in range(per):
            k = j * per + t
            if k < K:
                q = (byte >> ((per - 1 - t) * bits)) & mask
                gi = k // group_size
                w[k] = (table[q] - zeros[n, gi]) * scales[n, gi]


@njit(parallel=True, cache=True, error_model="numpy")
def dequant_matmul_rows(x, packed, scales, zeros, table, bits, group_size, y):
    """y[r, n] = sum_k x[r, k] w[n, k] with w decoded one row at a time (never all of W).

    x [R, K], packed uint8 [N, ceil(K bits / 8)], scales/zeros [N, G], table [2^bits], y [R, N].
    Output rows n are split into one contiguous chunk per thread; each thread decodes its rows
    into a private buffer of K values and dots it with every x row (4 accumulators, so the sum
    vectorizes without fastmath).
    """
    R, K = x.shape
    N = packed.shape[0]
    chunks = min(N, 64)
    for c in prange(chunks):
        n0 = c * N // chunks
        n1 = (c + 1) * N // chunks
        w = np.empty(K, dtype=x.dtype)
        for n in range(n0, n1):
            _decode_row(packed, scales, zeros, table, bits, group_size, n, K, w)
            for r in range(R):
                xr = x[r]
                a0 = w[0] * 0  # zeros of x's dtype
                a1 = a0
                a2 = a0
                a3 = a0
                k = 0
                while k + 4 <= K:
                    a0 += xr[k] * w[k]
                    a1 += xr[k + 1] * w[k + 1]
                    a2 += xr[k + 2] * w[k + 2]
                    a3 += xr[k + 3] * w[k + 3]
                    k += 4
                while k < K:
                    a0 += xr[k] * w[k]
                    k += 1
                y[r, n] = (a0 + a1) + (a2 + a3)


@njit(parallel=True, cache=True, error_model="numpy")
def dequant_rows(packed, scales, zeros, table, bits, group_size, n0, out):
    """out[i, :] = the dequantized row n0 + i (a tile of W for a BLAS GEMM)."""
    rows, K = out.shape
    for i in prange(rows):
        _decode_row(packed, scales, zeros, table, bits, group_size, n0 + i, K, out[i])
