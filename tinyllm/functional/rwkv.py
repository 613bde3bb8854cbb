"""RWKV-4's WKV recurrence (Peng et al. 2023, "RWKV: Reinventing RNNs"), one Function.

For batch row b, channel c and t = 0 .. T-1, with w = -exp(time_decay) < 0 (a per-channel
decay, as RWKV-4's ``WKV.forward`` takes ``-exp(time_decay)``) and u = time_first (the bonus
of the current token):

    wkv_t = (sum_{i<t} e^{(t-1-i) w + k_i} v_i + e^{u + k_t} v_t)
          / (sum_{i<t} e^{(t-1-i) w + k_i}     + e^{u + k_t})

As a recurrence over a_t, b_t (the two sums over i < t): a_{t+1} = e^w a_t + e^{k_t} v_t,
b_{t+1} = e^w b_t + e^{k_t}. Numerically stable form (the RWKV-4 CUDA kernel): a and b are
held as e^{p} (aa, bb) with p the running max of the exponents, so no exp ever sees more than
0 and keys shifted by 800 (where e^k overflows float64) give the same output as unshifted ones
(wkv is invariant under k -> k + c: numerator and denominator both scale by e^c).

Backward (hand-written; D_t, N_t the denominator and numerator of wkv_t, g_t the cotangent):

    du        = sum_t g_t e^{u+k_t} (v_t - wkv_t) / D_t
    dw        = sum_t g_t (a'_t - wkv_t b'_t) / D_t,  dtime_decay = w dw,  with
                a'_t = sum_{i<t} (t-1-i) e^{(t-1-i)w + k_i} v_i = d a_t / dw
                (a'_{t+1} = e^w (a'_t + a_t); b' the same with v = 1)
    dv_t      = g_t e^{u+k_t} / D_t + e^{k_t} alpha_t
    dk_t      = g_t e^{u+k_t} (v_t - wkv_t) / D_t + e^{k_t} (v_t alpha_t - beta_t)
    alpha_t   = sum_{s>t} e^{(s-1-t) w} g_s / D_s,      beta_t = same with g_s wkv_s
                (alpha_{t-1} = e^w alpha_t + g_t / D_t: a reverse scan)

alpha and beta are held with their own running max q (exponents (s-1-t) w - log D_s), and
k_t + q <= 0 because D_s contains the term e^{(s-1-t) w + k_t}: the backward is stable too.
The forward saves only its inputs; the backward recomputes the forward scan (keeping log D_t
and wkv_t) and then runs the reverse scan. The arithmetic of both directions lives in
``tinyllm.kernels.wkv`` (kernels ``wkv4_forward``, ``wkv4_backward``): a reference tier of
array code (NumPy/CuPy, vectorized over batch x channels, sequential over T), a Numba tier
(one task per (b, c)) and a CUDA tier (``kernels/wkv.cu``, one thread per (b, c)).
"""

from __future__ import annotations

from tinyllm.backend import get_array_module
from tinyllm.function import Function
from tinyllm.functional._util import check_float
from tinyllm.kernels.arrays import compute_dtype
from tinyllm.kernels.wkv import wkv4_backward, wkv4_forward
from tinyllm.tensor import Tensor

__all__ = ["wkv4"]

_OP = "wkv4"


class WKV4(Function):
    @staticmethod
    def forward(ctx, time_decay, time_first, k, v):
        # time_decay, time_first: [C]; k, v: [B, T, C]
        xp = get_array_module(k)
        dtype, work = k.dtype, compute_dtype(k.dtype)
        w = -xp.exp(time_decay.astype(work))
        u = time_first.astype(work)
        k, v = k.astype(work, copy=False), v.astype(work, copy=False)
        out = wkv4_forward(w, u, k, v)  # the max-trick scan (kernels/wkv.py)
        ctx.save_for_backward(time_decay, time_first, k, v)
        ctx.dtype = dtype
        return out.astype(dtype, copy=False)

    @staticmethod
    def backward(ctx, gy):
        time_decay, time_first, k, v = ctx.saved_tensors
        xp = get_array_module(k)
        work = k.dtype
        w = -xp.exp(time_decay.astype(work))
        u = time_first.astype(work)
        # forward scan again (log D_t, wkv_t, a', b'), then the reverse scan of alpha, beta
        gw, gu, dk, dv = wkv4_backward(w, u, k, v, gy.astype(work, copy=False))
        dtype = ctx.dtype
        needs = ctx.needs_input_grad
        return (
            (gw * w).astype(dtype, copy=False) if needs[0] else None,  # dw/dtime_decay = w
            gu.astype(dtype, copy=False) if needs[1] else None,
            dk.astype(dtype, copy=False) if needs[2] else None,
            dv.astype(dtype, copy=False) if needs[3] else None,
        )


