"""Parameter initializers (in place, no graph), PyTorch's names and formulas.

fan_in / fan_out of a weight [out, in, *k] are in * prod(k) and out * prod(k).
``kaiming_uniform_(w, a=sqrt(5))`` is what ``nn.Linear`` uses: U(-b, b) with
b = sqrt(6 / ((1 + a^2) fan_in)) = 1 / sqrt(fan_in).
"""

from __future__ import annotations

import math

from tinyllm import backend
from tinyllm.grad_mode import no_grad
from tinyllm.tensor import Tensor


def _fans(t: Tensor) -> tuple[int, int]:
    if t.ndim < 2:
        raise ValueError(f"fan in/out need a tensor with >= 2 dims, got shape {t.shape}")
    receptive = math.prod(t.shape[2:]) if t.ndim > 2 else 1
    return t.shape[1] * receptive, t.shape[0] * receptive


def uniform_(t: Tensor, a: float = 0.0, b: float = 1.0) -> Tensor:
    """U[a, b) in place, drawn on ``t``'s device (CuPy's generator has no ``uniform``)."""
    values = backend.uniform(backend.generator(t.device), a, b, t.shape, t.dtype)
    with no_grad():
        return t.copy_(values)


def normal_(t: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    """N(mean, std^2) in place, drawn on ``t``'s device (CuPy's generator has no ``normal``)."""
    values = backend.normal(backend.generator(t.device), mean, std, t.shape, t.dtype)
    with no_grad():
        return t.copy_(values)


def zeros_(t: Tensor) -> Tensor:
    with no_grad():
        return t.zero_()


def ones_(t: Tensor) -> Tensor:
    with no_grad():
        return t.fill_(1.0)


def constant_(t: Tensor, value: float) -> Tensor:
    with no_grad():
        return t.fill_(value)


def kaiming_uniform_(t: Tensor, a: float = 0.0, mode: str = "fan_in") -> Tensor:
    fan_in, fan_out = _fans(t)
    fan = fan_in if mode == "fan_in" else fan_out
    bound = math.sqrt(3.0) * math.sqrt(2.0 / (1 + a * a)) / math.sqrt(fan)
    return uniform_(t, -bound, bound)


def xavier_uniform_(t: Tensor, gain: float = 1.0) -> Tensor:
    fan_in, fan_out = _fans(t)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(t, -bound, bound)


def xavier_normal_(t: Tensor, gain: float = 1.0) -> Tensor:
    fan_in, fan_out = _fans(t)
    return normal_(t, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def trunc_normal_(t: Tensor, mean=0.0, std=1.0, a=-2.0, b=2.0) -> Tensor:
    """Normal samples redrawn until inside [a, b] (absolute bounds, as PyTorch).

    Device-side: out-of-range entries are replaced from a fresh draw with ``where`` (CuPy's
    generator has no ``normal`` and boolean-mask assignment sizes are host syncs); one host
    sync per round (``bad.any()``), a few rounds at initialization.
    """
    gen = backend.generator(t.device)
    xp = backend.xp_for(t.device)
    out = backend.normal(gen, mean, std, t.shape)
    bad = (out < a) | (out > b)
    while bool(bad.any()):
        out = xp.where(bad, backend.normal(gen, mean, std, t.shape), out)
        bad = (out < a) | (out > b)
    with no_grad():
        return t.copy_(out.astype(t.dtype))
