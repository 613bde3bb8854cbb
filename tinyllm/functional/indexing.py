"""Indexing ops: the forward picks elements, the backward puts the gradient back.

    y = x[idx]             dx = zeros; dx[idx] += dy   (scatter-add: repeated indices add up)
    y = gather(x, d, idx)  dx = zeros; scatter-add dy into dx along d at idx
    y = masked_fill(x,m,v) dx = dy * (1 - m)
    y = tril(x, k)         dx = tril(dy, k)            (triu likewise)

Basic indexing (ints, slices, None, ...) returns a view and its backward is a plain
assignment; advanced indexing (integer arrays, boolean masks) needs scatter-add.
"""

from __future__ import annotations

from tinyllm import backend
from tinyllm.backend import get_array_module
from tinyllm.function import Function
from tinyllm.functional._util import normalize_dim
from tinyllm.tensor import Tensor

__all__ = ["gather", "index", "masked_fill", "tril", "triu"]


class BasicIndex(Function):
    is_view = True

    @staticmethod
    def forward(ctx, x, index):
        ctx.shape, ctx.index = x.shape, index
        return x[index]

    @staticmethod
    def backward(ctx, dy):
        dx = get_array_module(dy).zeros(ctx.shape, dtype=dy.dtype)
        dx[ctx.index] = dy
        return dx, None


class AdvancedIndex(Function):
    @staticmethod
    def forward(ctx, x, index):
        ctx.shape, ctx.index = x.shape, index
        return x[index]

    @staticmethod
    def backward(ctx, dy):
        dx = get_array_module(dy).zeros(ctx.shape, dtype=dy.dtype)
        backend.scatter_add(dx, ctx.index, dy)
        return dx, None


class Gather(Function):
    @staticmethod
    def forward(ctx, x, dim, index):
        xp = get_array_module(x)
        # PyTorch allows index to be smaller than x in the other dims: take that corner of x
        corner = tuple(slice(None) if d == dim else slice(0, index.shape[d]) for d in range(x.ndim))
        ctx.shape, ctx.dim, ctx.corner, ctx.index = x.shape, dim, corner, index
        return xp.take_along_axis(x[corner], index, axis=dim)

    @staticmethod
    def backward(ctx, dy):
        xp = get_array_module(dy)
        dx = xp.zeros(ctx.shape, dtype=dy.dtype)
        # open (broadcastable) grids of the other dims; CuPy's indices has no sparse=
        shape = ctx.index.shape
        grid = [
            xp.arange(n).reshape((1,) * d + (n,) + (1,) * (len(shape) - d - 1))
            for d, n in enumerate(shape)
        ]
        grid[ctx.dim] = ctx.index
        backend.scatter_add(dx, tuple(grid), dy)
        return dx, None, None


class MaskedFill(Function):
    @staticmethod
    def forward(ctx, x, mask, value):
        ctx.save_for_backward(mask)
        return get_array_module(x).where(mask, x.dtype.type(value), x)

    @staticmethod
    def backward(ctx, dy):
        (mask,) = ctx.saved_tensors
        return dy * ~mask, None, None


class Triangle(Function):
    @staticmethod
    def forward(ctx, x, diagonal, upper):
        xp = get_array_module(x)
        ctx.diagonal, ctx.upper = diagonal, upper
        return (xp.triu if upper else xp.tril)(x, diagonal)

    @staticmethod
    def backward(ctx, dy):
        xp = get_array_module(dy)
        return (xp.triu if ctx.upper else xp.tril)(dy, ctx.diagonal), None, None


def _is_basic(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return all(
        p is None or p is Ellipsis or isinstance(p, (int, slice)) and not isinstance(p, bool)
        for p in parts
    )


def _unwrap_index(index, xp):
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(_unwrap_index(p, xp) for p in index)
    if isinstance(index, list):
        return xp.asarray(index)
    return index


def index(input, idx):
    """``input[idx]``: basic and advanced indexing, with scatter-add backward."""
    xp = get_array_module(input.data)
    idx = _unwrap_index(idx, xp)
    if _is_basic(idx):
        return BasicIndex.apply(input, idx)
    parts = idx if isinstance(idx, tuple) else (idx,)
    for p in parts:
        if hasattr(p, "dtype") and p.dtype.kind not in "biu":
            raise IndexError(
                f"index: tensors used as indices must be integer or bool, got {p.dtype}"
            )
    return AdvancedIndex.apply(input, idx)


def gather(input, dim: int, index):
    """``out[i][j] = input[index[i][j]][j]`` for dim 0 (and likewise for other dims)."""
    d = normalize_dim(dim, input.ndim, "gather")
    idx = index.data if isinstance(index, Tensor) else index
    if idx.ndim != input.ndim:
        raise RuntimeError(
            f"gather: index has {idx.ndim} dims, input has {input.ndim} (shapes {idx.shape}, "
            f"{input.shape})"
        )
    for k in range(input.ndim):
        if k != d and idx.shape[k] > input.shape[k]:
            raise RuntimeError(
                f"gather: index shape {idx.shape} exceeds input shape {input.shape} in dim {k}"
            )
    if idx.dtype.kind not in "iu":
        raise TypeError(f"gather: index must be an integer tensor, got {idx.dtype}")
    return Gather.apply(input, d, idx)


def masked_fill(input, mask, value):
    """``value`` where ``mask`` is true (broadcast to input's shape), else ``input``."""
    m = mask.data if isinstance(mask, Tensor) else mask
    if m.dtype.kind != "b":
        raise TypeError(f"masked_fill: mask must be a bool tensor, got {m.dtype}")
    xp = get_array_module(input.data)
    if xp.broadcast_shapes(m.shape, input.shape) != input.shape:
        raise RuntimeError(
            f"masked_fill: mask of shape {m.shape} does not broadcast to {input.shape}"
        )
    if isinstance(value, Tensor):
        value = value.item()
    return MaskedFill.apply(input, m, value)


def tril(input, diagonal: int = 0):
    """Lower triangle (elements above ``diagonal`` set to 0) of the last two dims."""
    if input.ndim < 2:
        raise RuntimeError(f"tril: input must have at least 2 dims, got shape {input.shape}")
    return Triangle.apply(input, diagonal, False)


def triu(input, diagonal: int = 0):
    """Upper triangle (elements below ``diagonal`` set to 0) of the last two dims."""
    if input.ndim < 2:
        raise RuntimeError(f"triu: input must have at least 2 dims, got shape {input.shape}")
    return Triangle.apply(input, diagonal, True)
