"""layer_norm and rms_norm over the last axis, optionally fused with the residual add.

For each row h of C numbers (h = x, or h = x + residual when the residual is fused):

    layer_norm:  mean = <h>,  var = <(h - mean)^2>,  rstd = 1 / sqrt(var + eps)
                 y = (h - mean) rstd * weight + bias
    rms_norm:    rstd = 1 / sqrt(<h^2> + eps),        y = h rstd * weight

(<.> is the mean over the row; var is biased, as in PyTorch). The forward saves only the
statistics, one number per row: mean and rstd (layer norm) or rstd (rms norm).

Backward, with xhat = (h - mean) rstd recomputed and g = dy * weight:

    layer_norm:  dh = rstd (g - <g> - xhat <g xhat>)
    rms_norm:    dh = rstd (g - xhat <g xhat>)
    dweight = sum over rows of dy * xhat,     dbias = sum over rows of dy

from d xhat_i / d h_k = rstd (delta_ik - 1/C - xhat_i xhat_k / C) (no 1/C term without the
mean). With the fused residual, the sum h is also returned (it is the next residual
stream), and the backward adds ``dsummed``, the gradient that reaches h from its other
consumers: dx = dresidual = dh + dsummed.

Shapes: x, residual, y, dy, dx, summed, dsummed [..., C]; weight, bias, dweight, dbias [C];
mean, rstd [...] (x's leading shape). Tiers: reference, numba (``norms_numba.py``), cuda
(``norms.cu``).
"""

from __future__ import annotations

import functools

import numpy as np

from tinyllm.backend import get_array_module
from tinyllm.kernels import dispatch
from tinyllm.kernels.arrays import (
    Array,
    as_rows,
    check_float,
    compute_dtype,
    contiguous,
    upcast,
)
from tinyllm.kernels.cuda_loader import function, scalar, with_cuda

__all__ = ["layer_norm_backward", "layer_norm_forward", "rms_norm_backward", "rms_norm_forward"]

_CU = "norms.cu"
_ROW_THREADS = 256


@functools.cache
def _numba():
    from tinyllm.kernels import norms_numba

    return norms_numba


def _n_chunks(R: int) -> int:
    """Row chunks of the dweight/dbias sums: depends on R only (reproducible results)."""
    return max(1, min(R, 64))


# ---------------------------------------------------------------- reference bodies
def _reference_forward(x, residual, weight, bias, eps, center):
    xp = get_array_module(x)
    h = upcast(x) if residual is None else upcast(x) + upcast(residual)  # [R, C]
    mean = h.mean(axis=1) if center else xp.zeros(h.shape[0], h.dtype)  # [R]
    centered = h - mean[:, None]
    rstd = 1 / xp.sqrt((centered * centered).mean(axis=1) + eps)  # [R]
    y = centered * rstd[:, None]
    if weight is not None:
        y = y * upcast(weight)
    if bias is not None:
        y = y + upcast(bias)
    summed = None if residual is None else h.astype(x.dtype, copy=False)
    return y.astype(x.dtype, copy=False), mean, rstd, summed


def _reference_backward(dy, x, mean, rstd, weight, dsummed, center):
    h, dyw = upcast(x), upcast(dy)
    rs = upcast(rstd)[:, None]
    xhat = (h - upcast(mean)[:, None]) * rs  # [R, C]
    g = dyw * upcast(weight) if weight is not None else dyw
    dx = g - xhat * (g * xhat).mean(axis=1, keepdims=True)
    if center:
        dx = dx - g.mean(axis=1, keepdims=True)
    dx = rs * dx
    if dsummed is not None:
        dx = dx + upcast(dsummed)
    dweight = (dyw * xhat).sum(axis=0)
    dbias = dyw.sum(axis=0)
    dt = x.dtype
    return dx.astype(dt, copy=False), dweight.astype(dt, copy=False), dbias.astype(dt, copy=False)


# ---------------------------------------------------------------- numba and cuda bodies
def _params(xp, x, weight, bias):
    C = x.shape[1]
    w = xp.ones(C, x.dtype) if weight is None else contiguous(weight.astype(x.dtype, copy=False))
    b = xp.zeros(C, x.dtype) if bias is None else contiguous(bias.astype(x.dtype, copy=False))
    return w, b


