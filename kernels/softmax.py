"""Softmax, log-softmax and cross-entropy fused with log-softmax, along the last axis.

For a row x of C numbers (logits of V classes for cross-entropy):

    m   = max_c x_c                      (subtracted for range; cancels in the result)
    lse = m + log sum_c exp(x_c - m)     (the log-sum-exp)
    softmax      y_c = exp(x_c - lse)
    log_softmax  y_c = x_c - lse

Backward, from the forward output y only (nothing else saved):

    softmax:      dx_c = y_c (dy_c - sum_k dy_k y_k)     (dy_k/dx_c = y_k (delta_kc - y_c))
    log_softmax:  dx_c = dy_c - exp(y_c) sum_k dy_k      (d y_k / d x_c = delta_kc - softmax_c)

Attention's probabilities use two options of ``softmax_forward``: a ``scale`` applied to x
first (y = softmax(scale x), so dx = scale y (dy - sum_k dy_k y_k)) and ``causal``: x is
[..., Tq, Tk] and row i takes columns j <= i only (top-left aligned); the others get y = 0,
so they receive dx = 0 from the same backward formula. A third, ``key_mask`` (bool
[B, Tk], True = keep; attention's key-padding mask), hides columns per leading index: every
row of x[b] takes only the columns c with key_mask[b, c] (a [1, Tk] mask serves every b).
Hidden columns get y = 0 and a row with no column left is all zeros (attention's convention
for a fully masked query, instead of NaN); the backward is again the same formula.

Cross-entropy with target t, label smoothing e and the smoothed target distribution
q_c = e / V + (1 - e) [c == t] (PyTorch's definition):

    loss = -sum_c q_c log_softmax(x)_c = lse - (1 - e) x_t - (e / V) sum_c x_c
    dloss/dx_c = softmax(x)_c - q_c          (since sum_c q_c = 1)

so the backward needs only the logits, the saved lse (one number per row) and the
per-row upstream gradient: dlogits = (exp(x - lse) - q) * dloss_row. Rows whose target is
``ignore_index`` have loss 0 and gradient 0 (their lse is still computed). A class index
outside [0, V) that is not ``ignore_index`` raises IndexError, as PyTorch's nll_loss does.

Range checks and host syncs: checking the target's values is free on NumPy arrays and always
done; on a device array it would be a host sync (the host waits to read a flag), so there
it runs only under ``tinyllm.detect_anomaly()`` (the one debug switch, thread-local). An
unchecked out-of-range target on the device never reads out of bounds: the CUDA kernel
writes a NaN loss and NaN gradients for that row (PyTorch's device-side assert, made
visible without a sync).

Soft (probability) targets t [..., V] (PyTorch's cross_entropy with a float target of the
logits' shape), smoothed as q_c = (1 - e) t_c + e / V; sum_c q_c need not be 1:

    loss   = -sum_c q_c log_softmax(x)_c = lse sum_c q_c - sum_c q_c x_c
    dx_c   = dloss (softmax(x)_c sum_k q_k - q_c)
    dt_c   = dloss (1 - e) (lse - x_c)           (= -dloss (1 - e) log_softmax(x)_c)

Soft targets have reference and Numba bodies (no CUDA body: a GPU runs the reference).

Shapes: x, y, dy, dx and logits are [..., C] (any leading dims; the kernels see rows
[R, C]); target, loss, lse and dloss are the leading shape [...]. Tiers: reference
(NumPy/CuPy), numba (``softmax_numba.py``), cuda (``softmax.cu``).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from tinyllm.anomaly import is_anomaly_enabled
from tinyllm.backend import get_array_module
from tinyllm.kernels import dispatch
from tinyllm.kernels.arrays import Array, as_rows, check_float, contiguous, upcast
from tinyllm.kernels.cuda_loader import function, scalar, with_cuda

__all__ = [
    "cross_entropy_backward",
    "cross_entropy_forward",
    "cross_entropy_soft_backward",
    "cross_entropy_soft_forward",
    "log_softmax_backward",
    "log_softmax_forward",
    "softmax_backward",
    "softmax_forward",
]

_CU = "softmax.cu"
_ROW_THREADS = 256  # ROW_THREADS in cuda_common.cuh


@functools.cache
def _numba():
    from tinyllm.kernels import softmax_numba

    return softmax_numba


# ---------------------------------------------------------------- reference bodies
def _causal_allowed(xp, R: int, C: int, tq: int):
    """[R, C] bool: row r (query r % tq) sees columns c <= r % tq."""
    return xp.arange(C)[None, :] <= (xp.arange(R) % tq)[:, None]


def _key_allowed(xp, keep, rows_per: int):
    """[R, C] bool from the key mask [R / rows_per, C]: row r takes keep[r // rows_per]."""
    return xp.repeat(keep, rows_per, axis=0)


def _reference_forward(x, log_out: bool, scale: float, tq: int, keep=None, rows_per: int = 1):
    xp = get_array_module(x)
    xw = upcast(x)  # [R, C]
    if scale != 1.0:
        xw = xw * xw.dtype.type(scale)
    if tq:
        xw = xp.where(_causal_allowed(xp, *xw.shape, tq), xw, -xp.inf)
    if keep is not None:
        xw = xp.where(_key_allowed(xp, keep, rows_per), xw, -xp.inf)
    with np.errstate(invalid="ignore"):  # a row of -inf: NaN, as softmax is undefined there
        m = xw.max(axis=-1, keepdims=True)
        if keep is not None:  # a fully hidden row: zeros (attention's convention)
            empty = m == -xp.inf
            m = xp.where(empty, 0, m)
        shifted = xw - m
        if log_out:
            y = shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))
        else:
            e = xp.exp(shifted)
            y = e / e.sum(axis=-1, keepdims=True)
        if keep is not None:
            y = xp.where(empty, 0, y)
    return y.astype(x.dtype, copy=False)


