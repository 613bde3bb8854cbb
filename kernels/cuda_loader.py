"""CUDA sources beside the Python, compiled lazily through ``cupy.RawModule``.

Each ``.cu`` file in this folder holds ``extern "C"`` entry points named
``<kernel>_f32`` and ``<kernel>_f64`` (one template instantiated per dtype) and includes
``cuda_common.cuh``. The same text feeds ``nvcc -ptx -arch=sm_90`` in the tests (a compile
check on machines without a GPU) and NVRTC through CuPy on a GPU. A module is compiled on
first use, once per process, and its functions are cached per (file, kernel, dtype).

Nothing here imports CuPy at import time.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CUDA_SOURCES",
    "KERNEL_DIR",
    "dtype_suffix",
    "function",
    "module",
    "scalar",
    "source_exists",
    "source_path",
    "with_cuda",
]

KERNEL_DIR = Path(__file__).resolve().parent
# every CUDA source of the package (the tests compile each one with nvcc)
CUDA_SOURCES = (
    "softmax.cu",
    "norms.cu",
    "rope.cu",
    "glu.cu",
    "adamw.cu",
    "flash_attention.cu",
    "quant_matmul.cu",
    "selective_scan.cu",
    "im2col.cu",
    "paged_attention.cu",
    "wkv.cu",
)
_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


def source_path(name: str) -> Path:
    """The path of the CUDA source ``name`` (e.g. "softmax.cu")."""
    return KERNEL_DIR / name


@functools.cache
def source_exists(name: str) -> bool:
    """True when the CUDA source ``name`` and the headers it includes ship with the package."""
    path = source_path(name)
    if not path.is_file():
        return False
    included = re.findall(r'^#include "([^"]+)"', path.read_text(), flags=re.M)
    return all(source_path(header).is_file() for header in included)


def with_cuda(bodies: dict, name: str) -> dict:
    """``bodies`` as given, or without its "cuda" body when source ``name`` is missing."""
    if source_exists(name):
        return bodies
    return {tier: body for tier, body in bodies.items() if tier != "cuda"}


def dtype_suffix(dtype: Any) -> str:
    """ "f32" or "f64": the entry-point suffix for ``dtype``."""
    dt = np.dtype(dtype)
    if dt not in _SUFFIX:
        raise TypeError(f"CUDA kernels exist for float32 and float64 only, got {dt}")
    return _SUFFIX[dt]


@functools.cache
def module(name: str):
    """The ``cupy.RawModule`` of source ``name`` (compiled by NVRTC at first use)."""
    import cupy

    code = source_path(name).read_text()
    return cupy.RawModule(code=code, options=("-std=c++14", f"-I{KERNEL_DIR}"))


@functools.cache
def function(name: str, kernel: str, dtype: Any):
    """The compiled entry point ``<kernel>_<f32|f64>`` of source ``name``."""
    return module(name).get_function(f"{kernel}_{dtype_suffix(dtype)}")


def scalar(value: float, dtype: Any):
    """A NumPy scalar of the kernel's float type (CuPy passes it by value to the kernel)."""
    return np.dtype(dtype).type(value)
