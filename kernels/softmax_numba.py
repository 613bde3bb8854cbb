"""Numba bodies of softmax, log-softmax and cross-entropy (see ``softmax.py`` for the math).

Rows run in parallel (``prange``); each row is a few vectorizable passes over C numbers.
Imported lazily (this module imports Numba); compiled on first call and cached on disk.
Scalars arrive in the arrays' dtype and constants go through ``like``, so that float32
kernels compute in float32 (a float64 literal would promote every element to float64).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from tinyllm.kernels.numba_math import fast_exp, like, row_dot, row_max, row_sum


@njit(parallel=True, cache=True, error_model="numpy")
def softmax_rows(x, y, log_out, scale, tq):
    """y[r] = softmax(scale x[r]) (log_softmax when log_out); x, y: [R, C].

    tq > 0: causal rows, row r is query i = r % tq and takes columns c <= i; the others get
    y = 0 (-inf for log_softmax).
    """
    R, C = x.shape
    for r in prange(R):
        n = C if tq == 0 else min(r % tq + 1, C)  # columns taking part
        xr = x[r, :n]  # [n]
        y_row = y[r]  # [C]
        yr = y_row[:n]  # [n]
        for c in range(n):
            yr[c] = xr[c] * scale  # z = scale x, staged in y
        m = row_max(yr)
        if m == -np.inf:  # every entry -inf: softmax is undefined (NaN), as in NumPy
            for c in range(C):
                y_row[c] = np.nan
            continue
        if log_out:
            e = np.empty(n, x.dtype)  # [n] per-row scratch: y is written once
            for c in range(n):
                e[c] = fast_exp(yr[c] - m)
            log_s = like(xr, math.log(row_sum(e)))
            for c in range(n):
                yr[c] = (yr[c] - m) - log_s
            for c in range(n, C):
                y_row[c] = -np.inf
        else:
            for c in range(n):
                yr[c] = fast_exp(yr[c] - m)
            inv = like(xr, 1.0) / row_sum(yr)
            for c in range(n):
                yr[c] = yr[c] * inv
            for c in range(n, C):
                y_row[c] = 0


@njit(parallel=True, cache=True, error_model="numpy")
def softmax_rows_keymask(x, y, scale, tq, keep, rows_per):
    """y[r] = softmax(scale x[r]) over the columns c with keep[r // rows_per, c] True (and
    c <= r % tq when tq > 0); y = 0 elsewhere, and on a row with no such column (or whose
    kept scores are all -inf). x, y: [R, C]; keep: bool [R / rows_per, C]."""
    R, C = x.shape
    ninf = like(x, -np.inf)
    zero = like(x, 0.0)
    for r in prange(R):
        n = C if tq == 0 else min(r % tq + 1, C)  # columns taking part
        kr = keep[r // rows_per]  # [C]
        xr = x[r, :n]  # [n]
        y_row = y[r]  # [C]
        yr = y_row[:n]  # [n]
        for c in range(n):
            yr[c] = xr[c] * scale if kr[c] else ninf  # z = scale x, or -inf where hidden
        m = row_max(yr)
        if m == ninf:  # no visible key: zeros (attention's convention), not NaN
            for c in range(C):
                y_row[c] = 0
            continue
        for c in range(n):
            e = fast_exp(yr[c] - m)
            yr[c] = e if kr[c] else zero  # fast_exp(-inf) is tiny, not 0: select
        inv = like(xr, 1.0) / row_sum(yr)
        for c in range(n):
            yr[c] = yr[c] * inv
        for c in range(n, C):
            y_row[c] = 0


@njit(parallel=True, cache=True, error_model="numpy")
def softmax_rows_backward(dy, y, dx, log_out, scale):
    """dx from dy and the forward output y; dy, y, dx: [R, C] (scale: softmax's only)."""
    R, C = y.shape
    for r in prange(R):
        dyr = dy[r]
        yr = y[r]
        dxr = dx[r]
        if log_out:
            s = row_sum(dyr)  # dx = dy - softmax * sum(dy)
            for c in range(C):
                dxr[c] = dyr[c] - fast_exp(yr[c]) * s
        else:
            s = row_dot(dyr, yr)  # dx = scale y (dy - <dy, y>)
            for c in range(C):
                dxr[c] = yr[c] * (dyr[c] - s) * scale


@njit(parallel=True, cache=True, error_model="numpy")
def cross_entropy_rows(logits, target, ignore_index, smoothing, loss, lse):
    """Per-row loss [R] and log-sum-exp [R] of logits [R, V] against target [R]."""
    R, C = logits.shape
    for r in prange(R):
        xr = logits[r]  # [V]
        e = np.empty(C, logits.dtype)  # [V] per-row scratch: a loop that stores vectorizes
        m = row_max(xr)
        for c in range(C):
            e[c] = fast_exp(xr[c] - m)
        lr = m + like(xr, math.log(row_sum(e)))
        lse[r] = lr
        t = target[r]
        if t == ignore_index:
            loss[r] = 0
            continue
        value = lr - (like(xr, 1.0) - smoothing) * xr[t]
        if smoothing != 0:
            value -= smoothing / like(xr, C) * row_sum(xr)
        loss[r] = value


@njit(parallel=True, cache=True, error_model="numpy")
def cross_entropy_rows_backward(dloss, logits, target, lse, ignore_index, smoothing, dlogits):
    """dlogits[r] = (softmax(logits[r]) - q_r) dloss[r]; rows with ignore_index get 0."""
    R, C = logits.shape
    for r in prange(R):
        xr = logits[r]  # [V]
        dr = dlogits[r]  # [V]
        t = target[r]
        if t == ignore_index:
            for c in range(C):
                dr[c] = 0
            continue
        lr = lse[r]
        g = dloss[r]
        base = smoothing / like(xr, C)
        for c in range(C):
            dr[c] = (fast_exp(xr[c] - lr) - base) * g
        dr[t] -= (like(xr, 1.0) - smoothing) * g


@njit(parallel=True, cache=True, error_model="numpy")
def cross_entropy_soft_rows(logits, target, smoothing, loss, lse):
    """Per-row loss [R] and lse [R] of logits [R, V] against probabilities target [R, V]."""
    R, C = logits.shape
    for r in prange(R):
        xr = logits[r]  # [V]
        tr = target[r]  # [V]
        e = np.empty(C, logits.dtype)  # [V] per-row scratch
        m = row_max(xr)
        for c in range(C):
            e[c] = fast_exp(xr[c] - m)
        lr = m + like(xr, math.log(row_sum(e)))
        lse[r] = lr
        keep = like(xr, 1.0) - smoothing
        # q = keep t + smoothing / V;  loss = lse sum(q) - <q, x>
        total_q = keep * row_sum(tr) + smoothing
        qx = keep * row_dot(tr, xr) + smoothing / like(xr, C) * row_sum(xr)
        loss[r] = lr * total_q - qx


@njit(parallel=True, cache=True, error_model="numpy")
def cross_entropy_soft_rows_backward(
    dloss, logits, target, lse, smoothing, dlogits, dtarget, target_grad
):
    """dlogits = (softmax sum(q) - q) dloss; dtarget = dloss (1 - smoothing) (lse - x)."""
    R, C = logits.shape
    for r in prange(R):
        xr = logits[r]  # [V]
        tr = target[r]  # [V]
        dr = dlogits[r]  # [V]
        lr = lse[r]
        g = dloss[r]
        keep = like(xr, 1.0) - smoothing
        base = smoothing / like(xr, C)
        total_q = keep * row_sum(tr) + smoothing
        for c in range(C):
            dr[c] = (fast_exp(xr[c] - lr) * total_q - (keep * tr[c] + base)) * g
        if target_grad:
            dt = dtarget[r]  # [V]
            for c in range(C):
                dt[c] = g * keep * (lr - xr[c])