def _numba_forward(x, residual, weight, bias, eps, center):
    x = contiguous(x)
    R, _ = x.shape
    w, b = _params(np, x, weight, bias)
    y = np.empty_like(x)
    has_res = residual is not None
    res = contiguous(residual.astype(x.dtype, copy=False)) if has_res else x
    summed = np.empty_like(x) if has_res else y  # y stands in, untouched
    mean, rstd = np.empty(R, x.dtype), np.empty(R, x.dtype)
    eps_t = x.dtype.type(eps)
    dispatch.numba_for_work(_numba().norm_rows, x.size)(
        x, res, w, b, eps_t, center, has_res, y, summed, mean, rstd
    )
    return y, mean, rstd, summed if has_res else None


def _numba_backward(dy, x, mean, rstd, weight, dsummed, center):
    x = contiguous(x)
    dt = x.dtype
    R, C = x.shape
    dy = contiguous(dy.astype(dt, copy=False))
    w, _ = _params(np, x, weight, None)
    has_ds = dsummed is not None
    ds = contiguous(dsummed.astype(dt, copy=False)) if has_ds else dy
    mean = contiguous(mean.astype(dt, copy=False))
    rstd = contiguous(rstd.astype(dt, copy=False))
    dx = np.empty_like(x)
    n = _n_chunks(R)
    parts_w, parts_b = np.empty((n, C), dt), np.empty((n, C), dt)  # [n_chunks, C]
    dweight, dbias = np.empty(C, dt), np.empty(C, dt)
    dispatch.numba_for_work(_numba().norm_rows_backward, x.size)(
        dy, x, mean, rstd, w, ds, center, has_ds, dx, parts_w, parts_b, dweight, dbias
    )
    return dx, dweight, dbias


def _cuda_forward(x, residual, weight, bias, eps, center):
    import cupy

    x = cupy.ascontiguousarray(x)
    R, C = x.shape
    w, b = _params(cupy, x, weight, bias)
    y = cupy.empty_like(x)
    has_res = residual is not None
    res = cupy.ascontiguousarray(residual.astype(x.dtype, copy=False)) if has_res else x
    summed = cupy.empty_like(x) if has_res else y
    mean, rstd = cupy.empty(R, x.dtype), cupy.empty(R, x.dtype)
    if R:
        kernel = function(_CU, "norm_forward", x.dtype)
        args = (x, res, w, b, y, summed, mean, rstd, np.int32(C), scalar(eps, x.dtype))
        kernel((R,), (_ROW_THREADS,), args + (np.int32(center), np.int32(has_res)))
    return y, mean, rstd, summed if has_res else None


def _cuda_backward(dy, x, mean, rstd, weight, dsummed, center):
    import cupy

    x = cupy.ascontiguousarray(x)
    dt = x.dtype
    R, C = x.shape
    dy = cupy.ascontiguousarray(dy.astype(dt, copy=False))
    w, _ = _params(cupy, x, weight, None)
    has_ds = dsummed is not None
    ds = cupy.ascontiguousarray(dsummed.astype(dt, copy=False)) if has_ds else dy
    mean = cupy.ascontiguousarray(mean.astype(dt, copy=False))
    rstd = cupy.ascontiguousarray(rstd.astype(dt, copy=False))
    dx = cupy.empty_like(x)
    n = max(1, min(R, 256))
    parts_w, parts_b = cupy.empty((n, C), dt), cupy.empty((n, C), dt)
    if R:
        kernel = function(_CU, "norm_backward", dt)
        args = (dy, x, mean, rstd, w, ds, dx, np.int32(C), np.int32(center), np.int32(has_ds))
        kernel((R,), (_ROW_THREADS,), args)
        grads = function(_CU, "norm_param_grad", dt)
        grid = ((C + 31) // 32, n)
        grads(grid, (32, 8), (dy, x, mean, rstd, parts_w, parts_b, np.int64(R), np.int32(C)))
    else:
        parts_w.fill(0)
        parts_b.fill(0)
    return dx, parts_w.sum(axis=0), parts_b.sum(axis=0)


_FORWARD = dispatch.declare(
    with_cuda(
        {"reference": _reference_forward, "numba": _numba_forward, "cuda": _cuda_forward}, _CU
    ),
    "layer_norm_forward",
    "rms_norm_forward",
)
_BACKWARD = dispatch.declare(
    with_cuda(
        {"reference": _reference_backward, "numba": _numba_backward, "cuda": _cuda_backward},
        _CU,
    ),
    "layer_norm_backward",
    "rms_norm_backward",
)


# ---------------------------------------------------------------- public functions
def _check(op: str, x, weight, bias, residual):
    check_float(op, "x", x)
    if x.ndim == 0:
        raise ValueError(f"{op}: x must be [..., C], got a 0-d array")
    C = x.shape[-1]
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(p.shape) != (C,):
            raise ValueError(f"{op}: {name} must have shape ({C},), got {tuple(p.shape)}")
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"{op}: residual {tuple(residual.shape)} must match x {tuple(x.shape)}")


