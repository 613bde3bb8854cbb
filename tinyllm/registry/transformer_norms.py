"""Registry entries for the transformer building blocks: norms, activations, gated units,
embedding, dropout and linear.

Each entry has a NumPy reference written from the definition (not from the op's code), and
the fused ops have a composite of primitive tinyllm ops (mean, var, rsqrt, sigmoid, tanh, *,
+, indexing, matmul) whose autograd must equal the hand-written backward. Samples cover odd
sizes, size-1 dims, 0-d and non-contiguous inputs, and with/without affine parameters.

Two entries need a word:
- exact GELU has no primitive to compose from (tinyllm has no public ``erf``), so its
  composite uses ``_Erf`` below: erf as a primitive with its textbook derivative
  2/sqrt(pi) exp(-x^2). The composite then checks that gelu's fused derivative
  Phi(x) + x phi(x) equals the product rule applied to x * (1 + erf(x / sqrt 2)) / 2.
- dropout draws a random mask, so its registry op reseeds (``tinyllm.manual_seed(0)``) before
  every call: gradcheck calls it many times and must see the same mask each time.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.special

import tinyllm
import tinyllm.functional as F
from tinyllm.backend import erf
from tinyllm.function import Function
from tinyllm.registry import OpInfo, SampleInput, register
from tinyllm.tensor import Tensor


def _randn(rng, dtype, *shape):
    return rng.standard_normal(shape).astype(dtype)


def _away_from_zero(rng, dtype, *shape, gap=0.1):
    """Normal samples with |x| >= gap (relu's kink at 0 avoided)."""
    x = rng.standard_normal(shape)
    return (np.sign(x + 1e-12) * (np.abs(x) + gap)).astype(dtype)


def _affine(rng, dtype, *shape):
    """A weight around 1 and a bias around 0 of ``shape``."""
    return (1 + 0.5 * rng.standard_normal(shape)).astype(dtype), _randn(rng, dtype, *shape)


# ---------------------------------------------------------------- layer_norm
def _layer_norm_samples(rng, dtype):
    w5, b5 = _affine(rng, dtype, 5)
    w6, _ = _affine(rng, dtype, 6)
    w34, b34 = _affine(rng, dtype, 3, 4)
    w1, b1 = _affine(rng, dtype, 1)
    w4, b4 = _affine(rng, dtype, 4)
    return [
        SampleInput((_randn(rng, dtype, 3, 7), (7,)), name="no affine"),
        SampleInput((_randn(rng, dtype, 2, 3, 5), (5,), w5, b5), name="affine"),
        SampleInput((_randn(rng, dtype, 4, 6), (6,), w6, None), name="weight only"),
        SampleInput((_randn(rng, dtype, 2, 3, 4), (3, 4), w34, b34), name="two normalized dims"),
        SampleInput((_randn(rng, dtype, 5), 5), name="1-d input, int shape"),
        SampleInput((_randn(rng, dtype, 1, 1, 9), [9]), name="size-1 batch dims"),
        SampleInput((_randn(rng, dtype, 3, 1), (1,), w1, b1), name="normalized size 1"),
        SampleInput(
            (_randn(rng, dtype, 3, 5) + 10, (5,), w5, b5), {"eps": 0.1}, "mean 10, eps 0.1"
        ),
        SampleInput(
            (_randn(rng, dtype, 5, 4, 3).transpose(2, 0, 1), (4,), w4, b4), name="non-contiguous"
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
    )
)


# ---------------------------------------------------------------- rms_norm
def _rms_norm_samples(rng, dtype):
    w5, _ = _affine(rng, dtype, 5)
    w34, _ = _affine(rng, dtype, 3, 4)
    w1, _ = _affine(rng, dtype, 1)
    w4, _ = _affine(rng, dtype, 4)
    return [
        SampleInput((_randn(rng, dtype, 3, 7), (7,)), name="no weight"),
        SampleInput((_randn(rng, dtype, 2, 3, 5), (5,), w5), name="weight"),
        SampleInput((_randn(rng, dtype, 2, 3, 4), (3, 4), w34), name="two normalized dims"),
        SampleInput((_randn(rng, dtype, 5), 5), name="1-d input, int shape"),
        SampleInput((_randn(rng, dtype, 1, 1, 9), [9]), name="size-1 batch dims"),
        # D = 1: y = w x / sqrt(x^2 + eps), where eps=None (the dtype's machine epsilon)
        # would differ between the float32 run and its float64 reference for small x
        SampleInput((_randn(rng, dtype, 3, 1), (1,), w1), {"eps": 1e-6}, "normalized size 1"),
        # tiny values, where eps matters (an explicit eps: the default depends on the dtype)
        SampleInput((_randn(rng, dtype, 3, 5) * 1e-2, (5,), w5), {"eps": 1e-4}, "eps matters"),
        SampleInput(
            (_randn(rng, dtype, 5, 4, 3).transpose(2, 0, 1), (4,), w4), name="non-contiguous"
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
    )
)


# ---------------------------------------------------------------- group_norm
def _group_norm_samples(rng, dtype):
    w6, b6 = _affine(rng, dtype, 6)
    w4, b4 = _affine(rng, dtype, 4)
    return [
        SampleInput((_randn(rng, dtype, 2, 6, 5), 3, w6, b6), name="affine, 3 groups"),
        SampleInput((_randn(rng, dtype, 2, 4, 3, 3), 2), name="no affine, 2-d spatial"),
        SampleInput((_randn(rng, dtype, 3, 6), 2, w6, b6), name="no spatial dims"),
        SampleInput((_randn(rng, dtype, 2, 4, 5), 1, w4, b4), name="one group"),
        SampleInput((_randn(rng, dtype, 2, 6, 7), 6), name="one group per channel"),
        SampleInput((_randn(rng, dtype, 1, 4, 1), 2, w4, b4), name="N=1, spatial size 1"),
        SampleInput((_randn(rng, dtype, 2, 4, 3), 4, w4, None), {"eps": 0.1}, "weight, eps"),
        SampleInput(
            (_randn(rng, dtype, 5, 4, 2).transpose(2, 1, 0), 2, w4, b4), name="non-contiguous"
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


# ---------------------------------------------------------------- gelu and silu
class _Erf(Function):
    """erf as a primitive, for the exact-GELU composite: d erf(x)/dx = 2/sqrt(pi) exp(-x^2)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return erf(x)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return dy * (2 / math.sqrt(math.pi)) * np.exp(-x * x)


def _gelu_ref(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    return x * scipy.special.ndtr(x)  # x times the standard normal CDF


def _gelu_composite(x, approximate="none"):
    if approximate == "tanh":
        inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)
        return 0.5 * x * (1 + F.tanh(inner))
    return 0.5 * x * (1 + _Erf.apply(x * (1 / math.sqrt(2))))


def _activation_samples(rng, dtype):
    wide = np.linspace(-9.0, 9.0, 19).astype(dtype)
    return [
        SampleInput((_randn(rng, dtype, 3, 4),), name="matrix"),
        SampleInput((_randn(rng, dtype, 3, 4),), {"approximate": "tanh"}, "matrix, tanh"),
        SampleInput((_randn(rng, dtype),), name="0-d"),
        SampleInput((_randn(rng, dtype, 1),), {"approximate": "tanh"}, "size 1, tanh"),
        SampleInput((wide,), name="wide range"),
        SampleInput((wide,), {"approximate": "tanh"}, "wide range, tanh"),
        SampleInput((_randn(rng, dtype, 2, 3, 5).transpose(2, 0, 1),), name="non-contiguous"),
    ]


register(
    OpInfo(
        "gelu",
        F.gelu,
        _activation_samples,
        _gelu_ref,
        composite=_gelu_composite,
        family="activations",
    )
)


def _silu_samples(rng, dtype):
    return [s for s in _activation_samples(rng, dtype) if not s.kwargs] + [
        SampleInput((np.array([-40.0, -20.0, 20.0, 40.0], dtype=dtype),), name="large |x|"),
    ]


register(
    OpInfo(
        "silu",
        F.silu,
        _silu_samples,
        lambda x: x * scipy.special.expit(x),
        composite=lambda x: x * F.sigmoid(x),
        family="activations",
    )
)


# ---------------------------------------------------------------- gated linear units
def _gated_samples(approximate=False):
    def samples(rng, dtype):
        out = [
            SampleInput((_away_from_zero(rng, dtype, 3, 8),), name="last dim"),
            SampleInput((_away_from_zero(rng, dtype, 2, 3, 10),), name="odd half size"),
            SampleInput((_away_from_zero(rng, dtype, 2, 6, 3), 1), name="dim 1"),
            SampleInput((_away_from_zero(rng, dtype, 4, 2),), name="half of size 1"),
            SampleInput((_away_from_zero(rng, dtype, 6),), name="1-d"),
            SampleInput(
                (_away_from_zero(rng, dtype, 3, 4, 6).transpose(1, 0, 2),), name="non-contiguous"
            ),
        ]
        if approximate:
            out.append(
                SampleInput(
                    (_away_from_zero(rng, dtype, 3, 8),), {"approximate": "tanh"}, "tanh gelu"
                )
            )
        return out

    return samples


def _np_halves(x, dim=-1):
    return np.split(x, 2, axis=dim)


def _glu_ref(x, dim=-1):
    a, b = _np_halves(x, dim)
    return a * scipy.special.expit(b)


def _reglu_ref(x, dim=-1):
    gate, up = _np_halves(x, dim)
    return np.maximum(gate, 0) * up


def _geglu_ref(x, dim=-1, approximate="none"):
    gate, up = _np_halves(x, dim)
    return _gelu_ref(gate, approximate) * up


def _swiglu_ref(x, dim=-1):
    gate, up = _np_halves(x, dim)
    return gate * scipy.special.expit(gate) * up


def _glu_composite(x, dim=-1):
    a, b = x.chunk(2, dim)
    return a * F.sigmoid(b)


def _reglu_composite(x, dim=-1):
    gate, up = x.chunk(2, dim)
    return F.relu(gate) * up


def _geglu_composite(x, dim=-1, approximate="none"):
    gate, up = x.chunk(2, dim)
    return _gelu_composite(gate, approximate) * up


def _swiglu_composite(x, dim=-1):
    gate, up = x.chunk(2, dim)
    return gate * F.sigmoid(gate) * up


for _name, _op, _ref, _comp, _approx in (
    ("glu", F.glu, _glu_ref, _glu_composite, False),
    ("reglu", F.reglu, _reglu_ref, _reglu_composite, False),
    ("geglu", F.geglu, _geglu_ref, _geglu_composite, True),
    ("swiglu", F.swiglu, _swiglu_ref, _swiglu_composite, False),
):
    register(
        OpInfo(_name, _op, _gated_samples(_approx), _ref, composite=_comp, family="activations")
    )


# ---------------------------------------------------------------- embedding
def _embedding_op(idx, weight, padding_idx=None):
    """F.embedding; with padding_idx, the table's padding row is first multiplied by 0.

    The padding row gets no gradient by definition, yet the forward reads it, so finite
    differences would see a derivative there. Zeroing that row of the *input* makes the
    function truly independent of it; the op's own zeroing of that row is tested in
    tests/functional/test_norms_activations.py, and this entry still checks that the right
    row (a negative padding_idx included) is the one skipped.
    """
    if padding_idx is not None:
        keep = np.ones((weight.shape[0], 1), dtype=weight.dtype)
        keep[padding_idx] = 0
        weight = weight * Tensor(keep)
    return F.embedding(idx, weight, padding_idx)


def _embedding_ref(idx, weight, padding_idx=None):
    if padding_idx is not None:
        weight = weight.copy()
        weight[padding_idx] = 0
    return np.take(weight, idx, axis=0)


def _embedding_composite(idx, weight, padding_idx=None):
    if padding_idx is not None:
        keep = np.ones((weight.shape[0], 1), dtype=weight.dtype)
        keep[padding_idx] = 0
        weight = weight * Tensor(keep)
    return weight[idx.data]


def _embedding_samples(rng, dtype):
    padded = rng.integers(0, 6, (3, 4))
    padded[0, :2] = [0, 5]  # both padding rows of the samples below occur
    return [
        SampleInput((rng.integers(0, 7, (2, 5)), _randn(rng, dtype, 7, 4)), name="repeats"),
        SampleInput((rng.integers(0, 5, 6), _randn(rng, dtype, 5, 3)), name="1-d index"),
        SampleInput((np.array(2), _randn(rng, dtype, 4, 3)), name="0-d index"),
        SampleInput((np.zeros(3, dtype=np.int64), _randn(rng, dtype, 1, 2)), name="one row"),
        SampleInput((padded, _randn(rng, dtype, 6, 3), 0), name="padding_idx 0"),
        SampleInput((padded, _randn(rng, dtype, 6, 3)), {"padding_idx": -1}, "padding_idx -1"),
        SampleInput((padded.T, _randn(rng, dtype, 3, 6).T), name="non-contiguous index and table"),
    ]


register(
    OpInfo(
        "embedding",
        _embedding_op,
        _embedding_samples,
        _embedding_ref,
        composite=_embedding_composite,
        family="embedding",
    )
)


# ---------------------------------------------------------------- dropout
def _seeded_dropout(x, p=0.5, training=True):
    """F.dropout after ``tinyllm.manual_seed(0)``: the same mask on every call."""
    tinyllm.manual_seed(0)
    return F.dropout(x, p, training)


def _dropout_ref(x, p=0.5, training=True):
    if p == 1:
        return np.zeros_like(x)
    keep = np.random.default_rng(0).random(x.shape, dtype=np.float32) >= p
    return x * keep / (1 - p)


def _dropout_composite(x, p=0.5, training=True):
    keep = np.random.default_rng(0).random(x.shape, dtype=np.float32) >= p
    scale = 0.0 if p == 1 else 1 / (1 - p)
    return x * Tensor((keep * scale).astype(x.dtype))


def _dropout_samples(rng, dtype):
    # p=0 and training=False return the input Tensor itself (as PyTorch), which is no op
    # output for these generic checks (it stays a leaf that requires grad even under
    # no_grad): tests/functional/test_norms_activations.py checks those two cases.
    return [
        SampleInput((_randn(rng, dtype, 4, 5),), name="p=0.5"),
        SampleInput((_randn(rng, dtype, 2, 3, 7), 0.2), name="p=0.2, odd sizes"),
        SampleInput((_randn(rng, dtype, 3, 4), 1.0), name="p=1 zeros"),
        SampleInput((_randn(rng, dtype), 0.3), name="0-d"),
        SampleInput((_randn(rng, dtype, 5, 4).T, 0.4), name="non-contiguous"),
    ]


register(
    OpInfo(
        "dropout",
        _seeded_dropout,
        _dropout_samples,
        _dropout_ref,
        composite=_dropout_composite,
        family="dropout",
    )
)


# ---------------------------------------------------------------- linear
def _linear_samples(rng, dtype):
    return [
        SampleInput(
            (_randn(rng, dtype, 3, 4), _randn(rng, dtype, 5, 4), _randn(rng, dtype, 5)),
            name="matrix with bias",
        ),
        SampleInput((_randn(rng, dtype, 2, 3, 4), _randn(rng, dtype, 6, 4)), name="batched"),
        SampleInput(
            (_randn(rng, dtype, 4), _randn(rng, dtype, 3, 4), _randn(rng, dtype, 3)),
            name="1-d input",
        ),
        SampleInput(
            (_randn(rng, dtype, 3, 4), _randn(rng, dtype, 1, 4), _randn(rng, dtype, 1)),
            name="one output",
        ),
        SampleInput(
            (_randn(rng, dtype, 1, 1, 3), _randn(rng, dtype, 2, 3), _randn(rng, dtype, 2)),
            name="size-1 batch dims",
        ),
        SampleInput(
            (_randn(rng, dtype, 2, 3, 1, 7), _randn(rng, dtype, 5, 7), _randn(rng, dtype, 5)),
            name="4-d, odd sizes",
        ),
        SampleInput(
            (
                _randn(rng, dtype, 5, 3).T,
                _randn(rng, dtype, 5, 4).T,
                _randn(rng, dtype, 4),
            ),
            name="non-contiguous input and weight",
        ),
    ]


def _linear_ref(x, weight, bias=None):
    y = np.einsum("...i,oi->...o", x, weight)
    return y + bias if bias is not None else y


def _linear_composite(x, weight, bias=None):
    y = x @ weight.T
    return y + bias if bias is not None else y


register(
    OpInfo(
        "linear",
        F.linear,
        _linear_samples,
        _linear_ref,
        composite=_linear_composite,
        family="linear",
    )
)
