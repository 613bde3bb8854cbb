"""Tensor constructors with PyTorch's names and defaults (float32 unless told otherwise)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyllm import backend
from tinyllm.tensor import Tensor


def _shape(size: tuple) -> tuple:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    for s in size:
        if not isinstance(s, (int, np.integer)) or s < 0:
            raise ValueError(f"expected a shape of non-negative ints, got {size}")
    return tuple(int(s) for s in size)


def _finish(array, requires_grad: bool) -> Tensor:
    return Tensor(array, requires_grad=requires_grad)


def tensor(data: Any, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A new tensor holding a copy of ``data`` (nested lists, numbers or arrays).

    Python floats become float32, ints int64 and bools bool (as in PyTorch); an array keeps
    its dtype unless ``dtype`` is given.
    """
    if isinstance(data, Tensor):
        data = data.data
    device = backend.normalize_device(device if device is not None else _device_of(data))
    xp = backend.xp_for(device)
    if dtype is not None:
        array = xp.array(
            backend.to_numpy(data) if device == "cpu" else data, dtype=backend.as_dtype(dtype)
        )
    elif hasattr(data, "dtype"):
        array = xp.array(data)
    else:
        array = np.array(data)
        if array.dtype.kind == "f":
            array = array.astype(backend.DEFAULT_DTYPE)
        array = xp.asarray(array)
    return _finish(array, requires_grad)


def _device_of(data) -> str:
    return (
        "cpu"
        if isinstance(data, (np.ndarray, list, tuple, int, float, bool))
        else backend.device_of(data)
    )


def as_tensor(data: Any, dtype=None, device=None) -> Tensor:
    """Like ``tensor`` but shares memory with an array of the right dtype and device."""
    if isinstance(data, Tensor) and dtype is None and device is None:
        return data
    if isinstance(data, np.ndarray) and device in (None, "cpu") and dtype in (None, data.dtype):
        return Tensor(data)
    return tensor(data, dtype=dtype, device=device)


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor sharing memory with a NumPy array."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(array).__name__}")
    return Tensor(array)


def _xp(device):
    return backend.xp_for(backend.normalize_device(device))


def zeros(*size, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _finish(_xp(device).zeros(_shape(size), dtype=backend.as_dtype(dtype)), requires_grad)


def ones(*size, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _finish(_xp(device).ones(_shape(size), dtype=backend.as_dtype(dtype)), requires_grad)


def empty(*size, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _finish(_xp(device).empty(_shape(size), dtype=backend.as_dtype(dtype)), requires_grad)


def full(size, fill_value, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    if dtype is None:
        dtype = (
            backend.DEFAULT_DTYPE if isinstance(fill_value, float) else np.asarray(fill_value).dtype
        )
    array = _xp(device).full(_shape((size,)), fill_value, dtype=backend.as_dtype(dtype))
    return _finish(array, requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """Values from ``start`` to ``end`` (exclusive); int64 for integer arguments."""
    if end is None:
        start, end = 0, start
    if dtype is None:
        ints = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
        dtype = np.int64 if ints else backend.DEFAULT_DTYPE
    array = _xp(device).arange(start, end, step, dtype=backend.as_dtype(dtype))
    return _finish(array, requires_grad)


def linspace(
    start, end, steps: int, dtype=None, device=None, requires_grad: bool = False
) -> Tensor:
    array = _xp(device).linspace(start, end, steps, dtype=backend.as_dtype(dtype))
    return _finish(array, requires_grad)


def eye(
    n: int, m: int | None = None, dtype=None, device=None, requires_grad: bool = False
) -> Tensor:
    return _finish(_xp(device).eye(n, m, dtype=backend.as_dtype(dtype)), requires_grad)


def randn(*size, dtype=None, device=None, requires_grad: bool = False, generator=None) -> Tensor:
    """Standard normal samples from tinyllm's seeded generator (``manual_seed``)."""
    device = backend.normalize_device(device)
    gen = generator or backend.generator(device)
    array = gen.standard_normal(_shape(size), dtype=np.float64).astype(backend.as_dtype(dtype))
    return _finish(array, requires_grad)


def rand(*size, dtype=None, device=None, requires_grad: bool = False, generator=None) -> Tensor:
    """Uniform samples in [0, 1)."""
    device = backend.normalize_device(device)
    gen = generator or backend.generator(device)
    array = gen.random(_shape(size), dtype=np.float64).astype(backend.as_dtype(dtype))
    return _finish(array, requires_grad)


def randint(low, high=None, size=(), dtype=np.int64, device=None, generator=None) -> Tensor:
    """Random integers in [low, high)."""
    if high is None:
        low, high = 0, low
    device = backend.normalize_device(device)
    gen = generator or backend.generator(device)
    return Tensor(gen.integers(low, high, size=_shape((size,)), dtype=dtype))


def randperm(n: int, device=None, generator=None) -> Tensor:
    """A random permutation of 0..n-1 (int64), on either device (CuPy has no ``permutation``)."""
    gen = generator or backend.generator(backend.normalize_device(device))
    return Tensor(backend.permutation(gen, int(n)))


def _like(t: Tensor, dtype, device):
    return dict(
        dtype=dtype if dtype is not None else t.dtype,
        device=device if device is not None else t.device,
    )


def zeros_like(input: Tensor, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return zeros(input.shape, requires_grad=requires_grad, **_like(input, dtype, device))


def ones_like(input: Tensor, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return ones(input.shape, requires_grad=requires_grad, **_like(input, dtype, device))


def empty_like(input: Tensor, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return empty(input.shape, requires_grad=requires_grad, **_like(input, dtype, device))


def full_like(input: Tensor, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    return full(input.shape, fill_value, requires_grad=requires_grad, **_like(input, dtype, device))


def randn_like(input: Tensor, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return randn(input.shape, requires_grad=requires_grad, **_like(input, dtype, device))


def rand_like(input: Tensor, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return rand(input.shape, requires_grad=requires_grad, **_like(input, dtype, device))
