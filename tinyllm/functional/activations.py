"""Activations: GELU, SiLU, and the gated linear units GLU, ReGLU, GeGLU, SwiGLU.

Elementwise, with Phi and phi the standard normal CDF and density, sigma the logistic sigmoid:

    gelu(x)        = x Phi(x) = x (1 + erf(x / sqrt 2)) / 2
        gelu'(x)   = Phi(x) + x phi(x),            phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
    gelu_tanh(x)   = x (1 + tanh u) / 2,           u = sqrt(2/pi) (x + 0.044715 x^3)
        gelu_tanh' = (1 + t) / 2 + x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2) / 2,  t = tanh u
    silu(x)        = x sigma(x)
        silu'(x)   = sigma(x) (1 + x (1 - sigma(x)))
    logsigmoid(x)  = log sigma(x) = -softplus(-x) = min(x, 0) - log(1 + exp(-|x|))
        logsigmoid'(x) = 1 - sigma(x) = sigma(-x)

Gated units take one tensor, split it into two equal halves along ``dim`` and multiply one
half by an activation of the other. Two conventions exist; both are kept, as their users
expect:

    glu(x)    = a * sigma(b)          a, b = x.chunk(2, dim)   (PyTorch's F.glu: gate second)
    reglu(x)  = relu(gate) * up       gate, up = x.chunk(2, dim)
    geglu(x)  = gelu(gate) * up       (``approximate="tanh"`` for the tanh GELU)
    swiglu(x) = silu(gate) * up

reglu/geglu/swiglu follow Shazeer's "GLU Variants Improve Transformer" (2020): FFN(x) =
(act(x W) * x V) W2, so for the fused projection ``x @ [W; V]^T`` of width 2F the *first*
half is the gate. Backward of ``y = act(gate) * up``:

    dgate = dy * up * act'(gate),     dup = dy * act(gate)

and the two halves are concatenated back along ``dim``. Each gated unit is one Function that
saves only its input. gelu and silu run ``tinyllm.kernels.activation_forward/backward``,
swiglu and geglu ``tinyllm.kernels.glu_forward/backward`` (reference, Numba and CUDA tiers;
``kernels/glu.py`` holds the readable reference); glu, reglu and logsigmoid are written here.
logsigmoid is one Function, not log(sigmoid(x)): that composite rounds sigma(x) to 1 for
x > ~37 (float64) and underflows to log(0) for x < ~-745; the form above never exponentiates a
positive number and has no kink at 0.
"""

from __future__ import annotations

import math

from tinyllm import kernels
from tinyllm.backend import get_array_module
from tinyllm.function import Function
from tinyllm.functional._util import apply_inplace, check_float, from_last, normalize_dim, to_last

__all__ = ["geglu", "gelu", "glu", "logsigmoid", "reglu", "silu", "swiglu"]

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_TANH_C = 0.044715


# ---------------------------------------------------------------- elementwise helpers (arrays)


def _sigmoid(x):
    """1 / (1 + e^-x) without overflow for either sign of x."""
    xp = get_array_module(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _halves(x, dim: int):
    """The two halves of ``x`` along ``dim`` (views, no copy)."""
    n = x.shape[dim] // 2
    first = (slice(None),) * dim + (slice(0, n),)
    second = (slice(None),) * dim + (slice(n, None),)
    return x[first], x[second]


def _join(d_first, d_second, dim: int):
    """The gradient of ``x`` from the gradients of its two halves."""
    return get_array_module(d_first).concatenate([d_first, d_second], axis=dim)


# ---------------------------------------------------------------- Functions


class _KernelActivation(Function):
    """y = act(x) elementwise through ``tinyllm.kernels.activation_forward/backward``."""

    @staticmethod
    def forward(ctx, x, activation):
        ctx.save_for_backward(x)  # x: input
        ctx.activation = activation
        return kernels.activation_forward(x, activation)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        # y = act(x)  =>  dx = dy * act'(x)
        return kernels.activation_backward(dy, x, ctx.activation), None


class GELU(_KernelActivation):
    """gelu(x) = x Phi(x) (exact) or 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""


class SiLU(_KernelActivation):
    """silu(x) = x sigma(x);  dx = dy sigma(x) (1 + x (1 - sigma(x)))."""


class LogSigmoid(Function):
    """y = log sigma(x) = min(x, 0) - log1p(exp(-|x|));  dx = dy sigma(-x)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)  # x: input
        xp = get_array_module(x)
        return (xp.minimum(x, 0) - xp.log1p(xp.exp(-xp.abs(x)))).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        # y = log sigma(x)  =>  dx = dy (1 - sigma(x)) = dy sigma(-x)
        return (dy * _sigmoid(-x)).astype(x.dtype, copy=False)


class GLU(Function):
    @staticmethod
    def forward(ctx, x, dim):
        ctx.save_for_backward(x)  # x: input [..., 2F, ...]
        ctx.dim = dim
        a, b = _halves(x, dim)
        return a * _sigmoid(b)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        a, b = _halves(x, ctx.dim)
        s = _sigmoid(b)
        # y = a sigma(b)  =>  da = dy sigma(b),  db = dy a sigma(b) (1 - sigma(b))
        da = dy * s
        db = dy * a * s * (1 - s)
        return _join(da, db, ctx.dim), None


