"""Numba body of the fused AdamW update (math and update order in ``adamw.py``)."""

from __future__ import annotations

import math

from numba import njit, prange

from tinyllm.kernels.numba_math import like

_CHUNK = 16384  # elements per parallel work item


@njit(parallel=True, cache=True, error_model="numpy")
def adamw_flat(p, g, m, v, decay, w1, b2, w2, neg_step, bc2_sqrt, eps):
    """In place on the flat arrays p, m, v [N] given g [N]; scalars in the arrays' dtype."""
    n = p.shape[0]
    n_chunks = (n + _CHUNK - 1) // _CHUNK
    low = w1 < 0.5  # torch's lerp switches formula at weight 0.5
    b1 = like(p, 1.0) - w1
    for k in prange(n_chunks):
        lo = k * _CHUNK
        hi = min(n, lo + _CHUNK)
        # index chunk views, not the whole arrays: inside a prange body only loops over
        # local views vectorize (measured 4x slower otherwise)
        pk, gk, mk, vk = p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi]
        if low:
            for i in range(hi - lo):
                gi = gk[i]
                pi = pk[i] * decay  # decoupled weight decay
                mi = mk[i] + w1 * (gi - mk[i])  # first moment (torch's lerp, weight < 0.5)
                vi = vk[i] * b2 + w2 * gi * gi  # second moment
                mk[i] = mi
                vk[i] = vi
                pk[i] = pi + neg_step * mi / (math.sqrt(vi) / bc2_sqrt + eps)
        else:
            for i in range(hi - lo):
                gi = gk[i]
                pi = pk[i] * decay
                mi = gi - (gi - mk[i]) * b1  # torch's lerp, weight >= 0.5
                vi = vk[i] * b2 + w2 * gi * gi
                mk[i] = mi
                vk[i] = vi
                pk[i] = pi + neg_step * mi / (math.sqrt(vi) / bc2_sqrt + eps)
