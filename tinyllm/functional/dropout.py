"""Dropout: zero each element with probability p, scale the survivors by 1 / (1 - p).

Forward (inverted dropout, so that E[y] = x and nothing changes at evaluation time):

    m_i ~ Bernoulli(1 - p)          (drawn from tinyllm's global generator for the device)
    y_i = x_i m_i / (1 - p)

Backward, with the same mask:

    dx_i = dy_i m_i / (1 - p)

Only the mask is saved, as a boolean array (one byte per element, not a float). ``p = 0`` or
``training=False`` return the input itself; ``p = 1`` gives zeros (and zero gradients). The
mask depends only on the generator's state and the shape, not on the dtype: after
``tinyllm.manual_seed(s)`` the same call draws the same mask. Kernel tiers: reference only.
"""

from __future__ import annotations

import numpy as np

from tinyllm.backend import generator
from tinyllm.function import Function

__all__ = ["dropout"]


class Dropout(Function):
    @staticmethod
    def forward(ctx, x, keep, scale):
        # x: any shape; keep: bool, same shape (True = kept); scale = 1 / (1 - p)
        ctx.save_for_backward(keep)  # keep: bool mask, same shape as x
        ctx.scale = scale
        return x * keep * x.dtype.type(scale)

    @staticmethod
    def backward(ctx, dy):
        (keep,) = ctx.saved_tensors
        # y = x m / (1 - p)  =>  dx = dy m / (1 - p)
        return dy * keep * dy.dtype.type(ctx.scale), None, None


def dropout_mask(shape, p: float, device: str = "cpu"):
    """A boolean keep-mask of ``shape``: each element True with probability ``1 - p``.

    Draws ``prod(shape)`` float32 uniforms from ``tinyllm.backend.generator(device)``.
    """
    return generator(device).random(shape, dtype=np.float32) >= p


def dropout(input, p: float = 0.5, training: bool = True, inplace: bool = False):
    """Zero elements with probability ``p`` and scale the rest by ``1 / (1 - p)``.

    PyTorch's semantics (inverted dropout). Seed with ``tinyllm.manual_seed`` for a
    reproducible mask. ``inplace=True`` is not supported.

    >>> import tinyllm, tinyllm.functional as F
    >>> x = tinyllm.ones(4)
    >>> F.dropout(x, p=0.5, training=False) is x
    True
    >>> F.dropout(x, p=1.0)
    tensor([0., 0., 0., 0.])
    """
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)):
        raise TypeError(f"dropout: p must be a number in [0, 1], got {p!r}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: probability p has to be between 0 and 1, but got {p}")
    if inplace:
        raise NotImplementedError("dropout: inplace=True is not supported")
    if input.dtype.kind != "f" and input.dtype.name != "bfloat16":
        raise TypeError(f"dropout: expected a floating-point input, got {input.dtype}")
    if not training or p == 0:
        return input
    keep = dropout_mask(input.shape, float(p), input.device)
    scale = 0.0 if p == 1 else 1.0 / (1.0 - float(p))
    return Dropout.apply(input, keep, scale)
