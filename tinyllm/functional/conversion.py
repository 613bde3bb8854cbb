"""Copies and conversions that stay on the graph.

y = x.astype(t)       dx = dy.astype(x.dtype)
y = x.to(device)      dx = dy moved back to x's device
y = clone(x)          dx = dy
"""

from __future__ import annotations

from tinyllm import backend
from tinyllm.function import Function

__all__ = ["cast", "clone", "contiguous", "to_device"]


class Cast(Function):
    @staticmethod
    def forward(ctx, x, dtype):
        ctx.dtype = x.dtype
        return x.astype(dtype)

    @staticmethod
    def backward(ctx, dy):
        return dy.astype(ctx.dtype), None


class ToDevice(Function):
    @staticmethod
    def forward(ctx, x, device):
        ctx.device = backend.device_of(x)
        return backend.to_device(x, device)

    @staticmethod
    def backward(ctx, dy):
        return backend.to_device(dy, ctx.device), None


class Clone(Function):
    @staticmethod
    def forward(ctx, x):
        return x.copy()

    @staticmethod
    def backward(ctx, dy):
        return dy


class Contiguous(Function):
    @staticmethod
    def forward(ctx, x):
        return backend.get_array_module(x).ascontiguousarray(x)

    @staticmethod
    def backward(ctx, dy):
        return dy


def cast(input, dtype):
    """``input`` converted to ``dtype`` (differentiable between float types)."""
    return Cast.apply(input, backend.as_dtype(dtype))


def to_device(input, device: str):
    """``input`` copied to ``device`` ('cpu' or 'cuda'); the gradient is copied back."""
    return ToDevice.apply(input, backend.normalize_device(device))


def clone(input):
    """A copy that owns its memory; the gradient passes through."""
    return Clone.apply(input)


def contiguous(input):
    """A C-contiguous version of ``input`` (no copy when it already is)."""
    return Contiguous.apply(input)
