"""Numba bodies of the packed-weight kernels (math in ``quant.py``): output features in parallel.

Codes of ``bits`` (1 to 8) sit in each row as a big-endian bit stream: code k occupies bits
[k b, (k + 1) b) of the row, so it lies within the two bytes starting at byte (k b) >> 3:

    window = row[j] << 8 | row[j + 1],   j = (k b) >> 3,  off = (k b) & 7
    q      = (window >> (16 - b - off)) & (2^b - 1)                       (off + b <= 15)

(for b = 2, 4, 8 that is "8 / b codes a byte, the first in the high bits"). A weight element
decodes as w[n, k] = (table[q] - zeros[n, k // g]) * scales[n, k // g].
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from tinyllm.kernels import numba_math  # noqa: F401  (numba_cache.install() first)


@njit(cache=True, inline="always")
def _code(row, k, bits, mask):
    """The code k of a packed row (see the module docstring)."""
    pos = k * bits
    j = pos >> 3
    window = np.int64(row[j]) << 8
    if j + 1 < row.shape[0]:
        window |= np.int64(row[j + 1])
    return (window >> (16 - bits - (pos & 7))) & mask


@njit(cache=True, inline="always")
def _decode_row(packed, scales, zeros, table, bits, group_size, n, K, w):
    """w[:K] = the dequantized row n (group parameters read once per group)."""
    mask = (1 << bits) - 1
    row = packed[n]
    G = scales.shape[1]
    for gi in range(G):
        k0 = gi * group_size
        k1 = min(K, k0 + group_size)
        s = scales[n, gi]
        z = zeros[n, gi]
        for k in range(k0, k1):
            w[k] = (table[_code(row, k, bits, mask)] - z) * s


@njit(parallel=True, cache=True, error_model="numpy")
def dequant_matmul_rows(x, packed, scales, zeros, table, bits, group_size, y):
    """y[r, n] = sum_k x[r, k] w[n, k] for few rows of x (decoding), never holding W.

    Per group gi of row n the scale factors out of the sum:

        y[r, n] = sum_gi s[n, gi] sum_{k in gi} x[r, k] (table[q[n, k]] - z[n, gi])

    Each group's codes are decoded once into a buffer of g values (table[q] - z), 8 codes at
    a time from ``bits`` whole bytes read as one big-endian integer where the group starts on
    a multiple of 8 codes (code c of the chunk: (v >> bits (7 - c)) & mask), which is
    then dotted with every x row (4 accumulators, so the sum vectorizes without fastmath)
    and scaled once. Output rows n are split into one contiguous chunk per thread.
    """
    R, K = x.shape
    N = packed.shape[0]
    G = scales.shape[1]
    mask = (1 << bits) - 1
    chunks = min(N, 64)
    for c in prange(chunks):
        n0 = c * N // chunks
        n1 = (c + 1) * N // chunks
        t = np.empty(min(group_size, K), dtype=x.dtype)
        totals = np.empty(R, dtype=x.dtype)
        for n in range(n0, n1):
            row = packed[n]
            totals[:] = 0
            for gi in range(G):
                k0 = gi * group_size
                m = min(K, k0 + group_size) - k0
                z = zeros[n, gi]
                i = 0
                if k0 % 8 == 0:  # whole chunks of 8 codes = ``bits`` bytes, no straddling
                    while i + 8 <= m:
                        j = ((k0 + i) * bits) >> 3
                        v = np.uint64(0)
                        for bb in range(bits):
                            v = (v << np.uint64(8)) | np.uint64(row[j + bb])
                        for cc in range(8):  # not c: the prange index above
                            q = (v >> np.uint64(bits * (7 - cc))) & np.uint64(mask)
                            t[i + cc] = table[np.int64(q)] - z
                        i += 8
                while i < m:
                    t[i] = table[_code(row, k0 + i, bits, mask)] - z
                    i += 1
                s = scales[n, gi]
                for r in range(R):
                    xr = x[r]
                    a0 = t[0] * 0  # zeros of x's dtype
                    a1 = a0
                    a2 = a0
                    a3 = a0
                    i = 0
                    while i + 4 <= m:
                        a0 += xr[k0 + i] * t[i]
                        a1 += xr[k0 + i + 1] * t[i + 1]
                        a2 += xr[k0 + i + 2] * t[i + 2]
                        a3 += xr[k0 + i + 3] * t[i + 3]
                        i += 4
                    while i < m:
                        a0 += xr[k0 + i] * t[i]
                        i += 1
                    totals[r] += s * ((a0 + a1) + (a2 + a3))
            for r in range(R):
                y[r, n] = totals[r]


@njit(parallel=True, cache=True, error_model="numpy")
def byte_gemv_rows(xe, xo, packed, scales, zeros, table, bits, group_size, y):
    """y[r, n] for 4- or 8-bit codes whose groups start on a byte (g bits % 8 == 0 or G = 1).

    A byte decodes with a shift and a mask, no bit stream: for 4 bits byte j holds
    q[2j] = byte >> 4 and q[2j + 1] = byte & 15, multiplied by xe[r, j] = x[r, 2j] and
    xo[r, j] = x[r, 2j + 1] (x split once per call, so both loads are contiguous); for 8 bits
    byte j is q[j] (xe = x, xo unused). A group is then a byte range, and per group

        y[r, n] += s[n, gi] sum_{k in gi} x[r, k] (table[q[n, k]] - z[n, gi])

    with 4 accumulators (the sum vectorizes without fastmath).
    """
    R = xe.shape[0]
    N, Kb = packed.shape
    G = scales.shape[1]
    per = 8 // bits  # codes per byte: 2 or 1
    gb = group_size // per  # bytes per group (G > 1)
    chunks = min(N, 64)
    for c in prange(chunks):
        n0 = c * N // chunks
        n1 = (c + 1) * N // chunks
        for n in range(n0, n1):
            row = packed[n]
            for r in range(R):
                xer = xe[r]
                xor_ = xo[r]
                total = xer[0] * 0
                for gi in range(G):
                    j0 = gi * gb
                    j1 = Kb if gi == G - 1 else j0 + gb  # the last group: to the row's end
                    z = zeros[n, gi]
                    a0 = total * 0
                    a1 = a0
                    a2 = a0
                    a3 = a0
                    j = j0
                    if per == 2:
                        while j + 2 <= j1:
                            b0 = row[j]
                            b1 = row[j + 1]
                            a0 += xer[j] * (table[b0 >> 4] - z)
                            a1 += xor_[j] * (table[b0 & 15] - z)
                            a2 += xer[j + 1] * (table[b1 >> 4] - z)
                            a3 += xor_[j + 1] * (table[b1 & 15] - z)
                            j += 2
                        while j < j1:
                            a0 += xer[j] * (table[row[j] >> 4] - z)
                            a1 += xor_[j] * (table[row[j] & 15] - z)
                            j += 1
                    else:
                        while j + 4 <= j1:
                            a0 += xer[j] * (table[row[j]] - z)
                            a1 += xer[j + 1] * (table[row[j + 1]] - z)
                            a2 += xer[j + 2] * (table[row[j + 2]] - z)
                            a3 += xer[j + 3] * (table[row[j + 3]] - z)
                            j += 4
                        while j < j1:
                            a0 += xer[j] * (table[row[j]] - z)
                            j += 1
                    total += scales[n, gi] * ((a0 + a1) + (a2 + a3))
                y[r, n] = total


@njit(parallel=True, cache=True, error_model="numpy")
def dequant_rows(packed, scales, zeros, table, bits, group_size, n0, out):
    """out[i, :] = the dequantized row n0 + i (a tile of W for a BLAS GEMM)."""
    rows, K = out.shape
    for i in prange(rows):
        _decode_row(packed, scales, zeros, table, bits, group_size, n0 + i, K, out[i])
