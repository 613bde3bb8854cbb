"""Numba bodies of layer_norm and rms_norm, forward and backward (math in ``norms.py``).

One kernel serves both norms: ``center`` selects layer norm (subtract the mean) or RMS
norm. The forward runs rows in parallel. The backward's dweight and dbias are sums over
rows: the rows are cut into ``n_chunks`` fixed chunks (a number that depends on R only,
never on the thread count), each chunk sums into its own row of a [n_chunks, C] scratch,
and a second parallel loop adds the chunks in order, so the result is bitwise the same
with 1 thread or 16.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from tinyllm.kernels.numba_math import like, row_dot, row_sum, row_sum_sq_dev


@njit(parallel=True, cache=True, error_model="numpy")
def norm_rows(x, residual, weight, bias, eps, center, has_residual, y, summed, mean, rstd):
    """y = (h - mean) * rstd * weight + bias for each row h of x (+ residual).

    x, residual, y, summed: [R, C]; weight, bias: [C]; mean, rstd: [R]. With
    has_residual, h = x + residual is written to ``summed`` first; else ``summed`` and
    ``residual`` are unused. RMS norm (center False): mean is 0 and bias is all zeros.
    """
    R, C = x.shape
    inv_c = like(x, 1.0) / like(x, C)
    for r in prange(R):
        if has_residual:
            hr = summed[r]  # [C]
            xr = x[r]
            rr = residual[r]
            for c in range(C):
                hr[c] = xr[c] + rr[c]
        else:
            hr = x[r]
        if center:
            mu = row_sum(hr) * inv_c
            var = row_sum_sq_dev(hr, mu) * inv_c  # two passes: no cancellation
        else:
            mu = like(x, 0.0)
            var = row_sum_sq_dev(hr, mu) * inv_c  # mean of squares
        rs = like(x, 1.0) / like(x, math.sqrt(var + eps))
        mean[r] = mu
        rstd[r] = rs
        yr = y[r]
        w = weight[0:C]  # local views: loops over them vectorize inside prange
        b = bias[0:C]
        for c in range(C):
            yr[c] = (hr[c] - mu) * rs * w[c] + b[c]


@njit(parallel=True, cache=True, error_model="numpy")
def norm_rows_backward(
    dy, x, mean, rstd, weight, dsummed, center, has_dsummed, dx, dweight_parts, dbias_parts,
    dweight, dbias,
):  # fmt: skip
    """dx [R, C] and the row sums dweight, dbias [C] of a layer/RMS norm.

    g = dy * weight, xhat = (x - mean) * rstd, <.> = mean over the row:
    dx = rstd (g - <g> - xhat <g xhat>)    (layer norm; RMS norm drops <g>)
    plus dsummed when has_dsummed (the residual stream's own gradient).
    dweight_parts, dbias_parts: [n_chunks, C] scratch.
    """
    R, C = x.shape
    n_chunks = dweight_parts.shape[0]
    inv_c = like(x, 1.0) / like(x, C)
    for k in prange(n_chunks):
        r0 = k * R // n_chunks
        r1 = (k + 1) * R // n_chunks
        dwk = dweight_parts[k]  # [C]
        dbk = dbias_parts[k]  # [C]
        xhat = np.empty(C, x.dtype)  # [C] scratch, one per chunk
        w = weight[0:C]
        for c in range(C):
            dwk[c] = 0
            dbk[c] = 0
        for r in range(r0, r1):
            xr = x[r]
            dyr = dy[r]
            dxr = dx[r]
            mu = mean[r]
            rs = rstd[r]
            # xhat = (x - mean) rstd  (recomputed);  dx first holds g = dy * w
            for c in range(C):
                xhat[c] = (xr[c] - mu) * rs
                dxr[c] = dyr[c] * w[c]
            mean_gxhat = row_dot(dxr, xhat) * inv_c  # <g xhat>
            mean_g = row_sum(dxr) * inv_c if center else like(x, 0.0)  # <g>
            for c in range(C):
                dwk[c] += dyr[c] * xhat[c]
                dbk[c] += dyr[c]
                dxr[c] = rs * (dxr[c] - mean_g - xhat[c] * mean_gxhat)
            if has_dsummed:
                dsr = dsummed[r]
                for c in range(C):
                    dxr[c] += dsr[c]
    for c in prange(C):
        sw = like(x, 0.0)
        sb = like(x, 0.0)
        for k in range(n_chunks):
            sw += dweight_parts[k, c]
            sb += dbias_parts[k, c]
        dweight[c] = sw
        dbias[c] = sb
