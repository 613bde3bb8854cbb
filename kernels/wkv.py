"""RWKV-4's WKV recurrence, forward and backward (the math is ``tinyllm.functional.rwkv``'s).

Arrays in, arrays out, in the compute dtype: w = -exp(time_decay) [C], u = time_first [C],
k, v [B, T, C]. For each (b, c) the forward runs over t with the running max pp of the
exponents, so no exp sees a positive argument:

    wkv_t = (e^{pp-p} aa + e^{u+k_t-p} v_t) / (e^{pp-p} bb + e^{u+k_t-p}),  p = max(pp, u+k_t)
    aa, bb, pp <- e^{w+pp-p'} aa + e^{k_t-p'} v_t, e^{w+pp-p'} bb + e^{k_t-p'},  p' = max(w+pp, k_t)

The backward reruns that scan (keeping log D_t and wkv_t, and a'_t, b'_t = d a_t / dw,
d b_t / dw for dw), then a reverse scan of alpha_t, beta_t with their own running max.
It returns (dw summed over the batch, du summed over the batch, dk, dv); the caller turns
dw into d time_decay = w dw.

Tiers: reference (below: array code on xp, vectorized over [B, C], a Python loop over T),
numba (``wkv_numba.py``: one task per (b, c) in ``prange``, sequential over T), cuda
(``wkv.cu``: one thread per (b, c), sequential over T: the layout of RWKV-LM's CUDA kernel).
The Numba and CUDA bodies run the same scalar scan. Their per-(b, c) partial sums of dw and
du are reduced over b in a fixed order by the Python caller, so results do not depend on the
thread count (and the CUDA tier needs no atomics).
"""

from __future__ import annotations

import functools

import numpy as np

from tinyllm.backend import get_array_module
from tinyllm.kernels import dispatch
from tinyllm.kernels.arrays import Array, contiguous
from tinyllm.kernels.cuda_loader import function, with_cuda

__all__ = ["wkv4_backward", "wkv4_forward"]

_CU = "wkv.cu"
_THREADS = 128  # threads per block of the CUDA bodies, one (b, c) each


@functools.cache
def _numba():
    from tinyllm.kernels import wkv_numba

    return wkv_numba


# ---------------------------------------------------------------- reference bodies
def _reference_forward(w, u, k, v):
    xp = get_array_module(k)
    B, T, C = k.shape
    work = k.dtype
    aa = xp.zeros((B, C), work)
    bb = xp.zeros((B, C), work)
    pp = xp.full((B, C), -xp.inf, work)
    out = xp.empty((B, T, C), work)
    for t in range(T):
        kk, vv = k[:, t], v[:, t]
        ww = u + kk  # the current token, with its bonus u
        p = xp.maximum(pp, ww)
        e1, e2 = xp.exp(pp - p), xp.exp(ww - p)
        out[:, t] = (e1 * aa + e2 * vv) / (e1 * bb + e2)
        ww = w + pp  # decay the state, then add token t
        p = xp.maximum(ww, kk)
        e1, e2 = xp.exp(ww - p), xp.exp(kk - p)
        aa, bb, pp = e1 * aa + e2 * vv, e1 * bb + e2, p
    return out


def _reference_backward(w, u, k, v, gy):
    xp = get_array_module(k)
    work = k.dtype
    B, T, C = k.shape
    # forward scan again, with a' and b' (aa2, bb2, scaled like aa, bb by e^pp)
    aa, bb, aa2, bb2 = (xp.zeros((B, C), work) for _ in range(4))
    pp = xp.full((B, C), -xp.inf, work)
    gw, gu = xp.zeros((B, C), work), xp.zeros((B, C), work)
    dk, dv = xp.empty_like(k), xp.empty_like(v)
    logD, Y = xp.empty_like(k), xp.empty_like(k)
    for t in range(T):
        kk, vv, g = k[:, t], v[:, t], gy[:, t]
        ww = u + kk
        p = xp.maximum(pp, ww)
        e1, e2 = xp.exp(pp - p), xp.exp(ww - p)
        den = e1 * bb + e2  # D_t e^{-p}
        y = (e1 * aa + e2 * vv) / den
        logD[:, t], Y[:, t] = p + xp.log(den), y
        gw += g * e1 * (aa2 - y * bb2) / den
        direct = g * e2 / den  # g_t e^{u+k_t} / D_t
        dv[:, t] = direct
        dk[:, t] = direct * (vv - y)
        gu += direct * (vv - y)
        ww = w + pp
        p = xp.maximum(ww, kk)
        e1, e2 = xp.exp(ww - p), xp.exp(kk - p)
        aa2, bb2 = e1 * (aa2 + aa), e1 * (bb2 + bb)  # a'_{t+1} = e^w (a'_t + a_t)
        aa, bb, pp = e1 * aa + e2 * vv, e1 * bb + e2, p
    # reverse scan: alpha, beta held as e^{qq} (al, be)
    al, be = xp.zeros((B, C), work), xp.zeros((B, C), work)
    qq = xp.full((B, C), -xp.inf, work)
    for t in reversed(range(T)):
        e = xp.exp(k[:, t] + qq)  # <= 1 (functional.rwkv's docstring)
        dv[:, t] += e * al
        dk[:, t] += e * (v[:, t] * al - be)
        ww, nl = w + qq, -logD[:, t]
        q = xp.maximum(ww, nl)
        e1, e2 = xp.exp(ww - q), xp.exp(nl - q)
        al, be, qq = e1 * al + e2 * gy[:, t], e1 * be + e2 * gy[:, t] * Y[:, t], q
    return gw.sum(0), gu.sum(0), dk, dv


