"""Rotary position embedding (RoPE) of x [..., T, D], forward and backward.

Each row of x (a head vector at position m) is cut into D/2 pairs (a_i, b_i), and pair i
is rotated by the angle m theta_i, whose cosine and sine come in tables [T, D/2]:

    a'_i = a_i cos_i - b_i sin_i
    b'_i = b_i cos_i + a_i sin_i

Two layouts pair the numbers differently: "half" (NeoX, Llama: ``rotate_half``) pairs
(x_i, x_{i + D/2}); "interleaved" (GPT-J) pairs (x_{2i}, x_{2i+1}).

Backward: the rotation is linear and orthogonal, so its transpose is the rotation by the
negative angle (cos unchanged, sin negated):

    da_i = da'_i cos_i + db'_i sin_i
    db_i = db'_i cos_i - da'_i sin_i

The tables carry no gradient. Shapes: x, y, dy, dx [..., T, D] (D even); cos, sin [T, D/2]
or any shape that broadcasts to [..., T, D/2] (e.g. [B, 1, T, D/2] for per-sequence
positions). Tiers: reference, numba (``rope_numba.py``), cuda (``rope.cu``). This is RoPE's
one home: ``F.rotary_embedding`` (and ``nn.RotaryEmbedding``) call these two functions for
every call, and the reference body ``_reference`` is the readable oracle the other tiers are
tested against.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from tinyllm.backend import get_array_module
from tinyllm.kernels import dispatch
from tinyllm.kernels.arrays import Array, check_float, contiguous, upcast
from tinyllm.kernels.cuda_loader import function, scalar, with_cuda

__all__ = ["rope_backward", "rope_forward"]

_CU = "rope.cu"


@functools.cache
def _numba():
    from tinyllm.kernels import rope_numba

    return rope_numba


# ---------------------------------------------- bodies (x: [R, D] rows, tables [P, D/2])
def _reference(x, cos, sin, sign, interleaved):
    xp = get_array_module(x)
    R, D = x.shape
    P = cos.shape[0]
    xw = upcast(x).reshape(R // P, P, D)  # rows r = (n, p), table row p
    c, s = upcast(cos), sign * upcast(sin)  # [P, D/2]
    if interleaved:
        a, b = xw[..., 0::2], xw[..., 1::2]
        y = xp.stack([a * c - b * s, b * c + a * s], axis=-1).reshape(R, D)
    else:
        a, b = xw[..., : D // 2], xw[..., D // 2 :]
        y = xp.concatenate([a * c - b * s, b * c + a * s], axis=-1).reshape(R, D)
    return y.astype(x.dtype, copy=False)


def _numba_body(x, cos, sin, sign, interleaved):
    x = contiguous(x)
    dt = x.dtype
    y = np.empty_like(x)
    c = contiguous(cos.astype(dt, copy=False))
    s = contiguous(sin.astype(dt, copy=False))
    dispatch.numba_for_work(_numba().rope_rows, x.size)(x, c, s, dt.type(sign), interleaved, y)
    return y


def _cuda_body(x, cos, sin, sign, interleaved):
    import cupy

    x = cupy.ascontiguousarray(x)
    dt = x.dtype
    R, D = x.shape
    c = cupy.ascontiguousarray(cos.astype(dt, copy=False))
    s = cupy.ascontiguousarray(sin.astype(dt, copy=False))
    y = cupy.empty_like(x)
    n = R * (D // 2)
    if n:
        kernel = function(_CU, "rope", dt)
        args = (x, c, s, y, np.int64(R), np.int32(D), np.int64(c.shape[0]))
        kernel(((n + 255) // 256,), (256,), args + (scalar(sign, dt), np.int32(interleaved)))
    return y


_BODIES = dispatch.declare(
    with_cuda({"reference": _reference, "numba": _numba_body, "cuda": _cuda_body}, _CU),
    "rope_forward",
    "rope_backward",
)


# ---------------------------------------------------------------- public functions
def _tables(op, x, cos, sin):
    """cos, sin as [P, D/2] tables such that row r of x's rows [R, D] uses row r % P."""
    xp = get_array_module(x)
    D = x.shape[-1]
    lead = tuple(x.shape[:-1])
    want = lead + (D // 2,)
    for name, t in (("cos", cos), ("sin", sin)):
        try:
            ok = xp.broadcast_shapes(tuple(t.shape), want) == want
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"{op}: {name} {tuple(t.shape)} does not broadcast to x's [..., T, D/2] = {want}"
            )
    if cos.shape != sin.shape:
        raise ValueError(f"{op}: cos {tuple(cos.shape)} and sin {tuple(sin.shape)} differ")
    table_lead = tuple(cos.shape[:-1])
    while table_lead and table_lead[0] == 1:
        table_lead = table_lead[1:]
    if lead[len(lead) - len(table_lead) :] == table_lead:  # a suffix: rows repeat mod P
        P = math.prod(table_lead)
        return cos.reshape(P, D // 2), sin.reshape(P, D // 2)
    R = math.prod(lead)
    full = lambda t: xp.broadcast_to(t, want).reshape(R, D // 2)  # noqa: E731
    return full(cos), full(sin)


def _rope(op, x, cos, sin, interleaved, sign):
    check_float(op, "x", x)
    if x.ndim < 1 or x.shape[-1] % 2:
        raise ValueError(f"{op}: x must be [..., D] with D even, got {tuple(x.shape)}")
    c, s = _tables(op, x, cos, sin)
    D = x.shape[-1]
    rows = x.reshape(-1, D)
    if rows.shape[0] == 0 or D == 0:
        return x.copy()
    y = dispatch.run(op, get_array_module(x), x.dtype, _BODIES, rows, c, s, sign, bool(interleaved))
    return y.reshape(x.shape)


def rope_forward(x: Array, cos: Array, sin: Array, interleaved: bool = False) -> Array:
    """x [..., T, D] with each pair rotated by its angle (tables cos, sin [T, D/2])."""
    return _rope("rope_forward", x, cos, sin, interleaved, 1.0)


def rope_backward(dy: Array, cos: Array, sin: Array, interleaved: bool = False) -> Array:
    """dx [..., T, D] = dy rotated by the negative angles (the transpose of the forward)."""
    return _rope("rope_backward", dy, cos, sin, interleaved, -1.0)