def _reference_backward(dy, y, log_out: bool, scale: float):
    xp = get_array_module(y)
    dyw, yw = upcast(dy), upcast(y)
    if log_out:
        dx = dyw - xp.exp(yw) * dyw.sum(axis=-1, keepdims=True)
    else:
        dx = yw * (dyw - (dyw * yw).sum(axis=-1, keepdims=True))
        if scale != 1.0:
            dx = dx * dx.dtype.type(scale)
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


def _reference_ce_soft_forward(logits, target, smoothing):
    xp = get_array_module(logits)
    x, t = upcast(logits), upcast(target)  # [R, V]
    V = x.shape[1]
    m = x.max(axis=1, keepdims=True)
    lse = (m + xp.log(xp.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]  # [R]
    q = (1 - smoothing) * t + smoothing / V  # [R, V] smoothed target
    loss = lse * q.sum(axis=1) - (q * x).sum(axis=1)
    return loss.astype(logits.dtype, copy=False), lse.astype(logits.dtype, copy=False)


def _reference_ce_soft_backward(dloss, logits, target, lse, smoothing, target_grad):
    xp = get_array_module(logits)
    x, t = upcast(logits), upcast(target)  # [R, V]
    V = x.shape[1]
    lse_w, g = upcast(lse)[:, None], upcast(dloss)[:, None]  # [R, 1]
    q = (1 - smoothing) * t + smoothing / V
    dx = (xp.exp(x - lse_w) * q.sum(axis=1, keepdims=True) - q) * g
    dt = (g * (1 - smoothing) * (lse_w - x)).astype(target.dtype) if target_grad else None
    return dx.astype(logits.dtype, copy=False), dt


# ---------------------------------------------------------------- numba bodies
def _numba_forward(x, log_out: bool, scale: float, tq: int, keep=None, rows_per: int = 1):
    x = contiguous(x)
    y = np.empty_like(x)
    if keep is not None:
        kernel = dispatch.numba_for_work(_numba().softmax_rows_keymask, x.size)
        kernel(x, y, x.dtype.type(scale), tq, keep, rows_per)
        return y
    kernel = dispatch.numba_for_work(_numba().softmax_rows, x.size)
    kernel(x, y, log_out, x.dtype.type(scale), tq)
    return y


def _numba_backward(dy, y, log_out: bool, scale: float):
    dy, y = contiguous(dy), contiguous(y)
    dx = np.empty_like(y)
    kernel = dispatch.numba_for_work(_numba().softmax_rows_backward, y.size)
    kernel(dy, y, dx, log_out, y.dtype.type(scale))
    return dx


def _numba_ce_forward(logits, target, ignore_index, smoothing):
    logits = contiguous(logits)
    R = logits.shape[0]
    loss = np.empty(R, logits.dtype)
    lse = np.empty(R, logits.dtype)
    s = logits.dtype.type(smoothing)
    dispatch.numba_for_work(_numba().cross_entropy_rows, logits.size)(
        logits, target, ignore_index, s, loss, lse
    )
    return loss, lse


def _numba_ce_backward(dloss, logits, target, lse, ignore_index, smoothing):
    logits = contiguous(logits)
    dlogits = np.empty_like(logits)
    s = logits.dtype.type(smoothing)
    dl = contiguous(dloss.astype(logits.dtype, copy=False))
    lse = contiguous(lse.astype(logits.dtype, copy=False))
    dispatch.numba_for_work(_numba().cross_entropy_rows_backward, logits.size)(
        dl, logits, target, lse, ignore_index, s, dlogits
    )
    return dlogits


def _numba_ce_soft_forward(logits, target, smoothing):
    logits, target = contiguous(logits), contiguous(target)
    R = logits.shape[0]
    loss = np.empty(R, logits.dtype)
    lse = np.empty(R, logits.dtype)
    dispatch.numba_for_work(_numba().cross_entropy_soft_rows, logits.size)(
        logits, target, logits.dtype.type(smoothing), loss, lse
    )
    return loss, lse


def _numba_ce_soft_backward(dloss, logits, target, lse, smoothing, target_grad):
    logits, target = contiguous(logits), contiguous(target)
    dlogits = np.empty_like(logits)
    dtarget = np.empty_like(target) if target_grad else np.empty((0, 1), logits.dtype)
    dl = contiguous(dloss.astype(logits.dtype, copy=False))
    lse = contiguous(lse.astype(logits.dtype, copy=False))
    dispatch.numba_for_work(_numba().cross_entropy_soft_rows_backward, logits.size)(
        dl, logits, target, lse, logits.dtype.type(smoothing), dlogits, dtarget, target_grad
    )
    return dlogits, (dtarget if target_grad else None)


# ---------------------------------------------------------------- cuda bodies
def _cuda_forward(x, log_out: bool, scale: float, tq: int, keep=None, rows_per: int = 1):
    import cupy

    empty = None
    if keep is not None:  # hidden keys -inf before the kernel; fully hidden rows zeroed after
        x = cupy.where(_key_allowed(cupy, keep, rows_per), x * x.dtype.type(scale), -cupy.inf)
        if tq:
            x = cupy.where(_causal_allowed(cupy, *x.shape, tq), x, -cupy.inf)
        empty = x.max(axis=-1, keepdims=True) == -cupy.inf
        scale = 1.0
    y = _cuda_softmax(x, log_out, scale, tq)
    return y if empty is None else cupy.where(empty, 0, y).astype(y.dtype, copy=False)


def _cuda_softmax(x, log_out: bool, scale: float, tq: int):
    import cupy

    x = cupy.ascontiguousarray(x)
    y = cupy.empty_like(x)
    R, C = x.shape
    if R:
        kernel = function(_CU, "softmax_forward", x.dtype)
        args = (x, y, np.int32(C), np.int32(log_out), scalar(scale, x.dtype), np.int32(tq))
        kernel((R,), (_ROW_THREADS,), args)
    return y


def _cuda_backward(dy, y, log_out: bool, scale: float):
    import cupy

    dy, y = cupy.ascontiguousarray(dy), cupy.ascontiguousarray(y)
    dx = cupy.empty_like(y)
    R, C = y.shape
    if R:
        kernel = function(_CU, "softmax_backward", y.dtype)
        args = (dy, y, dx, np.int32(C), np.int32(log_out), scalar(scale, y.dtype))
        kernel((R,), (_ROW_THREADS,), args)
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


_FORWARD = dispatch.declare(
    with_cuda(
        {"reference": _reference_forward, "numba": _numba_forward, "cuda": _cuda_forward}, _CU
    ),
    "softmax_forward",
    "log_softmax_forward",
)
_BACKWARD = dispatch.declare(
    with_cuda(
        {"reference": _reference_backward, "numba": _numba_backward, "cuda": _cuda_backward},
        _CU,
    ),
    "softmax_backward",
    "log_softmax_backward",
)
_CE_FORWARD = dispatch.declare(
    with_cuda(
        {"reference": _reference_ce_forward, "numba": _numba_ce_forward, "cuda": _cuda_ce_forward},
        _CU,
    ),
    "cross_entropy_forward",
)
_CE_BACKWARD = dispatch.declare(
    with_cuda(
        {
            "reference": _reference_ce_backward,
            "numba": _numba_ce_backward,
            "cuda": _cuda_ce_backward,
        },
        _CU,
    ),
    "cross_entropy_backward",
)
_CE_SOFT_FORWARD = dispatch.declare(
    {"reference": _reference_ce_soft_forward, "numba": _numba_ce_soft_forward},
    "cross_entropy_soft_forward",
)
_CE_SOFT_BACKWARD = dispatch.declare(
    {"reference": _reference_ce_soft_backward, "numba": _numba_ce_soft_backward},
    "cross_entropy_soft_backward",
)


# ---------------------------------------------------------------- public functions
def _check_scale(op: str, scale: float) -> float:
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"{op}: scale must be a finite number, got {scale}")
    return scale