def wkv4_step(time_decay, time_first, k, v, state=None):
    """One step of ``wkv4`` for decoding (no autograd): k, v [B, C] (Tensors or arrays) of
    the token at position t, ``state`` = (aa, bb, pp) [B, C] from the previous step (None at
    t = 0), holding a_t = e^{pp} aa and b_t = e^{pp} bb (module docstring). Returns
    (wkv_t [B, C], new state), arrays in the compute dtype; stepping through a sequence gives
    ``wkv4``'s output at every position.
    """
    td, u, kk, vv = (x.data if isinstance(x, Tensor) else x for x in (time_decay, time_first, k, v))
    xp = get_array_module(kk)
    work = compute_dtype(kk.dtype)
    w = -xp.exp(td.astype(work))
    u, kk, vv = u.astype(work), kk.astype(work), vv.astype(work)
    if state is None:
        aa, bb = xp.zeros(kk.shape, work), xp.zeros(kk.shape, work)
        pp = xp.full(kk.shape, -xp.inf, work)
    else:
        aa, bb, pp = state
    ww = u + kk
    p = xp.maximum(pp, ww)
    e1, e2 = xp.exp(pp - p), xp.exp(ww - p)
    y = (e1 * aa + e2 * vv) / (e1 * bb + e2)
    ww = w + pp
    p = xp.maximum(ww, kk)
    e1, e2 = xp.exp(ww - p), xp.exp(kk - p)
    return y, (e1 * aa + e2 * vv, e1 * bb + e2, p)


def wkv4(time_decay, time_first, k, v):
    """RWKV-4's WKV operator (``WKV.apply(B, T, C, w, u, k, v)`` of RWKV-LM, taking
    ``time_decay`` before the ``-exp``), in the stable max-trick form.

    time_decay, time_first: [C]; k, v: [B, T, C]. Returns wkv [B, T, C]:

        wkv_t = (sum_{i<t} e^{(t-1-i) w + k_i} v_i + e^{u + k_t} v_t)
              / (sum_{i<t} e^{(t-1-i) w + k_i} + e^{u + k_t})

    with w = -exp(time_decay) and u = time_first.

    The backward is hand-written (module docstring). float16/bfloat16 compute in float32.

    The first output is v_0 (one term on top and below):

    >>> import tinyllm, tinyllm.functional as F
    >>> F.wkv4(tinyllm.zeros(1), tinyllm.zeros(1), tinyllm.zeros(1, 1, 1), tinyllm.ones(1, 1, 1))
    tensor([[[1.]]])
    """
    for name, t in (("time_decay", time_decay), ("time_first", time_first), ("k", k), ("v", v)):
        check_float(f"{_OP}: {name}", t)
    if k.ndim != 3 or k.shape[1] == 0:
        raise ValueError(f"{_OP}: k must be [B, T, C] with T >= 1, got {tuple(k.shape)}")
    if tuple(v.shape) != tuple(k.shape):
        raise ValueError(f"{_OP}: v of shape {tuple(v.shape)} must match k {tuple(k.shape)}")
    C = k.shape[2]
    for name, t in (("time_decay", time_decay), ("time_first", time_first)):
        if tuple(t.shape) != (C,):
            raise ValueError(f"{_OP}: {name} must have shape ({C},), got {tuple(t.shape)}")
    if len({time_decay.dtype, time_first.dtype, k.dtype, v.dtype}) > 1:
        raise TypeError(f"{_OP}: all inputs must share one dtype")
    return WKV4.apply(time_decay, time_first, k, v)
