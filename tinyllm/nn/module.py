"""``Module``: the base class of every layer and model, with PyTorch's interface.

Attributes that are ``Parameter``s or ``Module``s are registered when assigned, in order;
``named_parameters()`` walks them depth-first with dotted names (``blocks.0.attn.q_proj.weight``),
so a PyTorch state dict maps onto a tinyllm model key for key. A parameter shared by two
modules (tied embeddings) is listed once.
"""

from __future__ import annotations

from collections import OrderedDict, namedtuple
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from tinyllm import backend
from tinyllm.nn.parameter import Parameter
from tinyllm.tensor import Tensor

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Module:
    """Base class: subclass, assign layers and parameters in ``__init__``, write ``forward``."""

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # ------------------------------------------------------------------ registration
    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"cannot assign {name!r} before Module.__init__() is called "
                f"(call super().__init__() first in {type(self).__name__}.__init__)"
            )
        was_buffer = name in self._buffers
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        elif was_buffer and (value is None or isinstance(value, Tensor)):
            self._buffers[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if param is None:
            self._parameters.pop(name, None)
            object.__setattr__(self, name, None)
        else:
            setattr(self, name, param)

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """A non-trainable tensor that moves with the module (and, if persistent, is saved)."""
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"register_buffer: {name!r} must be a Tensor or None")
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent.add(name)
        object.__setattr__(self, name, tensor)

    def add_module(self, name: str, module: Module | None) -> None:
        setattr(self, name, module)

    # ------------------------------------------------------------------ traversal
    def named_modules(self, prefix: str = "", memo: set | None = None) -> Iterator:
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self) -> Iterator:
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator:
        for name, child in self._modules.items():
            if child is not None:
                yield name, child

    def children(self) -> Iterator:
        for _, child in self.named_children():
            yield child

    def named_parameters(self, prefix: str = "", recurse: bool = True) -> Iterator:
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, param in module._parameters.items():
                if param is None or id(param) in seen:
                    continue
                seen.add(id(param))
                yield (f"{module_prefix}.{name}" if module_prefix else name), param

    def parameters(self, recurse: bool = True) -> Iterator:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True) -> Iterator:
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, buf in module._buffers.items():
                if buf is not None:
                    yield (f"{module_prefix}.{name}" if module_prefix else name), buf

    def buffers(self, recurse: bool = True) -> Iterator:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def num_parameters(self) -> int:
        """The number of trainable scalars (shared parameters counted once)."""
        return sum(p.numel() for p in self.parameters())

    def apply(self, fn) -> Module:
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------------ modes and grads
    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> Module:
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad = Tensor(backend.get_array_module(p.data).zeros_like(p.grad.data))

    # ------------------------------------------------------------------ state
    def state_dict(
        self, *, destination: dict | None = None, prefix: str = "", keep_vars: bool = False
    ) -> OrderedDict:
        """Parameters and persistent buffers by ``prefix`` + dotted name, as PyTorch.

        Values are detached Tensors sharing the data, or with ``keep_vars=True`` the
        Parameters and buffers themselves. A parameter shared by two modules (tied weights)
        appears under both names. ``destination``: a dict to fill and return instead of a
        new OrderedDict.
        """
        state = OrderedDict() if destination is None else destination
        for key, t in self._state_items():
            state[prefix + key] = t if keep_vars else t.detach()
        return state

    def _state_items(self) -> Iterator:
        """(dotted name, Parameter or persistent buffer) for every entry of the state dict."""
        for module_prefix, module in self.named_modules():
            for name, p in module._parameters.items():
                if p is not None:
                    yield (f"{module_prefix}.{name}" if module_prefix else name), p
            for name, b in module._buffers.items():
                if b is not None and name not in module._non_persistent:
                    yield (f"{module_prefix}.{name}" if module_prefix else name), b

    def _owners(self) -> dict:
        """dotted name -> (owning module, attribute name, is a parameter)."""
        owners = {}
        for module_prefix, module in self.named_modules():
            for is_param, table in ((True, module._parameters), (False, module._buffers)):
                for name, t in table.items():
                    if t is not None:
                        key = f"{module_prefix}.{name}" if module_prefix else name
                        owners[key] = (module, name, is_param)
        return owners

    def load_state_dict(
        self, state_dict, strict: bool = True, assign: bool = False
    ) -> IncompatibleKeys:
        """Load parameters and buffers from ``state_dict`` (Tensors or NumPy arrays).

        Every key and shape is checked before anything is written: with ``strict``, missing
        or unexpected keys raise; a shape mismatch always raises. On error nothing changes.

        ``assign=False`` (default) copies the values into the existing tensors, keeping
        their dtype and device. ``assign=True`` makes the state dict's tensors the module's
        (their dtype and device are kept; no copy), as PyTorch: a value for a parameter that
        is not a ``Parameter`` is wrapped in one; either way ``requires_grad`` stays the
        module parameter's; one value given under two keys (tied weights) becomes one
        Parameter again.
        """
        own = OrderedDict(self._state_items())
        owners = self._owners()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        problems = []
        if strict and (missing or unexpected):
            if missing:
                problems.append(f"missing keys: {missing}")
            if unexpected:
                problems.append(f"unexpected keys: {unexpected}")
        values = {}
        for key in own:
            if key not in state_dict:
                continue
            value = state_dict[key]
            array = value.data if isinstance(value, Tensor) else value
            if not hasattr(array, "shape"):
                problems.append(f"{key}: expected a Tensor or array, got {type(value).__name__}")
                continue
            if tuple(array.shape) != tuple(own[key].shape):
                problems.append(
                    f"size mismatch for {key}: checkpoint has {tuple(array.shape)}, "
                    f"the model has {tuple(own[key].shape)}"
                )
                continue
            values[key] = value if assign else array
        if problems:
            raise RuntimeError(
                f"Error(s) in loading state_dict for {type(self).__name__}:\n  "
                + "\n  ".join(problems)
            )
        if assign:
            self._assign(values, own, owners)
            return IncompatibleKeys(missing, unexpected)
        for key, array in values.items():
            target = own[key]
            converted = backend.to_device(array, target.device)
            target._data = converted.astype(target.dtype, copy=True)
            target._version.value += 1
        return IncompatibleKeys(missing, unexpected)

    @staticmethod
    def _assign(values: dict, own: dict, owners: dict) -> None:
        """``load_state_dict(assign=True)``: put the given tensors in place of the module's."""
        made: dict[int, Tensor] = {}  # id(value) -> what it became, so ties stay tied
        for key, value in values.items():
            module, name, is_param = owners[key]
            new = made.get(id(value))
            if new is None:
                if is_param:
                    if isinstance(value, Parameter):  # requires_grad is the module's (PyTorch)
                        new = value.requires_grad_(own[key].requires_grad)
                    else:
                        new = Parameter(value, requires_grad=own[key].requires_grad)
                else:
                    new = value if isinstance(value, Tensor) else Tensor(value)
                made[id(value)] = new
            if is_param:
                setattr(module, name, new)
            else:
                module._buffers[name] = new
                object.__setattr__(module, name, new)

    def to(self, *args, dtype=None, device=None) -> Module:
        """Move/cast every parameter and buffer in place (parameters stay the same objects)."""
        for arg in args:
            if isinstance(arg, str) and arg.split(":")[0] in ("cpu", "cuda", "gpu"):
                device = arg
            else:
                dtype = arg
        for t in list(self.parameters()) + list(self.buffers()):
            array = t.data
            if device is not None:
                array = backend.to_device(array, backend.normalize_device(device))
            if dtype is not None and backend.is_floating(array.dtype):
                array = array.astype(backend.as_dtype(dtype))
            t.data = array
            if t.grad is not None and device is not None:
                t.grad = Tensor(backend.to_device(t.grad.data, backend.normalize_device(device)))
        return self

    def float(self) -> Module:
        return self.to(np.float32)

    def double(self) -> Module:
        return self.to(np.float64)

    # ------------------------------------------------------------------ calling
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        children = list(self.named_children())
        if not children:
            return lines[0] + ")"
        for name, child in children:
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return "\n".join(lines) + "\n)"


@contextmanager
def eval_mode(module: Module) -> Iterator[Module]:
    """Run a block with ``module`` in eval mode, then ``module.train(was_training)``, also when
    the block raises: ``with eval_mode(model): ...`` for ``was_training = model.training;
    model.eval(); ...; model.train(was_training)``. As ``train()`` does, the restore sets every
    submodule, including those the block added (quantized layers), to the root's flag."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)
