"""Array backends: NumPy on the CPU, CuPy on a GPU, and every difference between the two.

A Tensor's array module (``xp``) decides where its ops run. Ops call
``xp = get_array_module(array)`` once and then use ``xp`` like NumPy. The few places where
NumPy and CuPy disagree (scatter-add, ``erf``, random numbers, 0-d results) live here and
nowhere else.

CuPy is optional. Detecting a GPU never raises and never imports CuPy at ``import tinyllm``;
the first call that needs to know (``cuda_is_available()``, ``device="cuda"``) does it once.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import numpy as np

DEFAULT_DTYPE = np.dtype(np.float32)
FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


@functools.lru_cache(maxsize=1)
def _cupy():
    """The cupy module when it imports and a GPU answers, else None (checked once)."""
    try:
        import cupy

        if cupy.is_available():
            return cupy
    except Exception:  # any failure (no wheel, no driver, no device) means: no GPU here
        pass
    return None


def cuda_is_available() -> bool:
    """True when CuPy is installed and a GPU is usable."""
    return _cupy() is not None


def get_array_module(array: Any):
    """numpy or cupy, whichever owns ``array`` (numpy for Python scalars and lists).

    Called by every op: it never imports CuPy, it only looks for it among loaded modules.
    """
    if isinstance(array, np.ndarray):
        return np
    cp = sys.modules.get("cupy")
    return cp if cp is not None and isinstance(array, cp.ndarray) else np


def normalize_device(device: Any) -> str:
    """'cpu' or 'cuda' from 'cpu', 'cuda', 'cuda:0', None (cpu) or a Tensor's device."""
    if device is None:
        return "cpu"
    name = str(device).lower()
    if name == "cpu":
        return "cpu"
    if name in ("cuda", "cuda:0", "gpu"):
        if not cuda_is_available():
            raise RuntimeError(
                f"device {device!r} requested, but CUDA is not available "
                "(install the 'gpu' extra, cupy-cuda12x, on a machine with an NVIDIA GPU)"
            )
        return "cuda"
    raise ValueError(f"unknown device {device!r}: expected 'cpu' or 'cuda'")


def device_of(array: Any) -> str:
    """'cpu' for a NumPy array, 'cuda' for a CuPy array."""
    return "cpu" if get_array_module(array) is np else "cuda"


def xp_for(device: str):
    """The array module for a normalized device name."""
    return np if device == "cpu" else _cupy()


def to_device(array: Any, device: str):
    """``array`` moved to ``device`` ('cpu' or 'cuda'); no copy when already there."""
    if device == "cpu":
        if isinstance(array, np.ndarray):
            return array
        return array.get() if hasattr(array, "get") else np.asarray(array)
    return _cupy().asarray(array)


def to_numpy(array: Any) -> np.ndarray:
    """A NumPy array from a NumPy or CuPy array (copies from the GPU)."""
    return to_device(array, "cpu")


def as_dtype(dtype: Any) -> np.dtype:
    """A NumPy dtype from a dtype, a type or a name ('float32', 'bfloat16' via ml_dtypes)."""
    if dtype is None:
        return DEFAULT_DTYPE
    if isinstance(dtype, str) and dtype == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dtype)


def is_floating(dtype: np.dtype) -> bool:
    """True for floating dtypes (including bfloat16 from ml_dtypes)."""
    return np.dtype(dtype).kind == "f" or np.dtype(dtype).name == "bfloat16"


# ---------------------------------------------------------------- NumPy/CuPy differences


def scatter_add(target, index, values) -> None:
    """``target[index] += values`` with repeated indices accumulated (in place).

    Rows selected by one integer array (embedding and gather backwards) are summed with a sort
    and ``np.add.reduceat``: 2-3x faster than ``np.add.at`` at [1024, 256] (same sums, in
    another order).
    """
    xp = get_array_module(target)
    if xp is np:
        if isinstance(index, tuple) and len(index) == 1:
            index = index[0]
        if (
            isinstance(index, np.ndarray)
            and index.ndim == 1
            and index.dtype.kind in "iu"
            and index.size
            and values.shape[:1] == index.shape
        ):
            if index.dtype.kind == "i" and (index < 0).any():  # -1 and N-1 are one row
                index = np.where(index < 0, index + target.shape[0], index)
            order = np.argsort(index, kind="stable")
            rows, starts = np.unique(index[order], return_index=True)
            target[rows] += np.add.reduceat(values[order], starts, axis=0)
            return
        np.add.at(target, index, values)
    else:
        import cupyx

        cupyx.scatter_add(target, index, values)


def erf(x):
    """The error function, elementwise, on either backend."""
    if get_array_module(x) is np:
        from scipy.special import erf as scipy_erf

        return scipy_erf(x).astype(x.dtype, copy=False)
    import cupyx.scipy.special

    return cupyx.scipy.special.erf(x)


def as_array(value, xp=np):
    """An ndarray from a value that may be a 0-d result (NumPy returns scalars from reductions)."""
    return value if isinstance(value, xp.ndarray) else xp.asarray(value)


# ---------------------------------------------------------------- random numbers

_generators: dict[str, Any] = {}


def manual_seed(seed: int) -> None:
    """Seed tinyllm's generators (NumPy's, and CuPy's when a GPU is in use)."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"manual_seed: seed must be a non-negative int, got {seed!r}")
    _generators["cpu"] = np.random.default_rng(int(seed))
    if "cuda" in _generators or ("cupy" in sys.modules and cuda_is_available()):
        _generators["cuda"] = _cupy().random.default_rng(int(seed))


def generator(device: str = "cpu"):
    """The global random generator for ``device`` (seeded by ``manual_seed``)."""
    gen = _generators.get(device)
    if gen is None:
        gen = np.random.default_rng() if device == "cpu" else _cupy().random.default_rng()
        _generators[device] = gen
    return gen
