"""CuPy's top-level functions: only CuPy's names, each with CuPy's signature.

``SIGNATURES`` is the whitelist: a name CuPy lacks is an ``AttributeError`` on the module,
a keyword CuPy lacks (``indices(..., sparse=True)``, ``sum(..., where=)``) a ``TypeError``.
Device functions refuse NumPy arrays (CuPy's ``Unsupported type``); ``array``/``asarray``/
``ascontiguousarray`` accept them and count a host-to-device copy. Functions whose output
size depends on values (``nonzero``, ``unique``, ``argwhere``, boolean masks) count a sync.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .core import _signature, ndarray, unwrap, unwrap_kwargs, wrap
from .counters import COUNTERS

# CuPy signatures (v13/v14), as text: "name": "(parameters)"
SIGNATURES = {
    # creation
    "empty": "(shape, dtype=float, order='C')",
    "zeros": "(shape, dtype=float, order='C')",
    "ones": "(shape, dtype=float, order='C')",
    "full": "(shape, fill_value, dtype=None, order='C')",
    "empty_like": "(prototype, dtype=None, order='K', subok=None, shape=None)",
    "zeros_like": "(a, dtype=None, order='K', subok=None, shape=None)",
    "ones_like": "(a, dtype=None, order='K', subok=None, shape=None)",
    "full_like": "(a, fill_value, dtype=None, order='K', subok=None, shape=None)",
    "arange": "(start, stop=None, step=1, dtype=None)",
    "linspace": "(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0)",
    "eye": "(N, M=None, k=0, dtype=float, order='C')",
    "identity": "(n, dtype=float)",
    "tri": "(N, M=None, k=0, dtype=float)",
    "tril": "(m, k=0)",
    "triu": "(m, k=0)",
    "diag": "(v, k=0)",
    "indices": "(dimensions, dtype=int)",
    "meshgrid": "(*xi, copy=True, sparse=False, indexing='xy')",
    # shape
    "reshape": "(a, newshape, order='C')",
    "ravel": "(a, order='C')",
    "transpose": "(a, axes=None)",
    "swapaxes": "(a, axis1, axis2)",
    "moveaxis": "(a, source, destination)",
    "expand_dims": "(a, axis)",
    "squeeze": "(a, axis=None)",
    "broadcast_to": "(array, shape)",
    "broadcast_arrays": "(*args)",
    "broadcast_shapes": "(*shapes)",
    "atleast_1d": "(*arys)",
    "atleast_2d": "(*arys)",
    "concatenate": "(tup, axis=0, out=None, *, dtype=None, casting='same_kind')",
    "stack": "(tup, axis=0, out=None, *, dtype=None, casting='same_kind')",
    "vstack": "(tup, *, dtype=None, casting='same_kind')",
    "hstack": "(tup, *, dtype=None, casting='same_kind')",
    "split": "(ary, indices_or_sections, axis=0)",
    "array_split": "(ary, indices_or_sections, axis=0)",
    "repeat": "(a, repeats, axis=None)",
    "tile": "(A, reps)",
    "flip": "(a, axis=None)",
    "roll": "(a, shift, axis=None)",
    "pad": "(array, pad_width, mode='constant', **kwargs)",
    # indexing
    "where": "(condition, x=None, y=None)",
    "take": "(a, indices, axis=None, out=None)",
    "take_along_axis": "(a, indices, axis)",
    "put_along_axis": "(arr, indices, values, axis)",
    "nonzero": "(a)",
    "argwhere": "(a)",
    "flatnonzero": "(a)",
    "diagonal": "(a, offset=0, axis1=0, axis2=1)",
    "searchsorted": "(a, v, side='left', sorter=None)",
    # sorting, counting, sets
    "sort": "(a, axis=-1, kind=None)",
    "argsort": "(a, axis=-1, kind=None)",
    "partition": "(a, kth, axis=-1)",
    "argpartition": "(a, kth, axis=-1)",
    "unique": "(ar, return_index=False, return_inverse=False, return_counts=False, "
    "axis=None, *, equal_nan=True)",
    "count_nonzero": "(a, axis=None)",
    "bincount": "(x, weights=None, minlength=None)",
    # reductions
    "sum": "(a, axis=None, dtype=None, out=None, keepdims=False)",
    "prod": "(a, axis=None, dtype=None, out=None, keepdims=False)",
    "mean": "(a, axis=None, dtype=None, out=None, keepdims=False)",
    "var": "(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False)",
    "std": "(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False)",
    "amax": "(a, axis=None, out=None, keepdims=False)",
    "amin": "(a, axis=None, out=None, keepdims=False)",
    "max": "(a, axis=None, out=None, keepdims=False)",
    "min": "(a, axis=None, out=None, keepdims=False)",
    "argmax": "(a, axis=None, dtype=None, out=None, keepdims=False)",
    "argmin": "(a, axis=None, dtype=None, out=None, keepdims=False)",
    "all": "(a, axis=None, out=None, keepdims=False)",
    "any": "(a, axis=None, out=None, keepdims=False)",
    "cumsum": "(a, axis=None, dtype=None, out=None)",
    "cumprod": "(a, axis=None, dtype=None, out=None)",
    "diff": "(a, n=1, axis=-1, prepend=None, append=None)",
    "nanmax": "(a, axis=None, out=None, keepdims=False)",
    "nanmin": "(a, axis=None, out=None, keepdims=False)",
    "nansum": "(a, axis=None, dtype=None, out=None, keepdims=False)",
    "isneginf": "(x, out=None)",
    "isposinf": "(x, out=None)",
    "allclose": "(a, b, rtol=1e-05, atol=1e-08, equal_nan=False)",
    "isclose": "(a, b, rtol=1e-05, atol=1e-08, equal_nan=False)",
    "array_equal": "(a1, a2, equal_nan=False)",
    # linear algebra
    "dot": "(a, b, out=None)",
    "vdot": "(a, b)",
    "inner": "(a, b)",
    "outer": "(a, b, out=None)",
    "tensordot": "(a, b, axes=2)",
    "einsum": "(*operands, **kwargs)",
    "trace": "(a, offset=0, axis1=0, axis2=1, dtype=None, out=None)",
    "clip": "(a, a_min=None, a_max=None, out=None, **kwargs)",
    "around": "(a, decimals=0, out=None)",
    "round": "(a, decimals=0, out=None)",
    "nan_to_num": "(x, copy=True, nan=0.0, posinf=None, neginf=None)",
    # dtypes and shapes (host answers)
    "result_type": "(*arrays_and_dtypes)",
    "can_cast": "(from_, to, casting='safe')",
    "promote_types": "(type1, type2)",
    "shape": "(a)",
    "ndim": "(a)",
    "size": "(a, axis=None)",
    "isscalar": "(element)",
}
# functions whose output size depends on the values (a host sync in CuPy)
SYNCING = {"nonzero", "argwhere", "flatnonzero", "unique"}

UFUNC_NAMES = (
    "add subtract multiply divide true_divide floor_divide power float_power negative positive "
    "absolute fabs sign exp exp2 expm1 log log2 log10 log1p sqrt square cbrt reciprocal sin cos "
    "tan arcsin arccos arctan arctan2 sinh cosh tanh arcsinh arccosh arctanh floor ceil trunc "
    "rint maximum minimum fmax fmin isfinite isnan isinf logical_and logical_or logical_not "
    "logical_xor equal not_equal less less_equal greater greater_equal bitwise_and bitwise_or "
    "bitwise_xor invert left_shift right_shift remainder mod fmod hypot copysign signbit "
    "logaddexp logaddexp2 nextafter deg2rad rad2deg degrees radians matmul"
).split()
UFUNC_KWARGS = {"out", "dtype", "casting"}


class ufunc:  # noqa: N801  (CuPy's name)
    """A CuPy ufunc: call, ``reduce``, ``accumulate``, ``outer``, ``at``; no ``where=``."""

    def __init__(self, name: str) -> None:
        self.__name__ = name
        self._np = getattr(np, name)
        self.nin, self.nout = self._np.nin, self._np.nout

    def __call__(self, *args, **kwargs):
        extra = set(kwargs) - UFUNC_KWARGS
        if extra:
            raise TypeError(f"Wrong arguments {sorted(extra)} for cupy.{self.__name__}")
        if len(args) > self.nin + self.nout:
            raise TypeError(f"Wrong number of arguments for cupy.{self.__name__}")
        out = kwargs.get("out")
        result = self._np(*unwrap(args), **unwrap_kwargs(kwargs))
        return out if isinstance(out, ndarray) else wrap(result)

    def reduce(self, array, axis=0, dtype=None, out=None, keepdims=False):
        return wrap(self._np.reduce(unwrap(array), axis=axis, dtype=dtype, keepdims=keepdims))

    def accumulate(self, array, axis=0, dtype=None, out=None):
        return wrap(self._np.accumulate(unwrap(array), axis=axis, dtype=dtype))

    def outer(self, A, B, **kwargs):
        return wrap(self._np.outer(unwrap(A), unwrap(B), **unwrap_kwargs(kwargs)))

    def at(self, a, indices, b=None) -> None:
        if not isinstance(a, ndarray):
            raise TypeError(f"cupy.{self.__name__}.at: a must be a cupy.ndarray")
        args = () if b is None else (unwrap(b),)
        self._np.at(a._a, unwrap(indices), *args)

    def __repr__(self) -> str:
        return f"<ufunc '{self.__name__}'>"


UFUNCS: dict[str, Any] = {name: ufunc(name) for name in UFUNC_NAMES}
UFUNCS["abs"] = UFUNCS["absolute"]
UFUNCS["conj"] = UFUNCS["conjugate"] = ufunc("conjugate")


def _function(name: str, text: str):
    signature = _signature(text)
    np_fn = getattr(np, name)

    def function(*args, **kwargs):
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"cupy.{name}{text}: {exc}") from None
        if name in SYNCING:
            COUNTERS.sync(name)
        result = np_fn(*unwrap(args), **unwrap_kwargs(kwargs))
        if name in ("shape", "ndim", "size", "isscalar", "result_type", "can_cast",
                    "promote_types", "broadcast_shapes"):  # fmt: skip
            return result
        if name == "allclose" or name == "array_equal":
            return wrap(np.asarray(result))  # CuPy returns a 0-d device array
        return wrap(result)

    function.__name__ = name
    function.__qualname__ = name
    return function


FUNCTIONS: dict[str, Any] = {name: _function(name, text) for name, text in SIGNATURES.items()}


def _creation(a: Any, dtype: Any, copy: bool | None, order: Any, ndmin: int = 0) -> ndarray:
    if isinstance(a, ndarray):
        src = a._a
    else:
        if isinstance(a, np.ndarray) or np.ndim(a) > 0:
            COUNTERS.to_device()
        src = _host_values(a)
    result = np.array(src, dtype=dtype, copy=copy, order=order or "K", ndmin=ndmin)
    return ndarray._from(result)


def _host_values(a: Any) -> Any:
    """Nested lists may hold device 0-d arrays (CuPy reads them: a sync each)."""
    if isinstance(a, ndarray):
        COUNTERS.to_host("array()")
        return a._a
    if isinstance(a, (list, tuple)):
        return type(a)(_host_values(v) for v in a)
    return a


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    """``cupy.array``: device arrays copied on the device; host data copied in (H2D)."""
    return _creation(obj, dtype, bool(copy), order, ndmin)


def asarray(a, dtype=None, order=None, *, blocking=False):
    """``cupy.asarray``: no copy for a device array of the right dtype."""
    if isinstance(a, ndarray) and (dtype is None or np.dtype(dtype) == a.dtype) and order is None:
        return a
    return _creation(a, dtype, None if isinstance(a, ndarray) else True, order)  # None: if needed


asanyarray = asarray


def ascontiguousarray(a, dtype=None):
    if isinstance(a, ndarray):
        return wrap(np.ascontiguousarray(a._a, dtype=dtype))
    COUNTERS.to_device()
    return wrap(np.ascontiguousarray(_host_values(a), dtype=dtype))


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    """A NumPy array from a device array (a device-to-host copy and a sync)."""
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out)
    return np.asarray(a, order=order)


def get_array_module(*args):
    import sys

    for arg in args:
        if isinstance(arg, ndarray):
            return sys.modules["cupy"]
    return np


FUNCTIONS.update(
    array=array, asarray=asarray, asanyarray=asanyarray, ascontiguousarray=ascontiguousarray
)
