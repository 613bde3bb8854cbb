"""Shape ops: they move or regroup elements, so each backward moves the gradient back.

reshape / view / flatten / (un)squeeze   dx = dy.reshape(x.shape)
transpose / permute(p)                   dx = dy.transpose(inverse of p)
expand / broadcast_to                    dx = dy summed over the expanded axes (the engine
                                         does this: it un-broadcasts every gradient)
cat([x_i], dim)                          dx_i = the slice of dy that x_i filled
stack([x_i], dim)                        dx_i = dy.take(i, dim)
split / chunk                            dx = cat of the pieces' gradients
"""

from __future__ import annotations

import math

from tinyllm.backend import get_array_module
from tinyllm.function import Function
from tinyllm.functional._util import normalize_dim
from tinyllm.tensor import Tensor

__all__ = [
    "broadcast_to",
    "cat",
    "chunk",
    "concat",
    "expand",
    "flatten",
    "permute",
    "reshape",
    "split",
    "squeeze",
    "stack",
    "transpose",
    "unsqueeze",
    "view",
]


class Reshape(Function):
    is_view = True

    @staticmethod
    def forward(ctx, x, shape):
        ctx.shape = x.shape
        return x.reshape(shape)

    @staticmethod
    def backward(ctx, dy):
        return dy.reshape(ctx.shape), None


class Permute(Function):
    is_view = True

    @staticmethod
    def forward(ctx, x, dims):
        ctx.dims = dims
        return x.transpose(dims)

    @staticmethod
    def backward(ctx, dy):
        inverse = [0] * len(ctx.dims)
        for i, d in enumerate(ctx.dims):
            inverse[d] = i
        return dy.transpose(inverse), None


class BroadcastTo(Function):
    is_view = True

    @staticmethod
    def forward(ctx, x, shape):
        return get_array_module(x).broadcast_to(x, shape)

    @staticmethod
    def backward(ctx, dy):
        return dy, None  # the engine sums dy back to x's shape


class Cat(Function):
    @staticmethod
    def forward(ctx, dim, *xs):
        ctx.dim = dim
        ctx.sizes = [x.shape[dim] for x in xs]
        return get_array_module(xs[0]).concatenate(xs, axis=dim)

    @staticmethod
    def backward(ctx, dy):
        grads, start = [], 0
        index = [slice(None)] * dy.ndim
        for size in ctx.sizes:
            index[ctx.dim] = slice(start, start + size)
            grads.append(dy[tuple(index)])
            start += size
        return (None, *grads)


class Stack(Function):
    @staticmethod
    def forward(ctx, dim, *xs):
        ctx.dim = dim
        return get_array_module(xs[0]).stack(xs, axis=dim)

    @staticmethod
    def backward(ctx, dy):
        xp = get_array_module(dy)
        return (None, *(xp.take(dy, i, axis=ctx.dim) for i in range(dy.shape[ctx.dim])))


class Split(Function):
    @staticmethod
    def forward(ctx, x, sizes, dim):
        ctx.dim = dim
        xp = get_array_module(x)
        bounds = [sum(sizes[: i + 1]) for i in range(len(sizes) - 1)]
        return tuple(xp.split(x, bounds, axis=dim))

    @staticmethod
    def backward(ctx, *dys):
        return get_array_module(dys[0]).concatenate(dys, axis=ctx.dim), None, None


def reshape(input, shape):
    """The same elements in a new shape (one entry may be -1)."""
    shape = tuple(int(s) for s in shape)
    known = math.prod(s for s in shape if s != -1)
    if shape.count(-1) > 1 or (
        -1 not in shape
        and known != input.numel()
        or -1 in shape
        and (known == 0 or input.numel() % known)
    ):
        raise RuntimeError(f"reshape: shape {shape} is invalid for input of shape {input.shape}")
    return Reshape.apply(input, shape)


view = reshape


def flatten(input, start_dim: int = 0, end_dim: int = -1):
    """Merge dims ``start_dim..end_dim`` into one."""
    if input.ndim == 0:
        return reshape(input, (1,))
    start = normalize_dim(start_dim, input.ndim, "flatten", "start_dim")
    end = normalize_dim(end_dim, input.ndim, "flatten", "end_dim")
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    s = input.shape
    return reshape(input, s[:start] + (math.prod(s[start : end + 1]),) + s[end + 1 :])


def permute(input, dims):
    """Reorder the dims: output dim i is input dim ``dims[i]``."""
    dims = tuple(normalize_dim(d, input.ndim, "permute", "dims") for d in dims)
    if sorted(dims) != list(range(input.ndim)):
        raise RuntimeError(
            f"permute: dims {dims} is not a permutation of the {input.ndim} dims of {input.shape}"
        )
    return Permute.apply(input, dims)


