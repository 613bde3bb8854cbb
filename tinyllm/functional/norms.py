"""Normalization layers: layer_norm, rms_norm and group_norm, each one fused Function.

Each normalizes rows x of D numbers (the trailing ``normalized_shape`` for layer_norm and
rms_norm; one group of C/G channels times all spatial positions for group_norm), then applies
an optional affine map with weight w and bias b. Forward, per row:

    mu   = (1/D) sum_i x_i                                  (layer_norm, group_norm)
    var  = (1/D) sum_i (x_i - mu)^2                         (biased, as PyTorch)
    rstd = 1 / sqrt(var + eps)
    xhat = (x - mu) rstd
    y    = xhat * w + b

    ms   = (1/D) sum_i x_i^2                                (rms_norm: no centering, no bias)
    rstd = 1 / sqrt(ms + eps);   xhat = x rstd;   y = xhat * w

Backward, with g = dy * w (the gradient arriving at xhat) and <.> the mean over the row:

    dx = rstd (g - <g> - xhat <g xhat>)                     (layer_norm, group_norm)
    dx = rstd (g - xhat <g xhat>)                           (rms_norm)
    dw = sum over rows of dy * xhat;   db = sum over rows of dy

(from dxhat_i/dx_k = rstd (delta_ik - 1/D - xhat_i xhat_k / D), and without the 1/D term
when the mean is not subtracted). Only x and the per-row statistics (mu, rstd: one number
each per row) are saved; xhat is recomputed in backward. Statistics are computed in float32
at least (float16 and bfloat16 inputs are upcast, the result cast back). layer_norm and
rms_norm run ``tinyllm.kernels`` (reference, Numba and CUDA tiers, chosen by device; see
``kernels/norms.py`` for the readable reference); group_norm is written here.
"""

from __future__ import annotations

import math

import numpy as np

from tinyllm import kernels
from tinyllm.backend import get_array_module
from tinyllm.function import Function
from tinyllm.functional._util import check_float
from tinyllm.kernels.arrays import compute_dtype

__all__ = ["group_norm", "layer_norm", "rms_norm"]


def _cast(array, dtype):
    return array if array.dtype == dtype else array.astype(dtype)


def _rows(x, normalized: tuple):
    """x [..., *S] viewed as rows [R, D] with D = prod(S)."""
    return x.reshape(-1, math.prod(normalized))


def _flat(param):
    return None if param is None else param.reshape(-1)


class LayerNorm(Function):
    """Runs ``tinyllm.kernels.layer_norm_forward/backward`` (reference, Numba or CUDA)."""

    @staticmethod
    def forward(ctx, x, weight, bias, normalized_ndim, eps):
        # x: [..., *S] viewed as rows [R, D], D = prod(S); weight, bias: S or None
        normalized = x.shape[x.ndim - normalized_ndim :]
        y, mean, rstd = kernels.layer_norm_forward(
            _rows(x, normalized), _flat(weight), _flat(bias), eps
        )
        ctx.save_for_backward(x, mean, rstd, weight)  # x: input; mean, rstd: [R]
        ctx.normalized = normalized
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x, mean, rstd, weight = ctx.saved_tensors
        S = ctx.normalized
        # xhat = (x - mu) rstd;  y = xhat w + b
        #   =>  dx = rstd (g - <g> - xhat <g xhat>), g = dy w;  dw = sum dy xhat;  db = sum dy
        dx, dw, db = kernels.layer_norm_backward(
            _rows(dy, S), _rows(x, S), mean, rstd, _flat(weight)
        )
        needs = ctx.needs_input_grad
        return (
            dx.reshape(x.shape) if needs[0] else None,
            dw.reshape(S) if weight is not None and needs[1] else None,
            db.reshape(S) if needs[2] else None,
            None,
            None,
        )