def _forward(op, x, weight, bias, eps, residual, center):
    _check(op, x, weight, bias, residual)
    xp = get_array_module(x)
    res = None if residual is None else as_rows(residual)
    y, mean, rstd, summed = dispatch.run(
        op, xp, x.dtype, _FORWARD, as_rows(x), res, weight, bias, float(eps), center
    )
    lead = x.shape[:-1]
    stats_dt = compute_dtype(x.dtype)
    mean = mean.astype(stats_dt, copy=False).reshape(lead)
    rstd = rstd.astype(stats_dt, copy=False).reshape(lead)
    return y.reshape(x.shape), mean, rstd, None if summed is None else summed.reshape(x.shape)


def _backward(op, dy, x, mean, rstd, weight, dsummed, center):
    _check(op, x, weight, None, None)
    if dy.shape != x.shape:
        raise ValueError(f"{op}: dy {tuple(dy.shape)} must match x {tuple(x.shape)}")
    if dsummed is not None and dsummed.shape != x.shape:
        raise ValueError(f"{op}: dsummed {tuple(dsummed.shape)} must match x {tuple(x.shape)}")
    xp = get_array_module(x)
    R = as_rows(x).shape[0]
    ds = None if dsummed is None else as_rows(dsummed)
    dx, dweight, dbias = dispatch.run(
        op, xp, x.dtype, _BACKWARD, as_rows(dy), as_rows(x), mean.reshape(R), rstd.reshape(R),
        weight, ds, center,
    )  # fmt: skip
    return dx.reshape(x.shape), dweight, dbias


def layer_norm_forward(
    x: Array,
    weight: Array | None = None,
    bias: Array | None = None,
    eps: float = 1e-5,
    residual: Array | None = None,
) -> tuple[Array, ...]:
    """Layer norm of x [..., C] over its last axis (after h = x + residual, if given).

    Returns (y, mean, rstd) with mean, rstd of shape [...], or (y, mean, rstd, summed)
    when ``residual`` is given (summed = x + residual, the normalized input).
    """
    y, mean, rstd, summed = _forward("layer_norm_forward", x, weight, bias, eps, residual, True)
    return (y, mean, rstd) if residual is None else (y, mean, rstd, summed)


def layer_norm_backward(
    dy: Array,
    x: Array,
    mean: Array,
    rstd: Array,
    weight: Array | None = None,
    dsummed: Array | None = None,
) -> tuple[Array, Array, Array]:
    """(dx, dweight, dbias) of a layer norm, from dy and the forward's input and statistics.

    ``x`` is the normalized input (the forward's ``summed`` when a residual was fused);
    ``dsummed`` (optional) is the gradient reaching that sum from its other consumers and
    is added to dx. dweight = sum(dy * xhat) and dbias = sum(dy) over rows, shape [C],
    are returned whether or not the forward had a weight and a bias.
    """
    return _backward("layer_norm_backward", dy, x, mean, rstd, weight, dsummed, True)


def rms_norm_forward(
    x: Array, weight: Array | None = None, eps: float = 1e-6, residual: Array | None = None
) -> tuple[Array, ...]:
    """RMS norm of x [..., C] over its last axis (after h = x + residual, if given).

    Returns (y, rstd) with rstd of shape [...], or (y, rstd, summed) with a residual.
    """
    y, _, rstd, summed = _forward("rms_norm_forward", x, weight, None, eps, residual, False)
    return (y, rstd) if residual is None else (y, rstd, summed)


def rms_norm_backward(
    dy: Array, x: Array, rstd: Array, weight: Array | None = None, dsummed: Array | None = None
) -> tuple[Array, Array]:
    """(dx, dweight) of an RMS norm, from dy, the normalized input x and rstd [...]."""
    xp = get_array_module(x)
    zeros = xp.zeros(rstd.shape, rstd.dtype)  # the mean of an RMS norm is 0
    dx, dweight, _ = _backward("rms_norm_backward", dy, x, zeros, rstd, weight, dsummed, False)
    return dx, dweight