class ReGLU(Function):
    @staticmethod
    def forward(ctx, x, dim):
        ctx.save_for_backward(x)  # x: input [..., 2F, ...]
        ctx.dim = dim
        gate, up = _halves(x, dim)
        return get_array_module(x).maximum(gate, 0) * up

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        gate, up = _halves(x, ctx.dim)
        active = gate > 0
        # y = relu(gate) up  =>  dgate = dy up [gate > 0],  dup = dy relu(gate)
        dgate = dy * up * active
        dup = dy * gate * active
        return _join(dgate, dup, ctx.dim), None


class _KernelGLU(Function):
    """act(gate) * up on the two halves of ``dim``, through ``tinyllm.kernels.glu_*``."""

    @staticmethod
    def forward(ctx, x, dim, activation):
        ctx.save_for_backward(x)  # x: input [..., 2F, ...]
        ctx.dim, ctx.activation = dim, activation
        return from_last(kernels.glu_forward(to_last(x, dim), activation), dim)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        d = ctx.dim
        # y = act(gate) up  =>  dgate = dy up act'(gate),  dup = dy act(gate)
        dx = kernels.glu_backward(to_last(dy, d), to_last(x, d), ctx.activation)
        return from_last(dx, d), None, None


class GeGLU(_KernelGLU):
    """y = gelu(gate) * up (``approximate``: exact erf or tanh)."""


class SwiGLU(_KernelGLU):
    """y = silu(gate) * up = gate sigma(gate) up;
    dgate = dy up sigma(gate) (1 + gate (1 - sigma(gate))),  dup = dy gate sigma(gate)."""


# ---------------------------------------------------------------- functional wrappers


def _check_approximate(op: str, approximate) -> str:
    if approximate not in ("none", "tanh"):
        raise ValueError(f"{op}: approximate must be 'none' or 'tanh', got {approximate!r}")
    return approximate


def _gated_dim(op: str, input, dim: int) -> int:
    """``dim`` normalized, after checking the input splits into two equal halves there."""
    check_float(op, input)
    if input.ndim == 0:
        raise ValueError(f"{op}: expected an input with at least 1 dim, got a 0-d tensor")
    d = normalize_dim(dim, input.ndim, op)
    if input.shape[d] % 2:
        raise ValueError(
            f"{op}: the halved dim must have an even size, but dim {dim} of the input of shape "
            f"{tuple(input.shape)} has size {input.shape[d]}"
        )
    return d


def gelu(input, approximate: str = "none"):
    """Gaussian error linear unit ``x * Phi(x)``; ``approximate="tanh"`` for the tanh form.

    >>> import tinyllm, tinyllm.functional as F
    >>> F.gelu(tinyllm.tensor([0.0, 1.0]))
    tensor([0.    , 0.8413])
    """
    check_float("gelu", input)
    approximate = _check_approximate("gelu", approximate)
    return GELU.apply(input, "gelu_tanh" if approximate == "tanh" else "gelu")


def silu(input, inplace: bool = False):
    """Sigmoid linear unit (swish) ``x * sigmoid(x)``.

    ``inplace=True`` writes the result into ``input`` and returns it, as PyTorch; it is not
    differentiable (under grad mode, an input that requires grad raises).

    >>> import tinyllm, tinyllm.functional as F
    >>> F.silu(tinyllm.tensor([0.0, 1.0]))
    tensor([0.    , 0.7311])
    """
    check_float("silu", input)
    if inplace:
        return apply_inplace("silu", lambda x: SiLU.apply(x, "silu"), input)
    return SiLU.apply(input, "silu")


def logsigmoid(input):
    """``log(sigmoid(x))`` elementwise, numerically stable for any ``x`` (``-softplus(-x)``).

    >>> import tinyllm, tinyllm.functional as F
    >>> F.logsigmoid(tinyllm.tensor([0.0, -50.0]))
    tensor([ -0.6931, -50.    ])
    """
    check_float("logsigmoid", input)
    return LogSigmoid.apply(input)


def glu(input, dim: int = -1):
    """PyTorch's gated linear unit: ``a * sigmoid(b)`` with ``a, b = input.chunk(2, dim)``.

    >>> import tinyllm, tinyllm.functional as F
    >>> F.glu(tinyllm.tensor([2.0, 0.0]))
    tensor([1.])
    """
    return GLU.apply(input, _gated_dim("glu", input, dim))


def reglu(input, dim: int = -1):
    """``relu(gate) * up`` with ``gate, up = input.chunk(2, dim)`` (gate first).

    >>> import tinyllm, tinyllm.functional as F
    >>> F.reglu(tinyllm.tensor([-1.0, 2.0, 3.0, 3.0]))
    tensor([0., 6.])
    """
    return ReGLU.apply(input, _gated_dim("reglu", input, dim))


def geglu(input, dim: int = -1, approximate: str = "none"):
    """``gelu(gate, approximate) * up`` with ``gate, up = input.chunk(2, dim)`` (gate first).

    >>> import tinyllm, tinyllm.functional as F
    >>> F.geglu(tinyllm.tensor([1.0, 2.0]))
    tensor([1.6827])
    """
    d = _gated_dim("geglu", input, dim)
    kind = "gelu_tanh" if _check_approximate("geglu", approximate) == "tanh" else "gelu"
    return GeGLU.apply(input, d, kind)


def swiglu(input, dim: int = -1):
    """``silu(gate) * up`` with ``gate, up = input.chunk(2, dim)`` (gate first), the
    feed-forward activation of LLaMA-style models, applied to the fused [.., 2F] projection.

    >>> import tinyllm, tinyllm.functional as F
    >>> F.swiglu(tinyllm.tensor([1.0, 2.0]))
    tensor([1.4621])
    """
    return SwiGLU.apply(input, _gated_dim("swiglu", input, dim), "silu")