class RMSNorm(Function):
    """Runs ``tinyllm.kernels.rms_norm_forward/backward`` (reference, Numba or CUDA)."""

    @staticmethod
    def forward(ctx, x, weight, normalized_ndim, eps):
        # x: [..., *S] viewed as rows [R, D]; weight: S or None
        normalized = x.shape[x.ndim - normalized_ndim :]
        y, rstd = kernels.rms_norm_forward(_rows(x, normalized), _flat(weight), eps)
        ctx.save_for_backward(x, rstd, weight)  # x: input; rstd: [R]
        ctx.normalized = normalized
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x, rstd, weight = ctx.saved_tensors
        S = ctx.normalized
        # xhat = x rstd;  y = xhat w  =>  dx = rstd (g - xhat <g xhat>), g = dy w;  dw = sum dy xhat
        dx, dw = kernels.rms_norm_backward(_rows(dy, S), _rows(x, S), rstd, _flat(weight))
        needs = ctx.needs_input_grad
        return (
            dx.reshape(x.shape) if needs[0] else None,
            dw.reshape(S) if weight is not None and needs[1] else None,
            None,
            None,
        )


class GroupNorm(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, num_groups, eps):
        # x: [N, C, *spatial]; rows are [N, G, M] with M = (C / G) * prod(spatial)
        # weight, bias: [C] or None, one value per channel
        acc = compute_dtype(x.dtype)
        N, C = x.shape[0], x.shape[1]
        xg = _cast(x, acc).reshape(N, num_groups, -1)  # [N, G, M]
        mean = xg.mean(axis=2, keepdims=True)  # [N, G, 1]
        centered = xg - mean
        var = (centered * centered).mean(axis=2, keepdims=True)  # [N, G, 1]
        rstd = 1 / get_array_module(x).sqrt(var + eps)  # [N, G, 1]
        y = (centered * rstd).reshape(x.shape)
        channel = (C,) + (1,) * (x.ndim - 2)  # broadcasts a [C] vector over [N, C, *]
        if weight is not None:
            y = y * weight.reshape(channel)
        if bias is not None:
            y = y + bias.reshape(channel)
        ctx.save_for_backward(x, mean, rstd, weight)  # x: input; mean, rstd: [N, G, 1]
        ctx.channel = channel
        return _cast(y, x.dtype)

    @staticmethod
    def backward(ctx, dy):
        x, mean, rstd, weight = ctx.saved_tensors
        acc = mean.dtype
        N, G = mean.shape[0], mean.shape[1]
        spatial_axes = (0,) + tuple(range(2, x.ndim))  # the axes dw and db sum over
        # xhat = (x - mu) rstd, per group
        xhat = (_cast(x, acc).reshape(N, G, -1) - mean) * rstd  # [N, G, M]
        dya = _cast(dy, acc)  # [N, C, *]
        # y = xhat * w[c] + b[c]  =>  dxhat = dy * w[c]
        g = dya * weight.reshape(ctx.channel) if weight is not None else dya
        g = g.reshape(N, G, -1)  # [N, G, M]
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            # xhat = (x - mu) rstd  =>  dx = rstd (g - <g> - xhat <g xhat>), per group
            dx = rstd * (
                g - g.mean(axis=2, keepdims=True) - xhat * (g * xhat).mean(axis=2, keepdims=True)
            )
            dx = _cast(dx.reshape(x.shape), x.dtype)
        if weight is not None and ctx.needs_input_grad[1]:
            dw = (dya * xhat.reshape(x.shape)).sum(axis=spatial_axes)
            dw = _cast(dw, weight.dtype)
        if ctx.needs_input_grad[2]:
            db = _cast(dya.sum(axis=spatial_axes), dy.dtype)
        return dx, dw, db, None, None


# ---------------------------------------------------------------- argument checks


