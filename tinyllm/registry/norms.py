"""Registry entries for the normalizations: layer_norm, rms_norm and group_norm.

Each entry has a NumPy reference written from the definition (not from the op's code) and a
composite of primitive tinyllm ops (mean, var, rsqrt, *, +) whose autograd must equal the
hand-written backward. Samples cover odd sizes, size-1 dims, 1-d and non-contiguous inputs,
with and without affine parameters. layer_norm and rms_norm run kernels (``kernels=``).
"""

from __future__ import annotations

import numpy as np

import tinyllm.functional as F
from tinyllm.registry import OpInfo, SampleInput, register
from tinyllm.registry.samples import affine, randn


# ---------------------------------------------------------------- layer_norm
def _layer_norm_samples(rng, dtype):
    w5, b5 = affine(rng, dtype, 5)
    w6, _ = affine(rng, dtype, 6)
    w34, b34 = affine(rng, dtype, 3, 4)
    w1, b1 = affine(rng, dtype, 1)
    w4, b4 = affine(rng, dtype, 4)
    return [
        SampleInput((randn(rng, dtype, 3, 7), (7,)), name="no affine"),
        SampleInput((randn(rng, dtype, 2, 3, 5), (5,), w5, b5), name="affine"),
        SampleInput((randn(rng, dtype, 4, 6), (6,), w6, None), name="weight only"),
        SampleInput((randn(rng, dtype, 2, 3, 4), (3, 4), w34, b34), name="two normalized dims"),
        SampleInput((randn(rng, dtype, 5), 5), name="1-d input, int shape"),
        SampleInput((randn(rng, dtype, 1, 1, 9), [9]), name="size-1 batch dims"),
        SampleInput((randn(rng, dtype, 3, 1), (1,), w1, b1), name="normalized size 1"),
        SampleInput((randn(rng, dtype, 3, 5) + 10, (5,), w5, b5), {"eps": 0.1}, "mean 10, eps 0.1"),
        SampleInput(
            (randn(rng, dtype, 5, 4, 3).transpose(2, 0, 1), (4,), w4, b4), name="non-contiguous"
        ),
    ]


