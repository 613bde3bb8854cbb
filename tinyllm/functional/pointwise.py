"""Elementwise math with hand-written derivatives.

y = exp(x)        dx = dy * y
y = log(x)        dx = dy / x
y = sqrt(x)       dx = dy / (2 y)
y = rsqrt(x)      dx = -dy * y^3 / 2
y = tanh(x)       dx = dy * (1 - y^2)
y = sigmoid(x)    dx = dy * y (1 - y)
y = relu(x)       dx = dy * [x > 0]
y = |x|           dx = dy * sign(x)          (0 at x = 0, as PyTorch)
y = sin(x)        dx = dy * cos(x)
y = cos(x)        dx = -dy * sin(x)
y = clamp(x,a,b)  dx = dy * [a <= x <= b]    (PyTorch's convention at the bounds)
y = max(a, b)     da = dy * ([a > b] + [a == b] / 2)   (ties share the gradient)
y = where(c,a,b)  da = dy * c,  db = dy * (1 - c)
"""

from __future__ import annotations

from tinyllm.backend import get_array_module
from tinyllm.function import Function
from tinyllm.functional._util import apply_inplace
from tinyllm.tensor import Tensor

__all__ = [
    "abs",
    "clamp",
    "clip",
    "cos",
    "exp",
    "log",
    "maximum",
    "minimum",
    "relu",
    "rsqrt",
    "sigmoid",
    "sin",
    "sqrt",
    "tanh",
    "where",
]


class Exp(Function):
    @staticmethod
    def forward(ctx, x):
        y = get_array_module(x).exp(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return dy * y


class Log(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return get_array_module(x).log(x)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return dy / x


class Sqrt(Function):
    @staticmethod
    def forward(ctx, x):
        y = get_array_module(x).sqrt(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return dy / (2 * y)


class Rsqrt(Function):
    @staticmethod
    def forward(ctx, x):
        y = 1 / get_array_module(x).sqrt(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return -0.5 * dy * y * y * y


class Tanh(Function):
    @staticmethod
    def forward(ctx, x):
        y = get_array_module(x).tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return dy * (1 - y * y)


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, x):
        xp = get_array_module(x)
        # 1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) for x < 0: no overflow either way
        e = xp.exp(-xp.abs(x))
        y = xp.where(x >= 0, 1 / (1 + e), e / (1 + e))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return dy * y * (1 - y)


class Relu(Function):
    @staticmethod
    def forward(ctx, x):
        y = get_array_module(x).maximum(x, 0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return dy * (y > 0)


class Abs(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return get_array_module(x).abs(x)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return dy * get_array_module(x).sign(x)


class Sin(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return get_array_module(x).sin(x)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return dy * get_array_module(x).cos(x)


class Cos(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return get_array_module(x).cos(x)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return -dy * get_array_module(x).sin(x)


class Clamp(Function):
    @staticmethod
    def forward(ctx, x, low, high):
        ctx.save_for_backward(x)
        ctx.low, ctx.high = low, high
        return get_array_module(x).clip(x, low, high)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        inside = True
        if ctx.low is not None:
            inside = x >= ctx.low
        if ctx.high is not None:
            inside = inside & (x <= ctx.high)
        return dy * inside, None, None


class Maximum(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return get_array_module(a).maximum(a, b)

    @staticmethod
    def backward(ctx, dy):
        a, b = ctx.saved_tensors
        share = (a > b) + 0.5 * (a == b)
        return dy * share.astype(dy.dtype), dy * (1 - share).astype(dy.dtype)


class Minimum(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return get_array_module(a).minimum(a, b)

    @staticmethod
    def backward(ctx, dy):
        a, b = ctx.saved_tensors
        share = (a < b) + 0.5 * (a == b)
        return dy * share.astype(dy.dtype), dy * (1 - share).astype(dy.dtype)


class Where(Function):
    @staticmethod
    def forward(ctx, condition, a, b):
        ctx.save_for_backward(condition)
        return get_array_module(condition).where(condition, a, b)

    @staticmethod
    def backward(ctx, dy):
        (condition,) = ctx.saved_tensors
        da = dy * condition if ctx.needs_input_grad[1] else None
        db = dy * ~condition if ctx.needs_input_grad[2] else None
        return None, da, db


def exp(input):
    """e^x elementwise."""
    return Exp.apply(input)


def log(input):
    """Natural logarithm elementwise."""
    return Log.apply(input)


def sqrt(input):
    """Square root elementwise."""
    return Sqrt.apply(input)


def rsqrt(input):
    """1 / sqrt(x) elementwise."""
    return Rsqrt.apply(input)


def tanh(input):
    """Hyperbolic tangent elementwise."""
    return Tanh.apply(input)


def sigmoid(input):
    """1 / (1 + e^-x) elementwise, computed without overflow."""
    return Sigmoid.apply(input)


def relu(input, inplace: bool = False):
    """max(x, 0) elementwise.

    ``inplace=True`` writes the result into ``input`` and returns it, as PyTorch; it is not
    differentiable (under grad mode, an input that requires grad raises).

    >>> import tinyllm, tinyllm.functional as F
    >>> x = tinyllm.tensor([-1.0, 2.0])
    >>> F.relu(x, inplace=True) is x, x
    (True, tensor([0., 2.]))
    """
    if inplace:
        return apply_inplace("relu", Relu.apply, input)
    return Relu.apply(input)


def abs(input):
    """|x| elementwise."""
    return Abs.apply(input)


def sin(input):
    """Sine elementwise."""
    return Sin.apply(input)


def cos(input):
    """Cosine elementwise."""
    return Cos.apply(input)


def clamp(input, min=None, max=None):
    """Limit values to [min, max] (either may be None)."""
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        out = input
        if min is not None:
            out = maximum(out, min)
        if max is not None:
            out = minimum(out, max)
        return out
    return Clamp.apply(input, min, max)


clip = clamp


def maximum(input, other):
    """Elementwise maximum; at ties each input gets half the gradient."""
    return Maximum.apply(input, other)


def minimum(input, other):
    """Elementwise minimum; at ties each input gets half the gradient."""
    return Minimum.apply(input, other)


def where(condition, input, other):
    """``input`` where ``condition`` is true, else ``other`` (with broadcasting)."""
    cond = condition.data if isinstance(condition, Tensor) else condition
    if getattr(cond, "dtype", None) is None or cond.dtype.kind != "b":
        raise TypeError(
            f"where: condition must be a bool tensor, got {getattr(cond, 'dtype', type(cond))}"
        )
    return Where.apply(cond, input, other)
