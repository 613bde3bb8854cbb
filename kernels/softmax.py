"""Softmax, log-softmax and cross-entropy fused with log-softmax, along the last axis.

For a row x of C numbers (logits of V classes for cross-entropy):

    m   = max_c x_c                      (subtracted for range; cancels in the result)
    lse = m + log sum_c exp(x_c - m)     (the log-sum-exp)
    softmax      y_c = exp(x_c - lse)
    log_softmax  y_c = x_c - lse

Backward, from the forward output y only (nothing else saved):

    softmax:      dx_c = y_c (dy_c - sum_k dy_k y_k)     (dy_k/dx_c = y_k (delta_kc - y_c))
    log_softmax:  dx_c = dy_c - exp(y_c) sum_k dy_k      (d y_k / d x_c = delta_kc - softmax_c)

Cross-entropy with target t, label smoothing e and the smoothed target distribution
q_c = e / V + (1 - e) [c == t] (PyTorch's definition):

    loss = -sum_c q_c log_softmax(x)_c = lse - (1 - e) x_t - (e / V) sum_c x_c
    dloss/dx_c = softmax(x)_c - q_c          (since sum_c q_c = 1)

so the backward needs only the logits, the saved lse (one number per row) and the
per-row upstream gradient: dlogits = (exp(x - lse) - q) * dloss_row. Rows whose target is
``ignore_index`` have loss 0 and gradient 0 (their lse is still computed).

Shapes: x, y, dy, dx and logits are [..., C] (any leading dims; the kernels see rows
[R, C]); target, loss, lse and dloss are the leading shape [...]. Tiers: reference
(NumPy/CuPy), numba (``softmax_numba.py``), cuda (``softmax.cu``).
"""

from __future__ import annotations

import numpy as np

from tinyllm.backend import get_array_module
from tinyllm.kernels import dispatch
from tinyllm.kernels.arrays import Array, as_rows, check_float, contiguous, upcast
from tinyllm.kernels.cuda_loader import function, scalar, with_cuda
from tinyllm.kernels.dispatch import numba_threads_for

__all__ = [
    "cross_entropy_backward",
    "cross_entropy_forward",
    "log_softmax_backward",
    "log_softmax_forward",
    "softmax_backward",
    "softmax_forward",
]

_CU = "softmax.cu"
_ROW_THREADS = 256  # ROW_THREADS in cuda_common.cuh


def _numba():
    from tinyllm.kernels import softmax_numba

    return softmax_numba


# ---------------------------------------------------------------- reference bodies
def _reference_forward(x, log_out: bool):
    xp = get_array_module(x)
    xw = upcast(x)  # [R, C]
    with np.errstate(invalid="ignore"):  # a row of -inf: NaN, as softmax is undefined there
        shifted = xw - xw.max(axis=-1, keepdims=True)
        if log_out:
            y = shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))
        else:
            e = xp.exp(shifted)
            y = e / e.sum(axis=-1, keepdims=True)
    return y.astype(x.dtype, copy=False)


def _reference_backward(dy, y, log_out: bool):
    xp = get_array_module(y)
    dyw, yw = upcast(dy), upcast(y)
    if log_out:
        dx = dyw - xp.exp(yw) * dyw.sum(axis=-1, keepdims=True)
    else:
        dx = yw * (dyw - (dyw * yw).sum(axis=-1, keepdims=True))
    return dx.astype(y.dtype, copy=False)


