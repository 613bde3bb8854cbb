"""``Tensor``: an array (NumPy or CuPy) plus what autograd needs.

A Tensor holds ``data`` (the array), ``requires_grad``, ``grad`` (a Tensor, filled by
``backward``), and ``grad_fn`` (the Context of the op that made it; None for leaves). Every
differentiable method below is one ``Function`` in ``tinyllm.functional``; this file only
wires the PyTorch method names to them.

This module imports neither ``tinyllm.function`` nor ``tinyllm.functional`` nor
``tinyllm.backward`` (they import it): the op table ``_F`` (the ``tinyllm.functional``
module) and the backward pass are bound into it by ``bind_ops``, which ``tinyllm/__init__``
calls once after importing both. Dependencies point one way, and
``tests/engine/test_import_graph.py`` checks it.

In-place methods (``add_``, ``mul_``, ``zero_``, ``copy_``, ``x[idx] = v``, ...) change
``data`` and bump the version counter, so a backward that saved the old values raises
instead of computing a wrong gradient. They are not differentiable: under grad mode they
refuse tensors that require a gradient (use the out-of-place form, or ``no_grad`` as
optimizers do).
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import numpy as np

from tinyllm import backend
from tinyllm.grad_mode import is_grad_enabled


class _Unbound:
    """Stands for the op table until ``bind_ops`` runs: any use raises, naming the cause."""

    def __getattr__(self, name: str):
        raise RuntimeError(
            f"Tensor op {name!r}: the op table is not bound; import tinyllm (its __init__ "
            "binds tinyllm.functional and tinyllm.backward into tinyllm.tensor via bind_ops)"
        )

    def __call__(self, *args, **kwargs):
        self.__getattr__("backward")


_F: Any = _Unbound()  # tinyllm.functional, once bound
_run_backward: Any = _Unbound()  # tinyllm.backward.run_backward, once bound


def bind_ops(functional: Any, run_backward: Any) -> None:
    """Give ``Tensor`` its ops (the ``tinyllm.functional`` module) and the backward pass.

    Called once by ``tinyllm/__init__``; injecting them keeps this module below
    ``function``, ``functional`` and ``backward`` in the import graph.
    """
    global _F, _run_backward
    _F = functional
    _run_backward = run_backward


class _Version:
    """A version counter, shared by a tensor and its views."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


MinMax = namedtuple("MinMax", ["values", "indices"])


