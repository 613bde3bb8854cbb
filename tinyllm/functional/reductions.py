"""Reductions over ``dim`` (None: all), with ``keepdim`` as in PyTorch.

    y = sum_d x          dx = expand(dy)
    y = mean_d x         dx = expand(dy) / N
    y = var_d x          dx = expand(dy) * 2 (x - mean) / (N - correction)
    y = max_d x (dim)    dx = dy scattered to the returned index
    y = amax_d x         dx = expand(dy) * [x == y] / (number of ties)
    y = logsumexp_d x    dx = expand(dy) * exp(x - y)          (a softmax)

``expand`` re-inserts the reduced axes (when not ``keepdim``) and broadcasts to x's shape.
"""

from __future__ import annotations

import builtins
import math

from tinyllm.backend import get_array_module
from tinyllm.function import Function
from tinyllm.functional._util import normalize_dim, normalize_dims
from tinyllm.tensor import MinMax, Tensor

__all__ = ["amax", "amin", "argmax", "argmin", "logsumexp", "max", "mean", "min", "sum", "var"]


def _expand_back(dy, shape: tuple, axes: tuple, keepdim: bool):
    """Broadcast a reduced gradient back to ``shape``."""
    xp = get_array_module(dy)
    if not keepdim and axes:
        dy = xp.expand_dims(dy, axes)
    return xp.broadcast_to(dy, shape)


class Sum(Function):
    @staticmethod
    def forward(ctx, x, axes, keepdim):
        ctx.shape, ctx.axes, ctx.keepdim = x.shape, axes, keepdim
        xp = get_array_module(x)
        return xp.asarray(x.sum(axis=axes, keepdims=keepdim))

    @staticmethod
    def backward(ctx, dy):
        return _expand_back(dy, ctx.shape, ctx.axes, ctx.keepdim), None, None


class Mean(Function):
    @staticmethod
    def forward(ctx, x, axes, keepdim):
        ctx.shape, ctx.axes, ctx.keepdim = x.shape, axes, keepdim
        ctx.count = math.prod(x.shape[a] for a in axes)
        xp = get_array_module(x)
        return xp.asarray(x.mean(axis=axes, keepdims=keepdim))

    @staticmethod
    def backward(ctx, dy):
        dx = _expand_back(dy, ctx.shape, ctx.axes, ctx.keepdim) / ctx.count
        return dx.astype(dy.dtype, copy=False), None, None


class Var(Function):
    @staticmethod
    def forward(ctx, x, axes, keepdim, correction):
        xp = get_array_module(x)
        centered = x - x.mean(axis=axes, keepdims=True)
        count = math.prod(x.shape[a] for a in axes)
        ctx.save_for_backward(centered)
        ctx.axes, ctx.keepdim, ctx.denominator = axes, keepdim, builtins.max(count - correction, 0)
        return xp.asarray((centered * centered).sum(axis=axes, keepdims=keepdim) / ctx.denominator)

    @staticmethod
    def backward(ctx, dy):
        (centered,) = ctx.saved_tensors
        dy = _expand_back(dy, centered.shape, ctx.axes, ctx.keepdim)
        return (dy * centered * (2 / ctx.denominator)).astype(dy.dtype), None, None, None


class MaxMinDim(Function):
    """max or min along one dim, returning values and indices (gradient to the index)."""

    @staticmethod
    def forward(ctx, x, dim, keepdim, largest):
        xp = get_array_module(x)
        idx = (xp.argmax if largest else xp.argmin)(x, axis=dim)
        idx = xp.expand_dims(idx, dim)
        values = xp.take_along_axis(x, idx, axis=dim)
        if not keepdim:
            values, idx = values.squeeze(dim), idx.squeeze(dim)
        ctx.shape, ctx.dim, ctx.keepdim, ctx.idx = x.shape, dim, keepdim, idx
        idx = idx.astype(xp.int64)
        ctx.mark_non_differentiable(idx)
        return values, idx

    @staticmethod
    def backward(ctx, dvalues, dindices):
        xp = get_array_module(dvalues)
        idx = ctx.idx if ctx.keepdim else xp.expand_dims(ctx.idx, ctx.dim)
        dv = dvalues if ctx.keepdim else xp.expand_dims(dvalues, ctx.dim)
        dx = xp.zeros(ctx.shape, dtype=dvalues.dtype)
        xp.put_along_axis(dx, idx, dv, axis=ctx.dim)
        return dx, None, None, None


class AMaxMin(Function):
    """max or min over dims (values only); tied elements share the gradient equally."""

    @staticmethod
    def forward(ctx, x, axes, keepdim, largest):
        xp = get_array_module(x)
        y = (x.max if largest else x.min)(axis=axes, keepdims=True)
        ties = x == y
        ctx.save_for_backward(ties)
        ctx.axes, ctx.keepdim = axes, keepdim
        return xp.asarray(y if keepdim else y.squeeze(axis=axes))

    @staticmethod
    def backward(ctx, dy):
        (ties,) = ctx.saved_tensors
        dy = _expand_back(dy, ties.shape, ctx.axes, ctx.keepdim)
        share = ties / ties.sum(axis=ctx.axes, keepdims=True)
        return (dy * share).astype(dy.dtype), None, None, None