def _key_mask(op: str, x, key_mask):
    """(keep [M, C] C-contiguous bool, rows per mask row) of a key mask for x, checked."""
    xp = get_array_module(x)
    if get_array_module(key_mask) is not xp:
        raise RuntimeError(f"{op}: key_mask is on {_device(key_mask)} but x on {_device(x)}")
    if key_mask.dtype != np.bool_:
        raise TypeError(f"{op}: key_mask must be boolean (True = keep), got {key_mask.dtype}")
    lead = x.shape[0] if x.ndim >= 2 else 1
    if (
        key_mask.ndim != 2
        or key_mask.shape[1] != x.shape[-1]
        or key_mask.shape[0]
        not in (
            1,
            lead,
        )
    ):
        raise ValueError(
            f"{op}: key_mask {tuple(key_mask.shape)} must be [B, C] or [1, C] for x "
            f"{tuple(x.shape)} (B = x.shape[0], C = x.shape[-1])"
        )
    rows = math.prod(x.shape[:-1])
    return xp.ascontiguousarray(key_mask), max(rows // key_mask.shape[0], 1)


def _forward(op: str, x, log_out: bool, scale: float = 1.0, causal: bool = False, key_mask=None):
    check_float(op, "x", x)
    if x.ndim < (2 if causal else 1):
        raise ValueError(
            f"{op}: x must be [..., C]" + (" ([..., Tq, Tk] with causal=True)" if causal else "")
            + f", got shape {tuple(x.shape)}"
        )  # fmt: skip
    tq = x.shape[-2] if causal else 0
    scale = _check_scale(op, scale)
    xp = get_array_module(x)
    if key_mask is None:
        y = dispatch.run(op, xp, x.dtype, _FORWARD, as_rows(x), log_out, scale, tq)
    else:
        keep, rows_per = _key_mask(op, x, key_mask)
        y = dispatch.run(op, xp, x.dtype, _FORWARD, as_rows(x), log_out, scale, tq, keep, rows_per)
    return y.reshape(x.shape)


def _backward(op: str, dy, y, log_out: bool, scale: float = 1.0):
    check_float(op, "y", y)
    if dy.shape != y.shape:
        raise ValueError(f"{op}: dy {tuple(dy.shape)} and y {tuple(y.shape)} differ in shape")
    dy = dy.astype(y.dtype, copy=False)
    scale = _check_scale(op, scale)
    xp = get_array_module(y)
    dx = dispatch.run(op, xp, y.dtype, _BACKWARD, as_rows(dy), as_rows(y), log_out, scale)
    return dx.reshape(y.shape)


def softmax_forward(
    x: Array, scale: float = 1.0, causal: bool = False, key_mask: Array | None = None
) -> Array:
    """softmax(scale x) along the last axis: y [..., C] from x [..., C].

    ``causal=True``: x is [..., Tq, Tk] and row i takes columns j <= i only (y = 0 on the
    others), attention's top-left causal mask applied inside the kernel.
    ``key_mask``: bool [B, C] (or [1, C]), B = x.shape[0]: every row of x[b] takes only the
    columns c with key_mask[b, c] (attention's key-padding mask, inside the kernel); y = 0
    on hidden columns, and a row with no visible column is all zeros (not NaN).
    """
    return _forward("softmax_forward", x, False, scale, causal, key_mask)


def softmax_backward(dy: Array, y: Array, scale: float = 1.0) -> Array:
    """dx = scale y (dy - sum(dy y)) along the last axis, from dy and the output y [..., C]
    of ``softmax_forward(x, scale)`` (causal or not: masked entries have y = 0, so dx = 0)."""
    return _backward("softmax_backward", dy, y, False, scale)


def log_softmax_forward(x: Array) -> Array:
    """log_softmax(x) = x - logsumexp(x) along the last axis: y [..., C]."""
    return _forward("log_softmax_forward", x, True)


def log_softmax_backward(dy: Array, y: Array) -> Array:
    """dx = dy - exp(y) sum(dy) along the last axis, from dy and the output y [..., C]."""
    return _backward("log_softmax_backward", dy, y, True)


def _device(a) -> str:
    return "cpu" if get_array_module(a) is np else "cuda"


def _check_target(op: str, logits, target, ignore_index: int):
    """target [...] as contiguous int64 rows [R], checked against logits [..., V].

    Shapes, dtype and device always; values (each t in [0, V) or ignore_index) on NumPy
    arrays, and on device arrays only under ``detect_anomaly`` (a host sync there).
    """
    xp = get_array_module(logits)
    if target.shape != logits.shape[:-1]:
        raise ValueError(
            f"{op}: target {tuple(target.shape)} must have logits' leading shape "
            f"{tuple(logits.shape[:-1])} (logits {tuple(logits.shape)})"
        )
    if np.dtype(target.dtype).kind not in "iu":
        raise TypeError(f"{op}: target must hold integer class indices, got {target.dtype}")
    if get_array_module(target) is not xp:
        raise RuntimeError(
            f"{op}: target is on {_device(target)} but logits are on {_device(logits)} "
            f"(target {tuple(target.shape)}, logits {tuple(logits.shape)})"
        )
    t = target.reshape(-1).astype(xp.int64, copy=False)
    V = logits.shape[-1]
    if xp is not np and not is_anomaly_enabled():
        return contiguous(t)  # no host sync: the kernel turns a bad row into NaN
    bad = ((t < 0) | (t >= V)) & (t != ignore_index)
    if t.size and bool(bad.any()):
        value = int(t[bad][0])
        raise IndexError(
            f"{op}: target value {value} is out of range for {V} classes [0, {V}) "
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


def _check_soft(op: str, logits, target, label_smoothing: float) -> None:
    check_float(op, "logits", logits)
    check_float(op, "target", target)
    if logits.ndim == 0 or target.shape != logits.shape:
        raise ValueError(
            f"{op}: target must have the logits' shape [..., V], got target "
            f"{tuple(target.shape)} and logits {tuple(logits.shape)}"
        )
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing}")


def cross_entropy_soft_forward(
    logits: Array, target: Array, label_smoothing: float = 0.0
) -> tuple[Array, Array]:
    """Per-row cross-entropy of logits [..., V] against class probabilities target [..., V].

    loss = lse sum(q) - <q, x> with q = (1 - label_smoothing) target + label_smoothing / V.
    Returns (loss, lse), both of the leading shape [...].
    """
    op = "cross_entropy_soft_forward"
    _check_soft(op, logits, target, label_smoothing)
    t = target.astype(logits.dtype, copy=False)
    xp = get_array_module(logits)
    loss, lse = dispatch.run(
        op, xp, logits.dtype, _CE_SOFT_FORWARD, as_rows(logits), as_rows(t),
        float(label_smoothing),
    )  # fmt: skip
    return loss.reshape(logits.shape[:-1]), lse.reshape(logits.shape[:-1])


def cross_entropy_soft_backward(
    dloss: Array | float,
    logits: Array,
    target: Array,
    lse: Array,
    label_smoothing: float = 0.0,
    target_grad: bool = False,
) -> tuple[Array, Array | None]:
    """(dlogits, dtarget) [..., V] of the soft-target loss; dtarget is None unless asked.

    dlogits = (softmax(logits) sum(q) - q) dloss[..., None];
    dtarget = dloss[..., None] (1 - label_smoothing) (lse[..., None] - logits).
    """
    op = "cross_entropy_soft_backward"
    _check_soft(op, logits, target, label_smoothing)
    t = target.astype(logits.dtype, copy=False)
    xp = get_array_module(logits)
    lead = logits.shape[:-1]
    R = math.prod(lead)
    dl = xp.broadcast_to(xp.asarray(dloss, dtype=logits.dtype), lead).reshape(R)
    dlogits, dtarget = dispatch.run(
        op, xp, logits.dtype, _CE_SOFT_BACKWARD, dl, as_rows(logits), as_rows(t),
        lse.reshape(R), float(label_smoothing), bool(target_grad),
    )  # fmt: skip
    dtarget = None if dtarget is None else dtarget.reshape(logits.shape).astype(target.dtype)
    return dlogits.reshape(logits.shape), dtarget