def _layer_norm_ref(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    k = 1 if isinstance(normalized_shape, int) else len(normalized_shape)
    rows = x.reshape(x.shape[: x.ndim - k] + (-1,))
    mu = rows.mean(axis=-1, keepdims=True)
    sigma2 = np.mean((rows - mu) ** 2, axis=-1, keepdims=True)
    y = ((rows - mu) / np.sqrt(sigma2 + eps)).reshape(x.shape)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def _layer_norm_composite(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    k = 1 if isinstance(normalized_shape, int) else len(normalized_shape)
    dims = tuple(range(x.ndim - k, x.ndim))
    mean = x.mean(dims, keepdim=True)
    var = x.var(dims, keepdim=True, correction=0)
    y = (x - mean) * (var + eps).rsqrt()
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


register(
    OpInfo(
        "layer_norm",
        F.layer_norm,
        _layer_norm_samples,
        _layer_norm_ref,
        composite=_layer_norm_composite,
        family="norms",
        kernels=("layer_norm_forward", "layer_norm_backward"),
    )
)


# ---------------------------------------------------------------- rms_norm
def _rms_norm_samples(rng, dtype):
    w5, _ = affine(rng, dtype, 5)
    w34, _ = affine(rng, dtype, 3, 4)
    w1, _ = affine(rng, dtype, 1)
    w4, _ = affine(rng, dtype, 4)
    return [
        SampleInput((randn(rng, dtype, 3, 7), (7,)), name="no weight"),
        SampleInput((randn(rng, dtype, 2, 3, 5), (5,), w5), name="weight"),
        SampleInput((randn(rng, dtype, 2, 3, 4), (3, 4), w34), name="two normalized dims"),
        SampleInput((randn(rng, dtype, 5), 5), name="1-d input, int shape"),
        SampleInput((randn(rng, dtype, 1, 1, 9), [9]), name="size-1 batch dims"),
        # D = 1: y = w x / sqrt(x^2 + eps), where eps=None (the dtype's machine epsilon)
        # would differ between the float32 run and its float64 reference for small x
        SampleInput((randn(rng, dtype, 3, 1), (1,), w1), {"eps": 1e-6}, "normalized size 1"),
        # tiny values, where eps matters (an explicit eps: the default depends on the dtype)
        SampleInput((randn(rng, dtype, 3, 5) * 1e-2, (5,), w5), {"eps": 1e-4}, "eps matters"),
        SampleInput(
            (randn(rng, dtype, 5, 4, 3).transpose(2, 0, 1), (4,), w4), name="non-contiguous"
        ),
    ]


def _rms_norm_ref(x, normalized_shape, weight=None, eps=None):
    k = 1 if isinstance(normalized_shape, int) else len(normalized_shape)
    eps = np.finfo(x.dtype).eps if eps is None else eps
    rows = x.reshape(x.shape[: x.ndim - k] + (-1,))
    rms = np.sqrt(np.mean(rows**2, axis=-1, keepdims=True) + eps)
    y = (rows / rms).reshape(x.shape)
    return y * weight if weight is not None else y


def _rms_norm_composite(x, normalized_shape, weight=None, eps=None):
    k = 1 if isinstance(normalized_shape, int) else len(normalized_shape)
    eps = float(np.finfo(x.dtype).eps) if eps is None else eps
    dims = tuple(range(x.ndim - k, x.ndim))
    y = x * ((x * x).mean(dims, keepdim=True) + eps).rsqrt()
    return y * weight if weight is not None else y


register(
    OpInfo(
        "rms_norm",
        F.rms_norm,
        _rms_norm_samples,
        _rms_norm_ref,
        composite=_rms_norm_composite,
        family="norms",
        kernels=("rms_norm_forward", "rms_norm_backward"),
    )
)


# ---------------------------------------------------------------- group_norm
def _group_norm_samples(rng, dtype):
    w6, b6 = affine(rng, dtype, 6)
    w4, b4 = affine(rng, dtype, 4)
    return [
        SampleInput((randn(rng, dtype, 2, 6, 5), 3, w6, b6), name="affine, 3 groups"),
        SampleInput((randn(rng, dtype, 2, 4, 3, 3), 2), name="no affine, 2-d spatial"),
        SampleInput((randn(rng, dtype, 3, 6), 2, w6, b6), name="no spatial dims"),
        SampleInput((randn(rng, dtype, 2, 4, 5), 1, w4, b4), name="one group"),
        SampleInput((randn(rng, dtype, 2, 6, 7), 6), name="one group per channel"),
        SampleInput((randn(rng, dtype, 1, 4, 1), 2, w4, b4), name="N=1, spatial size 1"),
        SampleInput((randn(rng, dtype, 2, 4, 3), 4, w4, None), {"eps": 0.1}, "weight, eps"),
        SampleInput(
            (randn(rng, dtype, 5, 4, 2).transpose(2, 1, 0), 2, w4, b4), name="non-contiguous"
        ),
    ]


def _group_norm_ref(x, num_groups, weight=None, bias=None, eps=1e-5):
    N, C = x.shape[:2]
    y = np.empty_like(x)
    per = C // num_groups
    for n in range(N):
        for g in range(num_groups):
            block = x[n, g * per : (g + 1) * per]
            y[n, g * per : (g + 1) * per] = (block - block.mean()) / np.sqrt(block.var() + eps)
    channel = (C,) + (1,) * (x.ndim - 2)
    if weight is not None:
        y = y * weight.reshape(channel)
    if bias is not None:
        y = y + bias.reshape(channel)
    return y


def _group_norm_composite(x, num_groups, weight=None, bias=None, eps=1e-5):
    N, C = x.shape[:2]
    xg = x.reshape(N, num_groups, -1)
    mean = xg.mean(2, keepdim=True)
    var = xg.var(2, keepdim=True, correction=0)
    y = ((xg - mean) * (var + eps).rsqrt()).reshape(x.shape)
    channel = (C,) + (1,) * (x.ndim - 2)
    if weight is not None:
        y = y * weight.reshape(channel)
    if bias is not None:
        y = y + bias.reshape(channel)
    return y


register(
    OpInfo(
        "group_norm",
        F.group_norm,
        _group_norm_samples,
        _group_norm_ref,
        composite=_group_norm_composite,
        family="norms",
    )
)