class LogSumExp(Function):
    """y = log Σ e^x = m + log Σ e^(x − m), m the maximum; ∂y/∂x = e^(x − y) = softmax(x),
    kept from the forward when a gradient is wanted (an all −inf row gets 0, not NaN)."""

    @staticmethod
    def forward(ctx, x, axes, keepdim):
        xp = get_array_module(x)
        m = x.max(axis=axes, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)  # all -inf rows: log(0) = -inf, no NaN
        e = xp.exp(x - m)
        s = e.sum(axis=axes, keepdims=True)
        y = xp.log(s) + m
        if ctx.needs_input_grad[0]:
            e /= xp.where(s > 0, s, 1)  # the softmax, in place of e
            ctx.save_for_backward(e)
            ctx.axes, ctx.keepdim = axes, keepdim
        return y if keepdim else y.squeeze(axis=axes)

    @staticmethod
    def backward(ctx, dy):
        (softmax,) = ctx.saved_tensors
        return _expand_back(dy, softmax.shape, ctx.axes, ctx.keepdim) * softmax, None, None


def sum(input, dim=None, keepdim: bool = False):
    """Sum over ``dim`` (an int, a tuple, or None for all)."""
    return Sum.apply(input, normalize_dims(dim, input.ndim, "sum"), keepdim)


def mean(input, dim=None, keepdim: bool = False):
    """Mean over ``dim``."""
    if not input.is_floating_point():
        raise TypeError(f"mean: expected a floating-point tensor, got {input.dtype}")
    return Mean.apply(input, normalize_dims(dim, input.ndim, "mean"), keepdim)


def var(input, dim=None, keepdim: bool = False, *, correction: int = 1, unbiased=None):
    """Variance over ``dim`` with Bessel's ``correction`` (PyTorch's default 1)."""
    if unbiased is not None:
        correction = 1 if unbiased else 0
    return Var.apply(input, normalize_dims(dim, input.ndim, "var"), keepdim, correction)


def _max_min(input, dim, keepdim, largest: bool, name: str):
    if dim is None:
        return AMaxMin.apply(input, normalize_dims(None, input.ndim, name), False, largest)
    if input.ndim == 0:
        return MinMax(input, Tensor(get_array_module(input.data).zeros((), dtype="int64")))
    values, indices = MaxMinDim.apply(input, normalize_dim(dim, input.ndim, name), keepdim, largest)
    return MinMax(values, indices)


def max(input, dim=None, keepdim: bool = False):
    """The maximum; with ``dim``, a named tuple ``(values, indices)`` as in PyTorch."""
    if not isinstance(input, Tensor):
        raise TypeError(f"max: expected a Tensor, got {type(input).__name__}")
    return _max_min(input, dim, keepdim, True, "max")


def min(input, dim=None, keepdim: bool = False):
    """The minimum; with ``dim``, a named tuple ``(values, indices)`` as in PyTorch."""
    return _max_min(input, dim, keepdim, False, "min")


def amax(input, dim=None, keepdim: bool = False):
    """The maximum over ``dim``; ties share the gradient equally."""
    return AMaxMin.apply(input, normalize_dims(dim, input.ndim, "amax"), keepdim, True)


def amin(input, dim=None, keepdim: bool = False):
    """The minimum over ``dim``; ties share the gradient equally."""
    return AMaxMin.apply(input, normalize_dims(dim, input.ndim, "amin"), keepdim, False)


def logsumexp(input, dim, keepdim: bool = False):
    """log(sum(exp(x))) over ``dim``, computed stably (max subtracted first)."""
    return LogSumExp.apply(input, normalize_dims(dim, input.ndim, "logsumexp"), keepdim)


def argmax(input, dim=None, keepdim: bool = False):
    """Index of the maximum (over the flattened tensor when ``dim`` is None); int64."""
    xp = get_array_module(input.data)
    if dim is None:
        return Tensor(xp.asarray(xp.argmax(input.data), dtype=xp.int64))
    d = normalize_dim(dim, input.ndim, "argmax")
    out = xp.argmax(input.data, axis=d)
    return Tensor((xp.expand_dims(out, d) if keepdim else out).astype(xp.int64))


def argmin(input, dim=None, keepdim: bool = False):
    """Index of the minimum (over the flattened tensor when ``dim`` is None); int64."""
    xp = get_array_module(input.data)
    if dim is None:
        return Tensor(xp.asarray(xp.argmin(input.data), dtype=xp.int64))
    d = normalize_dim(dim, input.ndim, "argmin")
    out = xp.argmin(input.data, axis=d)
    return Tensor((xp.expand_dims(out, d) if keepdim else out).astype(xp.int64))
