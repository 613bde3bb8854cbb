"""The stand-in ``cupy.ndarray`` and CuPy's array functions, strict where CuPy is.

An ``ndarray`` holds a NumPy array (``_a``) and is not a ``numpy.ndarray``. It refuses implicit
conversion (``__array__``) with CuPy's message; ``float()``, ``int()``, ``bool()``,
``.item()``, ``.tolist()``, ``.get()`` and ``repr`` work but count as host syncs; a NumPy array
met where CuPy wants a device array raises CuPy's ``TypeError: Unsupported type``. Functions
exist only under CuPy's names with CuPy's signatures (``SIGNATURES``), so ``indices(...,
sparse=True)`` is a ``TypeError`` as on a GPU.
"""

from __future__ import annotations

import builtins
import inspect
import operator
from typing import Any

import numpy as np

from .counters import COUNTERS, fail_if_missing

IMPLICIT = (
    "Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a "
    "NumPy array explicitly."
)


def unsupported(value: Any) -> TypeError:
    return TypeError(f"Unsupported type {type(value)}")


def wrap(value: Any) -> Any:
    """NumPy results as stand-in arrays (0-d arrays for scalars, as CuPy returns)."""
    if isinstance(value, np.ndarray):
        return ndarray._from(value)
    if isinstance(value, np.generic):
        return ndarray._from(np.asarray(value))
    if isinstance(value, tuple):
        return tuple(wrap(v) for v in value)
    if isinstance(value, list):
        return [wrap(v) for v in value]
    return value


def unwrap(value: Any, *, allow_numpy: bool = False) -> Any:
    """Stand-in arrays as NumPy arrays; NumPy arrays refused unless ``allow_numpy``."""
    if isinstance(value, ndarray):
        return value._a
    if isinstance(value, np.ndarray):
        if not allow_numpy:
            raise unsupported(value)
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(unwrap(v, allow_numpy=allow_numpy) for v in value)
    return value


class Flags:
    """CuPy's ``ndarray.flags``: c_contiguous, f_contiguous, owndata (no ``writeable``)."""

    def __init__(self, a: np.ndarray) -> None:
        self.c_contiguous = bool(a.flags.c_contiguous)
        self.f_contiguous = bool(a.flags.f_contiguous)
        self.owndata = bool(a.flags.owndata)

    def __getitem__(self, key: str) -> bool:
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous,
                "OWNDATA": self.owndata}[key]  # fmt: skip


class MemoryPointer:
    """``ndarray.data``: ``ptr`` is the address of the first element (as on a GPU)."""

    def __init__(self, a: np.ndarray) -> None:
        self.ptr = int(a.ctypes.data) if a.size else 0


def _binary(name: str, reflected: bool = False):
    fn = getattr(operator, name)

    def method(self, other):
        if not isinstance(other, (ndarray, int, float, complex, bool, np.generic)):
            if isinstance(other, np.ndarray):
                raise unsupported(other)
            return NotImplemented
        o = other._a if isinstance(other, ndarray) else other
        if name == "matmul":
            fail_if_missing("cublas", "CuPy failed to load libcublas.so.13")
        return wrap(fn(o, self._a) if reflected else fn(self._a, o))

    return method


def _inplace(name: str):
    fn = getattr(operator, name)

    def method(self, other):
        if isinstance(other, np.ndarray):
            raise unsupported(other)
        if not isinstance(other, (ndarray, int, float, complex, bool, np.generic)):
            return NotImplemented
        fn(self._a, other._a if isinstance(other, ndarray) else other)
        return self

    return method


def _index(key: Any) -> Any:
    """An index for the wrapped array: device arrays unwrapped; host arrays copied in (H2D)."""
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    if isinstance(key, ndarray):
        if key.dtype == np.bool_:
            COUNTERS.sync("bool-mask")  # the result's size depends on the mask's values
        return key._a
    if isinstance(key, (np.ndarray, list)):
        COUNTERS.to_device()
        if np.asarray(key).dtype == np.bool_:
            COUNTERS.sync("bool-mask")
        return np.asarray(key)
    return key


