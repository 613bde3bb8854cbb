"""Numba body of the rotary embedding (math in ``rope.py``): rows in parallel."""

from __future__ import annotations

from numba import njit, prange

from tinyllm.kernels import numba_math  # noqa: F401  (numba_cache.install() first)


@njit(parallel=True, cache=True, error_model="numpy")
def rope_rows(x, cos, sin, sign, interleaved, y):
    """Rotate each pair of each row of x [R, D] by sign * angle into y [R, D].

    cos, sin: [P, D/2]; row r uses table row r % P. sign = 1 (forward) or -1 (backward).
    """
    R, D = x.shape
    P = cos.shape[0]
    half = D // 2
    for r in prange(R):
        xr = x[r]  # [D]
        yr = y[r]  # [D]
        cr = cos[r % P]  # [D/2]
        sr = sin[r % P]  # [D/2]
        if interleaved:
            for i in range(half):
                a = xr[2 * i]
                b = xr[2 * i + 1]
                s = sign * sr[i]
                yr[2 * i] = a * cr[i] - b * s
                yr[2 * i + 1] = b * cr[i] + a * s
        else:
            for i in range(half):
                a = xr[i]
                b = xr[i + half]
                s = sign * sr[i]
                yr[i] = a * cr[i] - b * s
                yr[i + half] = b * cr[i] + a * s