def _normalized_shape(op: str, input, normalized_shape) -> tuple[int, ...]:
    """``normalized_shape`` as a tuple, checked against the input's trailing dims."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
    shape = tuple(int(n) for n in shape)
    if not shape:
        raise ValueError(f"{op}: normalized_shape must name at least one dim, got ()")
    if input.ndim < len(shape) or tuple(input.shape[input.ndim - len(shape) :]) != shape:
        raise ValueError(
            f"{op}: normalized_shape {shape} does not match the trailing dims of the input "
            f"of shape {tuple(input.shape)} (expected an input of shape [*, "
            f"{', '.join(map(str, shape))}])"
        )
    return shape


def _check_param(op: str, name: str, param, shape: tuple, input) -> None:
    """An affine parameter must have exactly ``shape`` and the input's dtype."""
    if param is None:
        return
    if tuple(param.shape) != tuple(shape):
        raise ValueError(
            f"{op}: {name} of shape {tuple(param.shape)} does not match the expected shape "
            f"{tuple(shape)} (input of shape {tuple(input.shape)})"
        )
    if param.dtype != input.dtype:
        raise TypeError(f"{op}: {name} has dtype {param.dtype} but the input has {input.dtype}")


# ---------------------------------------------------------------- functional wrappers


def layer_norm(input, normalized_shape, weight=None, bias=None, eps: float = 1e-5):
    """Normalize over the trailing ``normalized_shape`` dims, then ``* weight + bias``.

    ``(x - mean) / sqrt(var + eps)`` with the biased variance, as PyTorch.

    >>> import tinyllm, tinyllm.functional as F
    >>> F.layer_norm(tinyllm.tensor([[1.0, 3.0]]), (2,))
    tensor([[-1.,  1.]])
    """
    check_float("layer_norm", input)
    shape = _normalized_shape("layer_norm", input, normalized_shape)
    _check_param("layer_norm", "weight", weight, shape, input)
    _check_param("layer_norm", "bias", bias, shape, input)
    return LayerNorm.apply(input, weight, bias, len(shape), float(eps))


def rms_norm(input, normalized_shape, weight=None, eps: float | None = None):
    """Divide by the root mean square over the trailing dims, then ``* weight``.

    ``x / sqrt(mean(x^2) + eps)``; as PyTorch, ``eps=None`` means the machine epsilon of the
    input's dtype (``torch.finfo(input.dtype).eps``).

    >>> import tinyllm, tinyllm.functional as F
    >>> F.rms_norm(tinyllm.tensor([[3.0, -3.0]]), (2,))
    tensor([[ 1., -1.]])
    """
    check_float("rms_norm", input)
    shape = _normalized_shape("rms_norm", input, normalized_shape)
    _check_param("rms_norm", "weight", weight, shape, input)
    if eps is None:
        eps = float(np.finfo(input.dtype).eps)
    return RMSNorm.apply(input, weight, len(shape), float(eps))


def group_norm(input, num_groups: int, weight=None, bias=None, eps: float = 1e-5):
    """Normalize each of ``num_groups`` channel groups of an [N, C, *] input, then the
    per-channel affine map ``* weight[c] + bias[c]``.

    >>> import tinyllm, tinyllm.functional as F
    >>> F.group_norm(tinyllm.tensor([[[1.0], [3.0]]]), 1).reshape(-1)
    tensor([-1.,  1.])
    """
    check_float("group_norm", input)
    if input.ndim < 2:
        raise ValueError(
            f"group_norm: expected an input of shape [N, C, *] (at least 2 dims), "
            f"got shape {tuple(input.shape)}"
        )
    C = input.shape[1]
    if not isinstance(num_groups, (int, np.integer)) or num_groups <= 0 or C % num_groups:
        raise ValueError(
            f"group_norm: num_groups={num_groups} must be a positive divisor of the number of "
            f"channels C={C} (input of shape {tuple(input.shape)})"
        )
    _check_param("group_norm", "weight", weight, (C,), input)
    _check_param("group_norm", "bias", bias, (C,), input)
    return GroupNorm.apply(input, weight, bias, int(num_groups), float(eps))