def _reference_ce_forward(logits, target, ignore_index, smoothing):
    xp = get_array_module(logits)
    x = upcast(logits)  # [R, V]
    R, V = x.shape
    m = x.max(axis=1, keepdims=True)
    lse = (m + xp.log(xp.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]  # [R]
    valid = target != ignore_index  # [R]
    picked = x[xp.arange(R), xp.where(valid, target, 0)]  # [R]
    loss = lse - (1 - smoothing) * picked
    if smoothing:
        loss = loss - smoothing / V * x.sum(axis=1)
    loss = xp.where(valid, loss, 0)
    return loss.astype(logits.dtype, copy=False), lse.astype(logits.dtype, copy=False)


def _reference_ce_backward(dloss, logits, target, lse, ignore_index, smoothing):
    xp = get_array_module(logits)
    x = upcast(logits)
    R, V = x.shape
    valid = target != ignore_index
    q = xp.full((R, V), smoothing / V, dtype=x.dtype)  # smoothed one-hot targets
    q[xp.arange(R), xp.where(valid, target, 0)] += 1 - smoothing
    dx = (xp.exp(x - upcast(lse)[:, None]) - q) * upcast(dloss)[:, None]
    dx = xp.where(valid[:, None], dx, 0)
    return dx.astype(logits.dtype, copy=False)


# ---------------------------------------------------------------- numba bodies
def _numba_forward(x, log_out: bool):
    x = contiguous(x)
    y = np.empty_like(x)
    with numba_threads_for(x.size):
        _numba().softmax_rows(x, y, log_out)
    return y


def _numba_backward(dy, y, log_out: bool):
    dy, y = contiguous(dy), contiguous(y)
    dx = np.empty_like(y)
    with numba_threads_for(y.size):
        _numba().softmax_rows_backward(dy, y, dx, log_out)
    return dx


def _numba_ce_forward(logits, target, ignore_index, smoothing):
    logits = contiguous(logits)
    R = logits.shape[0]
    loss = np.empty(R, logits.dtype)
    lse = np.empty(R, logits.dtype)
    s = logits.dtype.type(smoothing)
    with numba_threads_for(logits.size):
        _numba().cross_entropy_rows(logits, target, ignore_index, s, loss, lse)
    return loss, lse


def _numba_ce_backward(dloss, logits, target, lse, ignore_index, smoothing):
    logits = contiguous(logits)
    dlogits = np.empty_like(logits)
    s = logits.dtype.type(smoothing)
    dl = contiguous(dloss.astype(logits.dtype, copy=False))
    lse = contiguous(lse.astype(logits.dtype, copy=False))
    with numba_threads_for(logits.size):
        _numba().cross_entropy_rows_backward(dl, logits, target, lse, ignore_index, s, dlogits)
    return dlogits


# ---------------------------------------------------------------- cuda bodies
def _cuda_forward(x, log_out: bool):
    import cupy

    x = cupy.ascontiguousarray(x)
    y = cupy.empty_like(x)
    R, C = x.shape
    if R:
        kernel = function(_CU, "softmax_forward", x.dtype)
        kernel((R,), (_ROW_THREADS,), (x, y, np.int32(C), np.int32(log_out)))
    return y


def _cuda_backward(dy, y, log_out: bool):
    import cupy

    dy, y = cupy.ascontiguousarray(dy), cupy.ascontiguousarray(y)
    dx = cupy.empty_like(y)
    R, C = y.shape
    if R:
        kernel = function(_CU, "softmax_backward", y.dtype)
        kernel((R,), (_ROW_THREADS,), (dy, y, dx, np.int32(C), np.int32(log_out)))
    return dx


def _cuda_ce_forward(logits, target, ignore_index, smoothing):
    import cupy

    logits = cupy.ascontiguousarray(logits)
    R, V = logits.shape
    loss = cupy.empty(R, logits.dtype)
    lse = cupy.empty(R, logits.dtype)
    if R:
        kernel = function(_CU, "cross_entropy_forward", logits.dtype)
        args = (logits, target, loss, lse, np.int32(V), np.int64(ignore_index))
        kernel((R,), (_ROW_THREADS,), args + (scalar(smoothing, logits.dtype),))
    return loss, lse


def _cuda_ce_backward(dloss, logits, target, lse, ignore_index, smoothing):
    import cupy

    logits = cupy.ascontiguousarray(logits)
    R, V = logits.shape
    dl = cupy.ascontiguousarray(dloss.astype(logits.dtype, copy=False))
    lse = cupy.ascontiguousarray(lse.astype(logits.dtype, copy=False))
    dlogits = cupy.empty_like(logits)
    if R:
        kernel = function(_CU, "cross_entropy_backward", logits.dtype)
        args = (dl, logits, target, lse, dlogits, np.int32(V), np.int64(ignore_index))
        kernel((R,), (_ROW_THREADS,), args + (scalar(smoothing, logits.dtype),))
    return dlogits


_FORWARD = with_cuda(
    {"reference": _reference_forward, "numba": _numba_forward, "cuda": _cuda_forward}, _CU
)
_BACKWARD = with_cuda(
    {"reference": _reference_backward, "numba": _numba_backward, "cuda": _cuda_backward}, _CU
)
_CE_FORWARD = with_cuda(
    {"reference": _reference_ce_forward, "numba": _numba_ce_forward, "cuda": _cuda_ce_forward},
    _CU,
)
_CE_BACKWARD = with_cuda(
    {"reference": _reference_ce_backward, "numba": _numba_ce_backward, "cuda": _cuda_ce_backward},
    _CU,
)


# ---------------------------------------------------------------- public functions
def _forward(op: str, x, log_out: bool):
    check_float(op, "x", x)
    if x.ndim == 0:
        raise ValueError(f"{op}: x must have at least one dim, got a 0-d array")
    y = dispatch.run(op, get_array_module(x), x.dtype, _FORWARD, as_rows(x), log_out)
    return y.reshape(x.shape)


def _backward(op: str, dy, y, log_out: bool):
    check_float(op, "y", y)
    if dy.shape != y.shape:
        raise ValueError(f"{op}: dy {tuple(dy.shape)} and y {tuple(y.shape)} differ in shape")
    dy = dy.astype(y.dtype, copy=False)
    dx = dispatch.run(op, get_array_module(y), y.dtype, _BACKWARD, as_rows(dy), as_rows(y), log_out)
    return dx.reshape(y.shape)


def softmax_forward(x: Array) -> Array:
    """softmax(x) along the last axis: y [..., C] from x [..., C]."""
    return _forward("softmax_forward", x, False)


def softmax_backward(dy: Array, y: Array) -> Array:
    """dx = y (dy - sum(dy y)) along the last axis, from dy and the output y [..., C]."""
    return _backward("softmax_backward", dy, y, False)


def log_softmax_forward(x: Array) -> Array:
    """log_softmax(x) = x - logsumexp(x) along the last axis: y [..., C]."""
    return _forward("log_softmax_forward", x, True)


def log_softmax_backward(dy: Array, y: Array) -> Array:
    """dx = dy - exp(y) sum(dy) along the last axis, from dy and the output y [..., C]."""
    return _backward("log_softmax_backward", dy, y, True)


def _check_target(op: str, logits, target, ignore_index: int):
    xp = get_array_module(logits)
    if target.shape != logits.shape[:-1]:
        raise ValueError(
            f"{op}: target {tuple(target.shape)} must have logits' leading shape "
            f"{tuple(logits.shape[:-1])} (logits {tuple(logits.shape)})"
        )
    if np.dtype(target.dtype).kind not in "iu":
        raise TypeError(f"{op}: target must hold integer class indices, got {target.dtype}")
    t = target.reshape(-1).astype(xp.int64, copy=False)
    V = logits.shape[-1]
    bad = ((t < 0) | (t >= V)) & (t != ignore_index)
    if t.size and bool(bad.any()):
        value = int(t[bad][0])
        raise ValueError(
            f"{op}: target value {value} is out of range for {V} classes "
            f"(and is not ignore_index={ignore_index})"
        )
    return contiguous(t)


def cross_entropy_forward(
    logits: Array, target: Array, ignore_index: int = -100, label_smoothing: float = 0.0
) -> tuple[Array, Array]:
    """Per-row cross-entropy of logits [..., V] against integer target [...].

    Returns (loss, lse), both of shape [...]: the unreduced loss (0 where target ==
    ignore_index) and the log-sum-exp of each row, saved for the backward.
    """
    op = "cross_entropy_forward"
    check_float(op, "logits", logits)
    if logits.ndim == 0:
        raise ValueError(f"{op}: logits must be [..., V], got a 0-d array")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing}")
    t = _check_target(op, logits, target, ignore_index)
    xp = get_array_module(logits)
    loss, lse = dispatch.run(
        op, xp, logits.dtype, _CE_FORWARD, as_rows(logits), t, int(ignore_index),
        float(label_smoothing),
    )  # fmt: skip
    return loss.reshape(target.shape), lse.reshape(target.shape)


def cross_entropy_backward(
    dloss: Array | float,
    logits: Array,
    target: Array,
    lse: Array,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
) -> Array:
    """dlogits [..., V] = (softmax(logits) - q) * dloss[..., None]; 0 on ignored rows.

    ``dloss`` is the gradient of each row's loss: an array of target's shape, or a scalar
    (e.g. 1 / n_valid for a mean reduction). ``lse`` is the forward's second output.
    """
    op = "cross_entropy_backward"
    check_float(op, "logits", logits)
    t = _check_target(op, logits, target, ignore_index)
    xp = get_array_module(logits)
    R = t.shape[0]
    dl = xp.broadcast_to(xp.asarray(dloss, dtype=logits.dtype), target.shape).reshape(R)
    dlogits = dispatch.run(
        op, xp, logits.dtype, _CE_BACKWARD, dl, as_rows(logits), t,
        lse.reshape(R), int(ignore_index), float(label_smoothing),
    )  # fmt: skip
    return dlogits.reshape(logits.shape)
