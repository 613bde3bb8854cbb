"""Softmax and log-softmax along one dim, each one fused Function.

Forward (m = max_j x_j subtracted first, so large logits never overflow):

    y_i = exp(x_i - m) / sum_j exp(x_j - m)                  (softmax)
    z_i = x_i - m - log sum_j exp(x_j - m)                   (log_softmax)

Backward, from the Jacobians dy_i/dx_k = y_i (delta_ik - y_k) and dz_i/dx_k = delta_ik - y_k:

    dx = y * (dy - sum_j dy_j y_j)                           (softmax; saves y)
    dx = dz - exp(z) * sum_j dz_j                            (log_softmax; saves z)

A row that is entirely -inf has no probability mass: softmax is undefined there and returns
NaN, as PyTorch's does (attention handles fully masked rows itself). The arithmetic runs
in ``tinyllm.kernels`` (``kernels/softmax.py`` holds the readable reference, plus Numba and
CUDA tiers); a ``dim`` other than the last is moved to the last axis first.
"""

from __future__ import annotations

from tinyllm import kernels
from tinyllm.function import Function
from tinyllm.functional._util import from_last, normalize_dim, to_last

__all__ = ["log_softmax", "softmax"]


class Softmax(Function):
    """Runs ``tinyllm.kernels.softmax_forward/backward`` (reference, Numba or CUDA)."""

    @staticmethod
    def forward(ctx, x, dim):
        y = from_last(kernels.softmax_forward(to_last(x, dim)), dim)
        ctx.save_for_backward(y)  # y: same shape as x
        ctx.dim = dim
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        d = ctx.dim
        # y = softmax(x)  =>  dx = y * (dy - <dy, y>)
        return from_last(kernels.softmax_backward(to_last(dy, d), to_last(y, d)), d), None


class LogSoftmax(Function):
    """Runs ``tinyllm.kernels.log_softmax_forward/backward`` (reference, Numba or CUDA)."""

    @staticmethod
    def forward(ctx, x, dim):
        z = from_last(kernels.log_softmax_forward(to_last(x, dim)), dim)
        ctx.save_for_backward(z)  # z: same shape as x
        ctx.dim = dim
        return z

    @staticmethod
    def backward(ctx, dz):
        (z,) = ctx.saved_tensors
        d = ctx.dim
        # z = x - logsumexp(x)  =>  dx = dz - softmax(x) * sum(dz)
        return from_last(kernels.log_softmax_backward(to_last(dz, d), to_last(z, d)), d), None


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