def _method(name: str, params: str, sync: str | None = None):
    """An ndarray method with CuPy's signature ``params`` (checked) calling NumPy's."""
    signature = _signature(f"(self, {params})" if params else "(self)")

    def method(self, *args, **kwargs):
        signature.bind(self, *args, **kwargs)
        if sync:
            COUNTERS.sync(sync)
        return wrap(getattr(self._a, name)(*unwrap(args), **unwrap_kwargs(kwargs)))

    method.__name__ = name
    return method


def unwrap_kwargs(kwargs: dict) -> dict:
    return {k: unwrap(v) for k, v in kwargs.items()}


def _signature(text: str) -> inspect.Signature:
    namespace: dict = {"float64": np.float64, "int64": np.int64}
    exec(f"def f{text}: pass", namespace)  # noqa: S102  (signatures written in this file)
    return inspect.signature(namespace["f"])


class ndarray:  # noqa: N801  (CuPy's name)
    """A device array: a NumPy array that refuses to be used as one implicitly."""

    __slots__ = ("_a", "__weakref__")
    __array_priority__ = 100.0

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C") -> None:
        if memptr is not None or strides is not None:
            raise NotImplementedError("stand-in ndarray(memptr=, strides=) is not emulated")
        self._a = np.empty(shape, dtype=dtype, order=order)

    @classmethod
    def _from(cls, a: np.ndarray) -> ndarray:
        out = object.__new__(cls)
        out._a = a
        return out

    # ---- what CuPy refuses or counts
    def __array__(self, *args, **kwargs):
        raise TypeError(IMPLICIT)

    def __float__(self) -> float:
        COUNTERS.to_host("float")
        return float(self._a)

    def __int__(self) -> int:
        COUNTERS.to_host("int")
        return int(self._a)

    def __index__(self) -> int:
        COUNTERS.to_host("index")
        return operator.index(self._a)

    def __complex__(self) -> complex:
        COUNTERS.to_host("complex")
        return complex(self._a)

    def __bool__(self) -> bool:
        COUNTERS.to_host("bool")
        return bool(self._a)

    def item(self):
        COUNTERS.to_host("item")
        return self._a.item()

    def tolist(self):
        COUNTERS.to_host("tolist")
        return self._a.tolist()

    def get(self, stream=None, order="C", out=None, blocking=True) -> np.ndarray:
        COUNTERS.to_host("get")
        result = np.array(self._a, order=order)
        if out is not None:
            out[...] = result
            return out
        return result

    def set(self, arr, stream=None) -> None:
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, got {type(arr)}")
        COUNTERS.to_device()
        self._a[...] = arr

    def __repr__(self) -> str:
        COUNTERS.to_host("repr")
        return repr(self._a)

    def __str__(self) -> str:
        COUNTERS.to_host("str")
        return str(self._a)

    def __format__(self, spec: str) -> str:
        COUNTERS.to_host("format")
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    __hash__ = None  # type: ignore[assignment]

    # ---- NumPy protocols: what CuPy dispatches, else NumPy's TypeError
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        from . import module

        target = module.UFUNCS.get(ufunc.__name__)
        if target is None:
            return NotImplemented
        if method == "__call__":
            return target(*inputs, **kwargs)
        attr = getattr(target, method, None)
        return NotImplemented if attr is None else attr(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        from . import module

        target = module.FUNCTIONS.get(func.__name__)
        if target is None:
            return NotImplemented
        return target(*args, **kwargs)

    # ---- attributes
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: Flags(self._a))
    data = property(lambda self: MemoryPointer(self._a))
    T = property(lambda self: wrap(self._a.T))
    real = property(lambda self: wrap(self._a.real))
    imag = property(lambda self: wrap(self._a.imag))
    base = property(lambda self: None if self._a.base is None else wrap(self._a.base))
    device = property(lambda self: _device())

    @shape.setter
    def shape(self, value) -> None:  # noqa: F811
        self._a.shape = value

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (wrap(self._a[i]) for i in range(len(self._a)))

    def __getitem__(self, key):
        return wrap(self._a[_index(key)])

    def __setitem__(self, key, value) -> None:
        if isinstance(value, np.ndarray):
            raise unsupported(value)
        if isinstance(value, (list, tuple)):
            raise unsupported(value)
        self._a[_index(key)] = value._a if isinstance(value, ndarray) else value

    def __copy__(self) -> ndarray:
        return wrap(self._a.copy())

    def __deepcopy__(self, memo) -> ndarray:
        return wrap(self._a.copy())

    def __reduce__(self):
        return (_rebuild, (self._a.copy(),))

    # ---- methods with CuPy's signatures
    def astype(self, dtype, order="K", casting=None, subok=None, copy=True) -> ndarray:
        return wrap(self._a.astype(dtype, order=order, copy=copy))

    def reshape(self, *shape, order="C") -> ndarray:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return wrap(self._a.reshape(unwrap(shape), order=order))

    def transpose(self, *axes) -> ndarray:
        return wrap(self._a.transpose(*axes))

    def view(self, dtype=None, array_class=None) -> ndarray:
        if array_class is not None:
            raise NotImplementedError("stand-in view(array_class=)")
        return wrap(self._a.view() if dtype is None else self._a.view(dtype))

    def fill(self, value) -> None:
        if isinstance(value, ndarray):
            value = value._a
        self._a.fill(value)

    def __dlpack__(self, *args, **kwargs):
        raise NotImplementedError("stand-in: no DLPack")


