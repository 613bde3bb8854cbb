"""Small helpers shared by the op files: axis normalization, argument checks, axis moves,
and PyTorch's ``inplace=True`` for activations."""

from __future__ import annotations

from tinyllm.backend import get_array_module, is_floating
from tinyllm.grad_mode import no_grad


def normalize_dim(dim: int, ndim: int, op: str, arg: str = "dim") -> int:
    """A non-negative axis from ``dim`` (negative counts from the end), or a clear IndexError."""
    size = max(ndim, 1)
    if not -size <= dim < size:
        raise IndexError(
            f"{op}: {arg}={dim} is out of range for a tensor of {ndim} dimensions "
            f"(expected in [{-size}, {size - 1}])"
        )
    return dim % size


def normalize_dims(dim, ndim: int, op: str) -> tuple[int, ...]:
    """A sorted tuple of axes from None (all), an int, or a sequence of ints."""
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, int):
        dim = (dim,)
    axes = tuple(sorted({normalize_dim(d, ndim, op) for d in dim}))
    if len(axes) != len(tuple(dim)):
        raise ValueError(f"{op}: dim {tuple(dim)} names an axis twice")
    return axes


def to_last(x, dim: int):
    """``x`` with axis ``dim`` moved last (a view): the kernels work on rows of the last axis."""
    return x if dim == x.ndim - 1 else get_array_module(x).moveaxis(x, dim, -1)


def from_last(x, dim: int):
    """The inverse of ``to_last``."""
    return x if dim == x.ndim - 1 else get_array_module(x).moveaxis(x, -1, dim)


def check_float(op: str, input) -> None:
    """Raise a TypeError naming ``op`` unless ``input`` holds floats (bfloat16 included)."""
    if not is_floating(input.dtype):
        raise TypeError(f"{op}: expected a floating-point input, got {input.dtype}")


def apply_inplace(op: str, fn, input):
    """``fn(input)`` written into ``input``, which is returned: PyTorch's ``inplace=True``.

    In-place ops are not differentiable in tinyllm (see ``tinyllm/tensor.py``): under grad
    mode a tensor that requires grad is refused, with an error naming ``op``, before anything
    is computed. Otherwise the result is computed without a graph, copied into ``input``'s
    array and the version counter is bumped (a backward that saved the old values raises).
    """
    input._check_inplace(f"{op}(inplace=True)")
    with no_grad():
        result = fn(input)
    return input._inplace(f"{op}(inplace=True)", result.data)
