"""Arithmetic: ``+ - * / **`` and unary minus, with broadcasting.

Each backward returns the gradient for the *broadcast* shape; the engine sums it back to each
input's shape (``tinyllm.backward.unbroadcast``), so these stay one line per input.

    z = a + b      da = dz               db = dz
    z = a - b      da = dz               db = -dz
    z = a * b      da = dz * b           db = dz * a
    z = a / b      da = dz / b           db = -dz * a / b^2 = -dz * z / b
    z = a ** p     da = dz * p * a^(p-1) dp = dz * z * log(a)
    z = -a         da = -dz
"""

from __future__ import annotations

from tinyllm.backend import get_array_module
from tinyllm.function import Function

__all__ = ["add", "div", "mul", "neg", "pow", "sub"]


class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, dz):
        return dz, dz


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, dz):
        return dz, (-dz if ctx.needs_input_grad[1] else None)


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, dz):
        a, b = ctx.saved_tensors
        da = dz * b if ctx.needs_input_grad[0] else None
        db = dz * a if ctx.needs_input_grad[1] else None
        return da, db


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        z = a / b
        ctx.save_for_backward(b, z)
        return z

    @staticmethod
    def backward(ctx, dz):
        b, z = ctx.saved_tensors
        da = dz / b if ctx.needs_input_grad[0] else None
        db = -dz * z / b if ctx.needs_input_grad[1] else None
        return da, db


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, dz):
        return -dz


class Pow(Function):
    @staticmethod
    def forward(ctx, a, p):
        z = a**p
        ctx.save_for_backward(a, p, z)
        return z

    @staticmethod
    def backward(ctx, dz):
        a, p, z = ctx.saved_tensors
        da = dp = None
        if ctx.needs_input_grad[0]:
            da = dz * p * a ** (p - 1)
        if ctx.needs_input_grad[1]:
            xp = get_array_module(z)
            # d(a^p)/dp = a^p log a; define it as 0 where a == 0 (the limit from a > 0 when p > 0)
            log_a = xp.log(xp.where(a == 0, 1, a))
            dp = (dz * z * log_a).astype(z.dtype, copy=False)
        return da, dp


def add(input, other, *, alpha=1):
    """``input + alpha * other`` elementwise, with broadcasting."""
    if alpha != 1:
        other = mul(other, alpha)
    return Add.apply(input, other)


def sub(input, other, *, alpha=1):
    """``input - alpha * other`` elementwise, with broadcasting."""
    if alpha != 1:
        other = mul(other, alpha)
    return Sub.apply(input, other)


def mul(input, other):
    """``input * other`` elementwise, with broadcasting."""
    return Mul.apply(input, other)


def div(input, other):
    """``input / other`` elementwise (true division), with broadcasting."""
    return Div.apply(input, other)


def neg(input):
    """``-input``."""
    return Neg.apply(input)


def pow(input, exponent):
    """``input ** exponent``; either may be a tensor or a number."""
    return Pow.apply(input, exponent)