def transpose(input, dim0: int, dim1: int):
    """Swap two dims."""
    dims = list(range(input.ndim))
    a = normalize_dim(dim0, input.ndim, "transpose", "dim0")
    b = normalize_dim(dim1, input.ndim, "transpose", "dim1")
    dims[a], dims[b] = dims[b], dims[a]
    return Permute.apply(input, tuple(dims))


def unsqueeze(input, dim: int):
    """Insert a size-1 dim at ``dim``."""
    d = normalize_dim(dim, input.ndim + 1, "unsqueeze")
    return Reshape.apply(input, input.shape[:d] + (1,) + input.shape[d:])


def squeeze(input, dim=None):
    """Remove size-1 dims (all of them, or those named by ``dim``)."""
    if dim is None:
        axes = {i for i, s in enumerate(input.shape) if s == 1}
    else:
        dims = (dim,) if isinstance(dim, int) else dim
        axes = {normalize_dim(d, input.ndim, "squeeze") for d in dims}
        axes = {a for a in axes if input.shape[a] == 1}
    return Reshape.apply(input, tuple(s for i, s in enumerate(input.shape) if i not in axes))


def broadcast_to(input, shape):
    """A read-only broadcast view of ``input`` with ``shape``."""
    shape = tuple(shape)
    try:
        get_array_module(input.data).broadcast_shapes(input.shape, shape)
    except ValueError:
        raise RuntimeError(f"broadcast_to: cannot broadcast {input.shape} to {shape}") from None
    return BroadcastTo.apply(input, shape)


def expand(input, shape):
    """Broadcast to ``shape``; -1 keeps that dim's size."""
    shape = tuple(shape)
    offset = len(shape) - input.ndim
    if offset < 0:
        raise RuntimeError(f"expand: shape {shape} has fewer dims than the input {input.shape}")
    shape = tuple(input.shape[i - offset] if s == -1 else s for i, s in enumerate(shape))
    return broadcast_to(input, shape)


def _check_same(tensors, op: str) -> None:
    if not tensors:
        raise ValueError(f"{op}: expected a non-empty sequence of tensors")
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: element {i} is a {type(t).__name__}, expected a Tensor")


def cat(tensors, dim: int = 0):
    """Concatenate along an existing dim."""
    tensors = list(tensors)
    _check_same(tensors, "cat")
    d = normalize_dim(dim, tensors[0].ndim, "cat")
    ref = tensors[0].shape
    for i, t in enumerate(tensors):
        if t.ndim != len(ref) or any(t.shape[k] != ref[k] for k in range(len(ref)) if k != d):
            raise RuntimeError(
                f"cat: tensor {i} has shape {t.shape}, incompatible with {ref} along dim {dim}"
            )
    return Cat.apply(d, *tensors)


concat = cat


def stack(tensors, dim: int = 0):
    """Stack along a new dim."""
    tensors = list(tensors)
    _check_same(tensors, "stack")
    for i, t in enumerate(tensors):
        if t.shape != tensors[0].shape:
            raise RuntimeError(
                f"stack: tensor {i} has shape {t.shape}, expected {tensors[0].shape}"
            )
    d = normalize_dim(dim, tensors[0].ndim + 1, "stack")
    return Stack.apply(d, *tensors)


def split(input, split_size_or_sections, dim: int = 0):
    """Split into pieces of ``split_size`` (the last may be smaller), or of the given sizes."""
    d = normalize_dim(dim, input.ndim, "split")
    n = input.shape[d]
    if isinstance(split_size_or_sections, int):
        size = split_size_or_sections
        if size <= 0:
            raise ValueError(f"split: split_size must be positive, got {size}")
        sizes = [size] * (n // size) + ([n % size] if n % size else [])
    else:
        sizes = [int(s) for s in split_size_or_sections]
        if sum(sizes) != n:
            raise RuntimeError(
                f"split: sizes {sizes} do not sum to {n} (dim {dim} of {input.shape})"
            )
    if len(sizes) <= 1:
        return (input,) if sizes else ()
    return Split.apply(input, sizes, d)


def chunk(input, chunks: int, dim: int = 0):
    """Split into ``chunks`` pieces of equal size (the last may be smaller), as PyTorch."""
    if chunks <= 0:
        raise ValueError(f"chunk: chunks must be positive, got {chunks}")
    n = input.shape[normalize_dim(dim, input.ndim, "chunk")]
    return split(input, max(-(-n // chunks), 1), dim)
