"""Numba bodies of RWKV-4's WKV, forward and backward (math in ``wkv.py`` and
``tinyllm.functional.rwkv``). One task per (b, c) in ``prange``, sequential over t, the
state in scalars: the layout of RWKV-LM's ``wkv_cuda.cu`` (one thread per (b, c)). Each task
writes only its own (b, :, c) column and its own (b, c) partial sums: no races, and results
do not depend on the thread count.
"""

from __future__ import annotations

import math

from numba import njit, prange

from tinyllm.kernels.numba_math import like


@njit(parallel=True, cache=True, error_model="numpy")
def wkv_forward(w, u, k, v, out):
    """out [B, T, C] = wkv; w, u [C]; k, v [B, T, C] (the max-trick scan of wkv.py)."""
    B, T, C = k.shape
    for task in prange(B * C):
        b = task // C
        c = task % C
        ww_decay, uu = w[c], u[c]
        aa = like(k, 0.0)
        bb = like(k, 0.0)
        pp = like(k, -math.inf)
        for t in range(T):
            kk = k[b, t, c]
            vv = v[b, t, c]
            ww = uu + kk
            p = max(pp, ww)
            e1 = math.exp(pp - p)
            e2 = math.exp(ww - p)
            out[b, t, c] = (e1 * aa + e2 * vv) / (e1 * bb + e2)
            ww = ww_decay + pp
            p = max(ww, kk)
            e1 = math.exp(ww - p)
            e2 = math.exp(kk - p)
            aa = e1 * aa + e2 * vv
            bb = e1 * bb + e2
            pp = p


@njit(parallel=True, cache=True, error_model="numpy")
def wkv_backward(w, u, k, v, gy, dk, dv, gw_parts, gu_parts, scratch):
    """dk, dv [B, T, C]; gw_parts, gu_parts [B, C] (dw, du per batch row, summed by the
    caller); scratch [2, B, T, C] holds log D_t and wkv_t of the forward scan."""
    B, T, C = k.shape
    for task in prange(B * C):
        b = task // C
        c = task % C
        wd, uu = w[c], u[c]
        aa = like(k, 0.0)
        bb = like(k, 0.0)
        aa2 = like(k, 0.0)
        bb2 = like(k, 0.0)
        pp = like(k, -math.inf)
        gw = like(k, 0.0)
        gu = like(k, 0.0)
        for t in range(T):  # the forward scan, with a', b' (= d a / dw, d b / dw)
            kk = k[b, t, c]
            vv = v[b, t, c]
            g = gy[b, t, c]
            ww = uu + kk
            p = max(pp, ww)
            e1 = math.exp(pp - p)
            e2 = math.exp(ww - p)
            den = e1 * bb + e2
            y = (e1 * aa + e2 * vv) / den
            scratch[0, b, t, c] = p + math.log(den)
            scratch[1, b, t, c] = y
            gw += g * e1 * (aa2 - y * bb2) / den
            direct = g * e2 / den
            dv[b, t, c] = direct
            dk[b, t, c] = direct * (vv - y)
            gu += direct * (vv - y)
            ww = wd + pp
            p = max(ww, kk)
            e1 = math.exp(ww - p)
            e2 = math.exp(kk - p)
            aa2 = e1 * (aa2 + aa)
            bb2 = e1 * (bb2 + bb)
            aa = e1 * aa + e2 * vv
            bb = e1 * bb + e2
            pp = p
        gw_parts[b, c] = gw
        gu_parts[b, c] = gu
        al = like(k, 0.0)
        be = like(k, 0.0)
        qq = like(k, -math.inf)
        for t in range(T - 1, -1, -1):  # the reverse scan of alpha, beta
            e = math.exp(k[b, t, c] + qq)
            dv[b, t, c] += e * al
            dk[b, t, c] += e * (v[b, t, c] * al - be)
            ww = wd + qq
            nl = -scratch[0, b, t, c]
            q = max(ww, nl)
            e1 = math.exp(ww - q)
            e2 = math.exp(nl - q)
            g = gy[b, t, c]
            al = e1 * al + e2 * g
            be = e1 * be + e2 * g * scratch[1, b, t, c]
            qq = q