# ---------------------------------------------------------------- numba bodies
def _numba_forward(w, u, k, v):
    w, u, k, v = (contiguous(x) for x in (w, u, k, v))
    out = np.empty_like(k)
    B, T, C = k.shape
    dispatch.numba_for_work(_numba().wkv_forward, B * T * C)(w, u, k, v, out)
    return out


def _numba_backward(w, u, k, v, gy):
    w, u, k, v, gy = (contiguous(x) for x in (w, u, k, v, gy))
    B, T, C = k.shape
    dk, dv = np.empty_like(k), np.empty_like(v)
    gw_parts, gu_parts = np.empty((B, C), k.dtype), np.empty((B, C), k.dtype)
    scratch = np.empty((2, B, T, C), k.dtype)  # log D_t and wkv_t of the forward scan
    kernel = dispatch.numba_for_work(_numba().wkv_backward, B * T * C)
    kernel(w, u, k, v, gy, dk, dv, gw_parts, gu_parts, scratch)
    return gw_parts.sum(0), gu_parts.sum(0), dk, dv


# ---------------------------------------------------------------- cuda bodies
def _blocks(B: int, C: int) -> tuple[int]:
    return ((B * C + _THREADS - 1) // _THREADS,)


def _cuda_forward(w, u, k, v):
    import cupy

    w, u, k, v = (cupy.ascontiguousarray(x) for x in (w, u, k, v))
    B, T, C = k.shape
    out = cupy.empty_like(k)
    if B * C:  # a grid of zero blocks is a launch error
        kernel = function(_CU, "wkv_forward", k.dtype)
        dims = (np.int32(B), np.int32(T), np.int32(C))
        kernel(_blocks(B, C), (_THREADS,), (w, u, k, v, *dims, out))
    return out


def _cuda_backward(w, u, k, v, gy):
    import cupy

    w, u, k, v, gy = (cupy.ascontiguousarray(x) for x in (w, u, k, v, gy))
    B, T, C = k.shape
    dk, dv = cupy.empty_like(k), cupy.empty_like(v)
    gw_parts, gu_parts = cupy.empty((B, C), k.dtype), cupy.empty((B, C), k.dtype)
    scratch = cupy.empty((2, B, T, C), k.dtype)  # log D_t and wkv_t of the forward scan
    if B * C:  # a grid of zero blocks is a launch error
        kernel = function(_CU, "wkv_backward", k.dtype)
        dims = (np.int32(B), np.int32(T), np.int32(C))
        args = (w, u, k, v, gy, *dims, dk, dv, gw_parts, gu_parts, scratch)
        kernel(_blocks(B, C), (_THREADS,), args)
    return gw_parts.sum(0), gu_parts.sum(0), dk, dv


_FORWARD = dispatch.declare(
    with_cuda(
        {"reference": _reference_forward, "numba": _numba_forward, "cuda": _cuda_forward}, _CU
    ),
    "wkv4_forward",
)
_BACKWARD = dispatch.declare(
    with_cuda(
        {"reference": _reference_backward, "numba": _numba_backward, "cuda": _cuda_backward},
        _CU,
    ),
    "wkv4_backward",
)


# ---------------------------------------------------------------- public functions
def _check(op: str, w, u, k, v) -> None:
    if k.ndim != 3 or v.shape != k.shape or w.shape != (k.shape[2],) or u.shape != w.shape:
        raise ValueError(
            f"{op}: expected w, u [C] and k, v [B, T, C]; got w {tuple(w.shape)}, u "
            f"{tuple(u.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if len({w.dtype, u.dtype, k.dtype, v.dtype}) > 1 or k.dtype not in dispatch.KERNEL_DTYPES:
        raise TypeError(f"{op}: w, u, k, v must share one dtype, float32 or float64")


def wkv4_forward(w: Array, u: Array, k: Array, v: Array) -> Array:
    """wkv [B, T, C] from w = -exp(time_decay), u = time_first [C] and k, v [B, T, C]."""
    _check("wkv4_forward", w, u, k, v)
    return dispatch.run("wkv4_forward", get_array_module(k), k.dtype, _FORWARD, w, u, k, v)


def wkv4_backward(w: Array, u: Array, k: Array, v: Array, gy: Array):
    """(dw [C], du [C], dk, dv [B, T, C]) for the cotangent gy [B, T, C] of ``wkv4_forward``
    (dw, du summed over the batch; d time_decay = w dw)."""
    _check("wkv4_backward", w, u, k, v)
    if gy.shape != k.shape or gy.dtype != k.dtype:
        raise ValueError(f"wkv4_backward: gy {tuple(gy.shape)} {gy.dtype} must match k")
    xp = get_array_module(k)
    return dispatch.run("wkv4_backward", xp, k.dtype, _BACKWARD, w, u, k, v, gy)