def _rebuild(a: np.ndarray) -> ndarray:
    return ndarray._from(a)


def _device():
    from .cuda import Device

    return Device(0)


_METHODS = {
    "all": ("axis=None, out=None, keepdims=False", None),
    "any": ("axis=None, out=None, keepdims=False", None),
    "argmax": ("axis=None, out=None, dtype=None, keepdims=False", None),
    "argmin": ("axis=None, out=None, dtype=None, keepdims=False", None),
    "argpartition": ("kth, axis=-1", None),
    "argsort": ("axis=-1, kind=None", None),
    "clip": ("min=None, max=None, out=None", None),
    "conj": ("", None),
    "copy": ("order='C'", None),
    "cumprod": ("axis=None, dtype=None, out=None", None),
    "cumsum": ("axis=None, dtype=None, out=None", None),
    "diagonal": ("offset=0, axis1=0, axis2=1", None),
    "dot": ("b, out=None", None),
    "flatten": ("order='C'", None),
    "max": ("axis=None, out=None, keepdims=False", None),
    "mean": ("axis=None, dtype=None, out=None, keepdims=False", None),
    "min": ("axis=None, out=None, keepdims=False", None),
    "nonzero": ("", "nonzero"),
    "partition": ("kth, axis=-1", None),
    "prod": ("axis=None, dtype=None, out=None, keepdims=False", None),
    "ptp": ("axis=None, out=None, keepdims=False", None),
    "put": ("indices, values, mode='wrap'", None),
    "ravel": ("order='C'", None),
    "repeat": ("repeats, axis=None", None),
    "round": ("decimals=0, out=None", None),
    "sort": ("axis=-1, kind=None", None),
    "squeeze": ("axis=None", None),
    "std": ("axis=None, dtype=None, out=None, ddof=0, keepdims=False", None),
    "sum": ("axis=None, dtype=None, out=None, keepdims=False", None),
    "swapaxes": ("axis1, axis2", None),
    "take": ("indices, axis=None, out=None", None),
    "trace": ("offset=0, axis1=0, axis2=1, dtype=None, out=None", None),
    "var": ("axis=None, dtype=None, out=None, ddof=0, keepdims=False", None),
}
for _name, (_params, _sync) in _METHODS.items():
    setattr(ndarray, _name, _method(_name, _params, _sync))

for _op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and_", "or_",
            "xor", "lshift", "rshift", "lt", "le", "gt", "ge", "eq", "ne"):  # fmt: skip
    _dunder = _op.rstrip("_")
    setattr(ndarray, f"__{_dunder}__", _binary(_op))
    if _op not in ("lt", "le", "gt", "ge", "eq", "ne"):
        setattr(ndarray, f"__r{_dunder}__", _binary(_op, reflected=True))
        setattr(ndarray, f"__i{_dunder}__", _inplace(f"i{_op.rstrip('_')}"))
ndarray.__divmod__ = lambda self, other: (self // other, self % other)
ndarray.__neg__ = lambda self: wrap(-self._a)
ndarray.__pos__ = lambda self: wrap(+self._a)
ndarray.__abs__ = lambda self: wrap(builtins.abs(self._a))
ndarray.__invert__ = lambda self: wrap(~self._a)
