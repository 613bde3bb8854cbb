"""Softmax and log-softmax along one dim, each one fused Function.

Forward (m = max_j x_j subtracted first, so large logits never overflow):

    y_i = exp(x_i - m) / sum_j exp(x_j - m)                  (softmax)
    z_i = x_i - m - log sum_j exp(x_j - m)                   (log_softmax)

Backward, from the Jacobians dy_i/dx_k = y_i (delta_ik - y_k) and dz_i/dx_k = delta_ik - y_k:

    dx = y * (dy - sum_j dy_j y_j)                           (softmax; saves y)
    dx = dz - exp(z) * sum_j dz_j                            (log_softmax; saves z)

A row that is entirely -inf has no probability mass: softmax returns zeros there (and a zero
gradient) instead of NaN, matching what fully masked attention rows need.
"""

from __future__ import annotations

from tinyllm.backend import get_array_module
from tinyllm.function import Function
from tinyllm.functional._util import normalize_dim

__all__ = ["log_softmax", "softmax"]


def softmax_array(x, dim: int):
    """The softmax of an array along ``dim`` (all -inf rows give zeros)."""
    xp = get_array_module(x)
    m = x.max(axis=dim, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0)
    e = xp.exp(x - m)
    s = e.sum(axis=dim, keepdims=True)
    return e / xp.where(s == 0, 1, s)


def log_softmax_array(x, dim: int):
    """The log-softmax of an array along ``dim``."""
    xp = get_array_module(x)
    m = x.max(axis=dim, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0)
    shifted = x - m
    return shifted - xp.log(xp.exp(shifted).sum(axis=dim, keepdims=True))


class Softmax(Function):
    @staticmethod
    def forward(ctx, x, dim):
        y = softmax_array(x, dim)
        ctx.save_for_backward(y)  # y: same shape as x
        ctx.dim = dim
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        # y = softmax(x)  =>  dx = y * (dy - <dy, y>)
        return y * (dy - (dy * y).sum(axis=ctx.dim, keepdims=True)), None


class LogSoftmax(Function):
    @staticmethod
    def forward(ctx, x, dim):
        z = log_softmax_array(x, dim)
        ctx.save_for_backward(z)  # z: same shape as x
        ctx.dim = dim
        return z

    @staticmethod
    def backward(ctx, dz):
        (z,) = ctx.saved_tensors
        xp = get_array_module(z)
        # z = x - logsumexp(x)  =>  dx = dz - softmax(x) * sum(dz)
        return dz - xp.exp(z) * dz.sum(axis=ctx.dim, keepdims=True), None


def softmax(input, dim: int = -1, dtype=None):
    """exp(x) / sum(exp(x)) along ``dim``.

    >>> import tinyllm, tinyllm.functional as F
    >>> F.softmax(tinyllm.tensor([0.0, 0.0]), dim=-1)
    tensor([0.5, 0.5])
    """
    if dtype is not None:
        input = input.to(dtype)
    return Softmax.apply(input, normalize_dim(dim, input.ndim, "softmax"))


def log_softmax(input, dim: int = -1, dtype=None):
    """log(softmax(x)) along ``dim``, computed without forming softmax."""
    if dtype is not None:
        input = input.to(dtype)
    return LogSoftmax.apply(input, normalize_dim(dim, input.ndim, "log_softmax"))
