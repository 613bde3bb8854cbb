"""Registry entries for the activations: gelu, silu, logsigmoid and the gated units glu,
reglu, geglu, swiglu.

Each has a NumPy reference from the definition and a composite of primitive ops (sigmoid,
tanh, relu, chunk, *, +). Exact GELU has no primitive to compose from (tinyllm has no public
``erf``), so its composite uses ``_Erf`` below: erf as a primitive with its textbook
derivative 2/sqrt(pi) exp(-x^2); the check then shows that gelu's fused derivative
Phi(x) + x phi(x) equals the product rule applied to x * (1 + erf(x / sqrt 2)) / 2.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.special

import tinyllm.functional as F
from tinyllm.backend import erf
from tinyllm.function import Function
from tinyllm.registry import OpInfo, SampleInput, register
from tinyllm.registry.samples import away_from, randn


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
        SampleInput((randn(rng, dtype, 3, 4),), name="matrix"),
        SampleInput((randn(rng, dtype, 3, 4),), {"approximate": "tanh"}, "matrix, tanh"),
        SampleInput((randn(rng, dtype),), name="0-d"),
        SampleInput((randn(rng, dtype, 1),), {"approximate": "tanh"}, "size 1, tanh"),
        SampleInput((wide,), name="wide range"),
        SampleInput((wide,), {"approximate": "tanh"}, "wide range, tanh"),
        SampleInput((randn(rng, dtype, 2, 3, 5).transpose(2, 0, 1),), name="non-contiguous"),
    ]


register(
    OpInfo(
        "gelu",
        F.gelu,
        _activation_samples,
        _gelu_ref,
        composite=_gelu_composite,
        family="activations",
        kernels=("activation_forward", "activation_backward"),
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
        kernels=("activation_forward", "activation_backward"),
    )
)


def _logsigmoid_ref(x):
    return -np.logaddexp(0.0, -x)  # -softplus(-x)


def _logsigmoid_samples(rng, dtype):
    return [
        SampleInput((randn(rng, dtype, 3, 4),), name="matrix"),
        SampleInput((randn(rng, dtype),), name="0-d"),
        SampleInput((np.linspace(-9.0, 9.0, 19).astype(dtype),), name="wide range"),
        SampleInput(
            (np.array([-50.0, -20.0, -1e-3, 1e-3, 20.0, 50.0], dtype=dtype),), name="large |x|"
        ),
        SampleInput((randn(rng, dtype, 2, 3, 5).transpose(2, 0, 1),), name="non-contiguous"),
    ]


register(
    OpInfo(
        "logsigmoid",
        F.logsigmoid,
        _logsigmoid_samples,
        _logsigmoid_ref,
        # log(sigmoid(x)) is exact enough in float64 on |x| <= 50 (sigma(50) rounds to 1,
        # an error of 2e-22); the fused op stays exact far beyond that
        composite=lambda x: F.log(F.sigmoid(x)),
        family="activations",
    )
)


# ---------------------------------------------------------------- gated linear units
def _gated_samples(approximate=False):
    def samples(rng, dtype):
        out = [
            SampleInput((away_from(rng, dtype, 3, 8),), name="last dim"),
            SampleInput((away_from(rng, dtype, 2, 3, 10),), name="odd half size"),
            SampleInput((away_from(rng, dtype, 2, 6, 3), 1), name="dim 1"),
            SampleInput((away_from(rng, dtype, 4, 2),), name="half of size 1"),
            SampleInput((away_from(rng, dtype, 6),), name="1-d"),
            SampleInput(
                (away_from(rng, dtype, 3, 4, 6).transpose(1, 0, 2),), name="non-contiguous"
            ),
        ]
        if approximate:
            out.append(
                SampleInput((away_from(rng, dtype, 3, 8),), {"approximate": "tanh"}, "tanh gelu")
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


_GLU_KERNELS = ("glu_forward", "glu_backward")
for _name, _op, _ref, _comp, _approx, _kernels in (
    ("glu", F.glu, _glu_ref, _glu_composite, False, ()),
    ("reglu", F.reglu, _reglu_ref, _reglu_composite, False, ()),
    ("geglu", F.geglu, _geglu_ref, _geglu_composite, True, _GLU_KERNELS),
    ("swiglu", F.swiglu, _swiglu_ref, _swiglu_composite, False, _GLU_KERNELS),
):
    register(
        OpInfo(
            _name, _op, _gated_samples(_approx), _ref, composite=_comp, family="activations",
            kernels=_kernels,
        )
    )  # fmt: skip
