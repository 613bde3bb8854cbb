"""Gated linear units: SwiGLU and GeGLU on a concatenated input, forward and backward.

The input x [..., 2F] holds the two halves of a fused gate/up projection:
gate = x[..., :F], up = x[..., F:], and

    out = act(gate) * up                              [..., F]
    dgate = dout * up * act'(gate),  dup = dout * act(gate)    (returned as dx [..., 2F])

with act one of

    "silu"       silu(g) = g s(g), s = 1 / (1 + e^-g)          silu'(g) = s (1 + g (1 - s))
    "gelu_tanh"  g (1 + tanh u) / 2, u = sqrt(2/pi) (g + 0.044715 g^3)
                 derivative (1 + tanh u)/2 + g (1 - tanh^2 u) sqrt(2/pi) (1 + 3 0.044715 g^2)/2
    "gelu"       g Phi(g) = g (1 + erf(g / sqrt 2)) / 2        derivative Phi(g) + g phi(g)

(SwiGLU = "silu"; GeGLU = "gelu_tanh" or "gelu", PyTorch's approximate="tanh" / "none").
The backward recomputes act from the saved input x: nothing else is saved. The plain
activations act(x) and dx = dy act'(x) (``activation_forward/backward``, used by F.gelu and
F.silu) share the formulas. Tiers: reference, numba (``glu_numba.py``), cuda (``glu.cu``).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from tinyllm.backend import erf, get_array_module
from tinyllm.kernels import dispatch
from tinyllm.kernels.arrays import Array, as_rows, check_float, contiguous, upcast
from tinyllm.kernels.cuda_loader import function, with_cuda

__all__ = [
    "ACTIVATIONS",
    "activation_backward",
    "activation_forward",
    "geglu_backward",
    "geglu_forward",
    "glu_backward",
    "glu_forward",
    "swiglu_backward",
    "swiglu_forward",
]

ACTIVATIONS = {"silu": 0, "gelu_tanh": 1, "gelu": 2}  # the kernels' activation codes
_CU = "glu.cu"
_K0 = math.sqrt(2 / math.pi)
_K1 = 0.044715


@functools.cache
def _numba():
    from tinyllm.kernels import glu_numba

    return glu_numba


def _activation(xp, g, act: str):
    """(act(g), act'(g)) elementwise, written with array ops."""
    if act == "silu":
        s = 1 / (1 + xp.exp(-g))
        return g * s, s * (1 + g * (1 - s))
    if act == "gelu_tanh":
        t = xp.tanh(_K0 * (g + _K1 * g**3))
        value = 0.5 * g * (1 + t)
        return value, 0.5 * (1 + t) + 0.5 * g * (1 - t * t) * _K0 * (1 + 3 * _K1 * g * g)
    cdf = 0.5 * (1 + erf(g / math.sqrt(2)))
    return g * cdf, cdf + g * xp.exp(-0.5 * g * g) / math.sqrt(2 * math.pi)


# ---------------------------------------------------------------- bodies (x: [R, 2F])
def _reference_forward(x, act):
    xp = get_array_module(x)
    xw = upcast(x)
    F = x.shape[1] // 2
    with np.errstate(over="ignore"):  # exp(-g) = inf for very negative g: s = 0, correct
        value, _ = _activation(xp, xw[:, :F], act)
    return (value * xw[:, F:]).astype(x.dtype, copy=False)


def _reference_backward(dout, x, act):
    xp = get_array_module(x)
    xw, d = upcast(x), upcast(dout)
    F = x.shape[1] // 2
    with np.errstate(over="ignore"):
        value, slope = _activation(xp, xw[:, :F], act)
    dx = xp.concatenate([d * xw[:, F:] * slope, d * value], axis=1)
    return dx.astype(x.dtype, copy=False)


def _numba_forward(x, act):
    x = contiguous(x)
    out = np.empty((x.shape[0], x.shape[1] // 2), x.dtype)
    glu_rows = dispatch.numba_for_work(_numba().glu_rows, x.size)
    glu_rows(x, ACTIVATIONS[act], out, out, x, False)  # dout, dx unused
    return out


def _numba_backward(dout, x, act):
    x = contiguous(x)
    dout = contiguous(dout.astype(x.dtype, copy=False))
    dx = np.empty_like(x)
    glu_rows = dispatch.numba_for_work(_numba().glu_rows, x.size)
    glu_rows(x, ACTIVATIONS[act], dout, dout, dx, True)  # out unused
    return dx


def _cuda_forward(x, act):
    import cupy

    x = cupy.ascontiguousarray(x)
    R, F = x.shape[0], x.shape[1] // 2
    out = cupy.empty((R, F), x.dtype)
    if R * F:
        kernel = function(_CU, "glu_forward", x.dtype)
        args = (x, out, np.int64(R), np.int32(F), np.int32(ACTIVATIONS[act]))
        kernel(((R * F + 255) // 256,), (256,), args)
    return out


def _cuda_backward(dout, x, act):
    import cupy

    x = cupy.ascontiguousarray(x)
    dout = cupy.ascontiguousarray(dout.astype(x.dtype, copy=False))
    R, F = x.shape[0], x.shape[1] // 2
    dx = cupy.empty_like(x)
    if R * F:
        kernel = function(_CU, "glu_backward", x.dtype)
        args = (dout, x, dx, np.int64(R), np.int32(F), np.int32(ACTIVATIONS[act]))
        kernel(((R * F + 255) // 256,), (256,), args)
    return dx


def _reference_act(dy, x, act, backward):
    xp = get_array_module(x)
    xw = upcast(x)
    with np.errstate(over="ignore"):
        value, slope = _activation(xp, xw, act)
    result = upcast(dy) * slope if backward else value
    return result.astype(x.dtype, copy=False)


def _numba_act(dy, x, act, backward):
    x = contiguous(x)
    dy = x if dy is None else contiguous(dy.astype(x.dtype, copy=False))
    out = np.empty_like(x)
    dispatch.numba_for_work(_numba().act_rows, x.size)(x, ACTIVATIONS[act], dy, out, backward)
    return out


def _cuda_act(dy, x, act, backward):
    import cupy

    x = cupy.ascontiguousarray(x)
    out = cupy.empty_like(x)
    n = x.size
    if n:
        name = "act_backward" if backward else "act_forward"
        kernel = function(_CU, name, x.dtype)
        if backward:
            dy = cupy.ascontiguousarray(dy.astype(x.dtype, copy=False))
            args = (dy, x, out, np.int64(n), np.int32(ACTIVATIONS[act]))
        else:
            args = (x, out, np.int64(n), np.int32(ACTIVATIONS[act]))
        kernel(((n + 255) // 256,), (256,), args)
    return out


_ACT = dispatch.declare(
    with_cuda({"reference": _reference_act, "numba": _numba_act, "cuda": _cuda_act}, _CU),
    "activation_forward",
    "activation_backward",
)
_FORWARD = dispatch.declare(
    with_cuda(
        {"reference": _reference_forward, "numba": _numba_forward, "cuda": _cuda_forward}, _CU
    ),
    "glu_forward",
)
_BACKWARD = dispatch.declare(
    with_cuda(
        {"reference": _reference_backward, "numba": _numba_backward, "cuda": _cuda_backward},
        _CU,
    ),
    "glu_backward",
)


# ---------------------------------------------------------------- public functions
def _check(op: str, x, activation: str):
    check_float(op, "x", x)
    if activation not in ACTIVATIONS:
        raise ValueError(f"{op}: activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
    if x.ndim == 0 or x.shape[-1] % 2:
        raise ValueError(f"{op}: x must be [..., 2F] (gate and up halves), got {tuple(x.shape)}")


def glu_forward(x: Array, activation: str = "silu") -> Array:
    """out [..., F] = act(x[..., :F]) * x[..., F:] for x [..., 2F]."""
    op = "glu_forward"
    _check(op, x, activation)
    out = dispatch.run(op, get_array_module(x), x.dtype, _FORWARD, as_rows(x), activation)
    return out.reshape(x.shape[:-1] + (x.shape[-1] // 2,))


def glu_backward(dout: Array, x: Array, activation: str = "silu") -> Array:
    """dx [..., 2F] = [dout * up * act'(gate) | dout * act(gate)]."""
    op = "glu_backward"
    _check(op, x, activation)
    want = tuple(x.shape[:-1]) + (x.shape[-1] // 2,)
    if tuple(dout.shape) != want:
        raise ValueError(f"{op}: dout {tuple(dout.shape)} must be {want} for x {tuple(x.shape)}")
    xp = get_array_module(x)
    dx = dispatch.run(op, xp, x.dtype, _BACKWARD, as_rows(dout), as_rows(x), activation)
    return dx.reshape(x.shape)


def _check_act(op: str, x, activation: str):
    check_float(op, "x", x)
    if activation not in ACTIVATIONS:
        raise ValueError(f"{op}: activation must be one of {list(ACTIVATIONS)}, got {activation!r}")


def activation_forward(x: Array, activation: str = "gelu_tanh") -> Array:
    """act(x) elementwise: "silu", "gelu_tanh" or "gelu" (the formulas above)."""
    op = "activation_forward"
    _check_act(op, x, activation)
    rows = as_rows(x) if x.ndim else x.reshape(1, 1)
    out = dispatch.run(op, get_array_module(x), x.dtype, _ACT, None, rows, activation, False)
    return out.reshape(x.shape)


def activation_backward(dy: Array, x: Array, activation: str = "gelu_tanh") -> Array:
    """dx = dy * act'(x) elementwise."""
    op = "activation_backward"
    _check_act(op, x, activation)
    if tuple(dy.shape) != tuple(x.shape):
        raise ValueError(f"{op}: dy {tuple(dy.shape)} must match x {tuple(x.shape)}")
    rows = as_rows(x) if x.ndim else x.reshape(1, 1)
    dyr = as_rows(dy) if dy.ndim else dy.reshape(1, 1)
    dx = dispatch.run(op, get_array_module(x), x.dtype, _ACT, dyr, rows, activation, True)
    return dx.reshape(x.shape)


def _gelu_name(approximate: str) -> str:
    if approximate not in ("none", "tanh"):
        raise ValueError(f"geglu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return "gelu_tanh" if approximate == "tanh" else "gelu"


def swiglu_forward(x: Array) -> Array:
    """SwiGLU: silu(gate) * up for x [..., 2F] = [gate | up]."""
    return glu_forward(x, "silu")


def swiglu_backward(dout: Array, x: Array) -> Array:
    """d[gate | up] of SwiGLU."""
    return glu_backward(dout, x, "silu")


def geglu_forward(x: Array, approximate: str = "none") -> Array:
    """GeGLU: gelu(gate) * up (approximate "none", the exact GELU, or "tanh": F.gelu's
    argument and default, so the kernel and ``F.geglu`` agree)."""
    return glu_forward(x, _gelu_name(approximate))


def geglu_backward(dout: Array, x: Array, approximate: str = "none") -> Array:
    """d[gate | up] of GeGLU."""
    return glu_backward(dout, x, _gelu_name(approximate))
