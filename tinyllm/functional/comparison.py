"""Comparisons and logical ops: boolean results, not differentiable (no graph recorded)."""

from __future__ import annotations

from tinyllm.backend import get_array_module
from tinyllm.tensor import Tensor

__all__ = [
    "all",
    "any",
    "eq",
    "ge",
    "gt",
    "isfinite",
    "isnan",
    "le",
    "logical_and",
    "logical_not",
    "logical_or",
    "lt",
    "ne",
]


def _arrays(a, b):
    av = a.data if isinstance(a, Tensor) else a
    bv = b.data if isinstance(b, Tensor) else b
    if isinstance(a, Tensor) and isinstance(b, Tensor) and a.device != b.device:
        raise RuntimeError(f"comparison: tensors on different devices, {a.device} and {b.device}")
    return av, bv


def _xp(a, b):
    return get_array_module(a.data if isinstance(a, Tensor) else b.data)


def eq(input, other):
    a, b = _arrays(input, other)
    return Tensor(_xp(input, other).equal(a, b))


def ne(input, other):
    a, b = _arrays(input, other)
    return Tensor(_xp(input, other).not_equal(a, b))


def lt(input, other):
    a, b = _arrays(input, other)
    return Tensor(_xp(input, other).less(a, b))


def le(input, other):
    a, b = _arrays(input, other)
    return Tensor(_xp(input, other).less_equal(a, b))


def gt(input, other):
    a, b = _arrays(input, other)
    return Tensor(_xp(input, other).greater(a, b))


def ge(input, other):
    a, b = _arrays(input, other)
    return Tensor(_xp(input, other).greater_equal(a, b))


def logical_not(input):
    return Tensor(get_array_module(input.data).logical_not(input.data))


def logical_and(input, other):
    a, b = _arrays(input, other)
    return Tensor(_xp(input, other).logical_and(a, b))


def logical_or(input, other):
    a, b = _arrays(input, other)
    return Tensor(_xp(input, other).logical_or(a, b))


def all(input):
    xp = get_array_module(input.data)
    return Tensor(xp.asarray(input.data.all()))


def any(input):
    xp = get_array_module(input.data)
    return Tensor(xp.asarray(input.data.any()))


def isfinite(input):
    return Tensor(get_array_module(input.data).isfinite(input.data))


def isnan(input):
    return Tensor(get_array_module(input.data).isnan(input.data))