class Tensor:
    """A multi-dimensional array that records the ops applied to it for backward."""

    __slots__ = (
        "_data",
        "_requires_grad",
        "grad",
        "grad_fn",
        "_output_index",
        "_version",
        "_retains_grad",
        "_hooks",
        "__weakref__",
    )
    __array_ufunc__ = None  # NumPy defers to Tensor's reflected operators (np.float32(2) * t)

    def __init__(self, data: Any, requires_grad: bool = False) -> None:
        if isinstance(data, Tensor):
            data = data.data
        xp = backend.get_array_module(data)
        self._data = data if isinstance(data, xp.ndarray) else np.asarray(data)
        self._requires_grad = False
        self.grad: Tensor | None = None
        self.grad_fn = None
        self._output_index = 0
        self._version = _Version()
        self._retains_grad = False
        self._hooks = None
        if requires_grad:
            self.requires_grad = True

    @classmethod
    def _from_op(cls, array, requires_grad: bool) -> Tensor:
        """Fast constructor used by Function.apply (no checks)."""
        t = cls.__new__(cls)
        t._data = array
        t._requires_grad = requires_grad
        t.grad = None
        t.grad_fn = None
        t._output_index = 0
        t._version = _Version()
        t._retains_grad = False
        t._hooks = None
        return t

    # ------------------------------------------------------------------ attributes
    @property
    def data(self):
        """The underlying array. Assigning replaces it (and bumps the version)."""
        return self._data

    @data.setter
    def data(self, value) -> None:
        if isinstance(value, Tensor):
            value = value.data
        self._data = value
        self._version.value += 1

    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if value and not backend.is_floating(self._data.dtype):
            raise RuntimeError(
                f"only floating-point tensors can require gradients, got dtype {self.dtype}"
            )
        if not value and self.grad_fn is not None:
            raise RuntimeError(
                "requires_grad can only be turned off on a leaf tensor; use .detach() instead"
            )
        self._requires_grad = bool(value)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        self.requires_grad = requires_grad
        return self

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    @property
    def shape(self) -> tuple:
        return self._data.shape

    @property
    def dtype(self) -> np.dtype:
        return self._data.dtype

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def device(self) -> str:
        return backend.device_of(self._data)

    @property
    def is_cuda(self) -> bool:
        return self.device == "cuda"

    @property
    def T(self) -> Tensor:
        return self.permute(*reversed(range(self.ndim)))

    @property
    def mT(self) -> Tensor:
        return self.transpose(-2, -1)

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return self.ndim

    def numel(self) -> int:
        return int(self._data.size)

    def element_size(self) -> int:
        return self._data.itemsize

    def is_floating_point(self) -> bool:
        return backend.is_floating(self.dtype)

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        body = np.array2string(backend.to_numpy(self._data), separator=", ", precision=4)
        extras = []
        if self.device != "cpu":
            extras.append(f"device='{self.device}'")
        if self.dtype != backend.DEFAULT_DTYPE:
            extras.append(f"dtype={self.dtype}")
        if self.grad_fn is not None:
            extras.append(f"grad_fn={self.grad_fn!r}")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        suffix = (", " + ", ".join(extras)) if extras else ""
        return f"tensor({body}{suffix})"

    def __bool__(self) -> bool:
        if self.numel() != 1:
            raise RuntimeError(
                f"the truth value of a tensor with {self.numel()} elements is ambiguous"
            )
        return bool(self._data)

    __hash__ = object.__hash__

    # ------------------------------------------------------------------ conversion
    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (shares memory on the CPU)."""
        if self.requires_grad:
            raise RuntimeError(
                "can't call numpy() on a tensor that requires grad; use .detach().numpy()"
            )
        if self.device != "cpu":
            raise TypeError("can't convert a cuda tensor to numpy; use .cpu() first")
        return self._data

    def tolist(self):
        return backend.to_numpy(self._data).tolist()

    def item(self):
        """The single value of a one-element tensor, as a Python number."""
        if self.numel() != 1:
            raise ValueError(
                f"item(): only one-element tensors can be converted, got shape {self.shape}"
            )
        return backend.to_numpy(self._data).reshape(()).item()

    def detach(self) -> Tensor:
        """The same data, cut from the graph (shares memory and version counter)."""
        t = Tensor._from_op(self._data, False)
        t._version = self._version
        return t

    def detach_(self) -> Tensor:
        self.grad_fn = None
        self._requires_grad = False
        return self

    def clone(self) -> Tensor:
        return _F.clone(self)

    def contiguous(self) -> Tensor:
        return _F.contiguous(self)

    def to(self, *args, dtype=None, device=None) -> Tensor:
        """``to(device)``, ``to(dtype)``, ``to(device, dtype)`` or keywords; differentiable."""
        for arg in args:
            if isinstance(arg, str) and arg.split(":")[0] in ("cpu", "cuda", "gpu"):
                device = arg
            else:
                dtype = arg
        out = self
        if dtype is not None and backend.as_dtype(dtype) != self.dtype:
            out = _F.cast(out, backend.as_dtype(dtype))
        if device is not None and backend.normalize_device(device) != self.device:
            out = _F.to_device(out, backend.normalize_device(device))
        return out

    def cpu(self) -> Tensor:
        return self.to("cpu")

    def cuda(self) -> Tensor:
        return self.to("cuda")

    def float(self) -> Tensor:
        return self.to(np.float32)

    def double(self) -> Tensor:
        return self.to(np.float64)

    def half(self) -> Tensor:
        return self.to(np.float16)

    def long(self) -> Tensor:
        return self.to(np.int64)

    def int(self) -> Tensor:
        return self.to(np.int32)

    def bool(self) -> Tensor:
        return self.to(np.bool_)

    def type_as(self, other: Tensor) -> Tensor:
        return self.to(other.dtype)

    # ------------------------------------------------------------------ autograd
    def backward(self, gradient: Any = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``.

        ``gradient`` is the cotangent (same shape as self); it may be omitted only for a
        one-element tensor. Without ``retain_graph`` the graph's saved arrays are freed.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward(): this tensor does not require grad and has no grad_fn "
                "(was it computed under no_grad, or from tensors without requires_grad?)"
            )
        if gradient is None:
            if self.numel() != 1:
                raise RuntimeError(
                    f"backward(): grad can be implicitly created only for one-element "
                    f"tensors; this one has shape {self.shape}: pass gradient="
                )
            xp = backend.get_array_module(self._data)
            droot = xp.ones(self.shape, dtype=self.dtype)
        else:
            droot = gradient.data if isinstance(gradient, Tensor) else gradient
            xp = backend.get_array_module(self._data)
            droot = xp.asarray(droot, dtype=self.dtype)
            if droot.shape != self.shape:
                raise RuntimeError(
                    f"backward(): gradient has shape {droot.shape}, tensor has shape {self.shape}"
                )
        _run_backward(self, droot, retain_graph=retain_graph)

    def retain_grad(self) -> None:
        """Keep the gradient of this non-leaf tensor in ``.grad`` after backward."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad(): tensor does not require grad")
        if self.grad_fn is not None:
            self._retains_grad = True

    @property
    def retains_grad(self) -> bool:
        return self._retains_grad

    def register_hook(self, hook):
        """Call ``hook(grad)`` when this tensor's gradient is computed; it may return a new one.

        Returns a handle with ``remove()``.
        """
        if not self.requires_grad:
            raise RuntimeError("register_hook(): tensor does not require grad")
        if self._hooks is None:
            self._hooks = []
        self._hooks.append(hook)
        hooks = self._hooks

        class _Handle:
            def remove(self_inner) -> None:
                if hook in hooks:
                    hooks.remove(hook)

        return _Handle()

    # ------------------------------------------------------------------ in-place
    def _check_inplace(self, op: str) -> None:
        if is_grad_enabled() and self.requires_grad:
            raise RuntimeError(
                f"{op}: in-place operations on a tensor that requires grad are not "
                "differentiable in tinyllm; use the out-of-place op, or wrap in no_grad()"
            )

    def _inplace(self, op: str, array) -> Tensor:
        self._check_inplace(op)
        self._data[...] = array
        self._version.value += 1
        return self

    def _value(self, other):
        return other.data if isinstance(other, Tensor) else other

    def add_(self, other, alpha=1) -> Tensor:
        other = self._value(other)
        return self._inplace("add_", self._data + (other if alpha == 1 else alpha * other))

    def sub_(self, other, alpha=1) -> Tensor:
        other = self._value(other)
        return self._inplace("sub_", self._data - (other if alpha == 1 else alpha * other))

    def mul_(self, other) -> Tensor:
        return self._inplace("mul_", self._data * self._value(other))

    def div_(self, other) -> Tensor:
        return self._inplace("div_", self._data / self._value(other))

    def clamp_(self, min=None, max=None) -> Tensor:
        xp = backend.get_array_module(self._data)
        return self._inplace("clamp_", xp.clip(self._data, min, max))

    def zero_(self) -> Tensor:
        return self._inplace("zero_", 0)

    def fill_(self, value) -> Tensor:
        return self._inplace("fill_", self._value(value))

    def copy_(self, src) -> Tensor:
        src = self._value(src)
        if tuple(getattr(src, "shape", ())) not in ((), self.shape):
            xp = backend.get_array_module(self._data)
            if xp.broadcast_shapes(src.shape, self.shape) != self.shape:
                raise RuntimeError(f"copy_: cannot copy shape {src.shape} into {self.shape}")
        return self._inplace("copy_", backend.to_device(src, self.device))

    def normal_(self, mean=0.0, std=1.0) -> Tensor:
        """Fill in place with N(mean, std^2) draws from the device's generator.

        ``backend.normal`` draws mean + std z, z ~ N(0, 1) (CuPy's Generator has no
        ``normal``; on the CPU this is the stream of NumPy's ``Generator.normal``).
        """
        gen = backend.generator(self.device)
        return self._inplace("normal_", backend.normal(gen, mean, std, self.shape, self.dtype))

    def uniform_(self, a=0.0, b=1.0) -> Tensor:
        """Fill in place with U[a, b) draws: a + (b - a) u, u ~ U[0, 1) (``backend.uniform``)."""
        gen = backend.generator(self.device)
        return self._inplace("uniform_", backend.uniform(gen, a, b, self.shape, self.dtype))

    def __setitem__(self, index, value) -> None:
        self._check_inplace("__setitem__")
        index = index.data if isinstance(index, Tensor) else index
        self._data[index] = self._value(value)
        self._version.value += 1

    # ------------------------------------------------------------------ operators
    def __add__(self, other):
        return _F.add(self, other)

    def __radd__(self, other):
        return _F.add(other, self)

    def __sub__(self, other):
        return _F.sub(self, other)

    def __rsub__(self, other):
        return _F.sub(other, self)

    def __mul__(self, other):
        return _F.mul(self, other)

    def __rmul__(self, other):
        return _F.mul(other, self)

    def __truediv__(self, other):
        return _F.div(self, other)

    def __rtruediv__(self, other):
        return _F.div(other, self)

    def __pow__(self, exponent):
        return _F.pow(self, exponent)

    def __rpow__(self, base):
        return _F.pow(base, self)

    def __matmul__(self, other):
        return _F.matmul(self, other)

    def __rmatmul__(self, other):
        return _F.matmul(other, self)

    def __neg__(self):
        return _F.neg(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _F.abs(self)

    def __getitem__(self, index):
        return _F.index(self, index)

    def __eq__(self, other):  # type: ignore[override]
        return _F.eq(self, other)

    def __ne__(self, other):  # type: ignore[override]
        return _F.ne(self, other)

    def __lt__(self, other):
        return _F.lt(self, other)

    def __le__(self, other):
        return _F.le(self, other)

    def __gt__(self, other):
        return _F.gt(self, other)

    def __ge__(self, other):
        return _F.ge(self, other)

    def __invert__(self):
        return _F.logical_not(self)

    def __and__(self, other):
        return _F.logical_and(self, other)

    def __or__(self, other):
        return _F.logical_or(self, other)

    # ------------------------------------------------------------------ methods
    def add(self, other):
        return _F.add(self, other)

    def sub(self, other):
        return _F.sub(self, other)

    def mul(self, other):
        return _F.mul(self, other)

    def div(self, other):
        return _F.div(self, other)

    def pow(self, exponent):
        return _F.pow(self, exponent)

    def matmul(self, other):
        return _F.matmul(self, other)

    def neg(self):
        return _F.neg(self)

    def exp(self):
        return _F.exp(self)

    def log(self):
        return _F.log(self)

    def sqrt(self):
        return _F.sqrt(self)

    def rsqrt(self):
        return _F.rsqrt(self)

    def tanh(self):
        return _F.tanh(self)

    def sigmoid(self):
        return _F.sigmoid(self)

    def relu(self):
        return _F.relu(self)

    def abs(self):
        return _F.abs(self)

    def sin(self):
        return _F.sin(self)

    def cos(self):
        return _F.cos(self)

    def clamp(self, min=None, max=None):
        return _F.clamp(self, min, max)

    clip = clamp

    def maximum(self, other):
        return _F.maximum(self, other)

    def minimum(self, other):
        return _F.minimum(self, other)

    def sum(self, dim=None, keepdim=False):
        return _F.sum(self, dim, keepdim)

    def mean(self, dim=None, keepdim=False):
        return _F.mean(self, dim, keepdim)

    def var(self, dim=None, keepdim=False, *, correction=1, unbiased=None):
        return _F.var(self, dim, keepdim, correction=correction, unbiased=unbiased)

    def std(self, dim=None, keepdim=False, *, correction=1, unbiased=None):
        return _F.var(self, dim, keepdim, correction=correction, unbiased=unbiased).sqrt()

    def max(self, dim=None, keepdim=False):
        return _F.max(self, dim, keepdim)

    def min(self, dim=None, keepdim=False):
        return _F.min(self, dim, keepdim)

    def amax(self, dim=None, keepdim=False):
        return _F.amax(self, dim, keepdim)

    def amin(self, dim=None, keepdim=False):
        return _F.amin(self, dim, keepdim)

    def argmax(self, dim=None, keepdim=False):
        return _F.argmax(self, dim, keepdim)

    def argmin(self, dim=None, keepdim=False):
        return _F.argmin(self, dim, keepdim)

    def logsumexp(self, dim, keepdim=False):
        return _F.logsumexp(self, dim, keepdim)

    def softmax(self, dim):
        return _F.softmax(self, dim)

    def log_softmax(self, dim):
        return _F.log_softmax(self, dim)

    def reshape(self, *shape):
        return _F.reshape(self, _shape_args(shape))

    def view(self, *shape):
        return _F.view(self, _shape_args(shape))

    def view_as(self, other):
        return _F.view(self, other.shape)

    def flatten(self, start_dim=0, end_dim=-1):
        return _F.flatten(self, start_dim, end_dim)

    def transpose(self, dim0, dim1):
        return _F.transpose(self, dim0, dim1)

    def t(self):
        if self.ndim > 2:
            raise RuntimeError(f"t() expects a tensor with <= 2 dims, got {self.ndim}")
        return self.T

    def permute(self, *dims):
        return _F.permute(self, _shape_args(dims))

    def unsqueeze(self, dim):
        return _F.unsqueeze(self, dim)

    def squeeze(self, dim=None):
        return _F.squeeze(self, dim)

    def expand(self, *shape):
        return _F.expand(self, _shape_args(shape))

    def expand_as(self, other):
        return _F.expand(self, other.shape)

    def broadcast_to(self, shape):
        return _F.broadcast_to(self, shape)

    def split(self, split_size_or_sections, dim=0):
        return _F.split(self, split_size_or_sections, dim)

    def chunk(self, chunks, dim=0):
        return _F.chunk(self, chunks, dim)

    def gather(self, dim, index):
        return _F.gather(self, dim, index)

    def masked_fill(self, mask, value):
        return _F.masked_fill(self, mask, value)

    def where(self, condition, other):
        return _F.where(condition, self, other)

    def tril(self, diagonal=0):
        return _F.tril(self, diagonal)

    def triu(self, diagonal=0):
        return _F.triu(self, diagonal)

    def eq(self, other):
        return _F.eq(self, other)

    def ne(self, other):
        return _F.ne(self, other)

    def lt(self, other):
        return _F.lt(self, other)

    def le(self, other):
        return _F.le(self, other)

    def gt(self, other):
        return _F.gt(self, other)

    def ge(self, other):
        return _F.ge(self, other)

    def all(self):
        return _F.all(self)

    def any(self):
        return _F.any(self)


def _shape_args(args: tuple) -> tuple:
    """Accept both f(2, 3) and f((2, 3))."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        return tuple(args[0])
    return tuple(args)
