"""``autocast``: run each op in the precision it tolerates, like ``torch.autocast``.

    with tinyllm.amp.autocast(dtype="bfloat16"):      # or "float16"
        loss = F.cross_entropy(model(x), y)             # GEMMs low, softmax/CE float32
    loss.backward()                                     # outside, as in PyTorch

Per-op policy (PyTorch's CUDA autocast lists, restricted to tinyllm's ops):

- ``LOW_PRECISION_OPS`` (matmul, linear, conv2d, scaled_dot_product_attention): their
  float32 operands are rounded to the low dtype, the op computes in float32 (the
  accumulation a GPU's tensor cores use), and the output is rounded to the low dtype.
- ``FLOAT32_OPS`` (softmax, log_softmax, logsumexp, cross_entropy, mse_loss, layer_norm,
  rms_norm, group_norm, sum, mean, var, exp, log, pow, rsqrt, ...): float16 inputs are cast
  to float32 and the op computes and returns float32. Their inputs, typically the output of
  a GEMM, carry low-precision values, but nothing inside them is rounded.
- every other op runs as it is (on float32 arrays: in float32).

Emulation, said plainly: NumPy has no bfloat16 arithmetic and its float16 GEMM does not
use BLAS, so both low dtypes are *emulated*: values are rounded through ``ml_dtypes`` /
``numpy.float16`` (``tinyllm.amp.low_precision``) and held in float32 arrays, so a tensor's
``dtype`` stays float32 where PyTorch's would say bfloat16. What is rounded is exactly what a
16-bit GPU pipeline stores (GEMM operands and outputs, and the gradients of those
outputs); elementwise ops between two GEMMs (SiLU, RoPE, the gate product) are rounded once,
at the next GEMM's input, where PyTorch would round each of their outputs (a bfloat16
pipeline here is at most slightly more accurate than PyTorch's). float16 overflow is
reproduced (|x| >= 65520 -> inf), in the forward and in the gradients, which is what
``GradScaler`` needs. float64 tensors are left alone, as ``torch.autocast`` leaves them.

Master weights: parameters stay float32 (the optimizer updates them); each GEMM rounds its
copy of a weight on the fly, and the rounding op's backward (``dx = round(dy)``) hands the
weight a float32 gradient with 16-bit content, as ``weight.to(bfloat16)`` does in PyTorch.

How the policy reaches the ops: entering the outermost autocast (in any thread) replaces the
listed names of the ``tinyllm.functional`` module (the ``F.`` namespace, which the layers and
``Tensor``'s methods such as ``@`` and ``.sum()`` call) with wrappers, and leaving the last
one restores them; nothing changes at import time. The wrappers read a thread-local
state, so other threads keep computing in full precision. Code that imported an op by name
(``from tinyllm.functional.x import op``) bypasses the policy; the models' attention, MLP,
norms and loss go through ``F.``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable

import numpy as np

from tinyllm.amp.low_precision import low_dtype_name, round_to
from tinyllm.tensor import Tensor

# op name -> how many leading positional (or named) tensor arguments are GEMM operands
LOW_PRECISION_OPS: dict[str, tuple[str, ...]] = {
    "matmul": ("input", "other"),
    "linear": ("input", "weight", "bias"),
    "conv2d": ("input", "weight", "bias"),
    "scaled_dot_product_attention": ("query", "key", "value"),
}
FLOAT32_OPS: tuple[str, ...] = (
    "softmax", "log_softmax", "logsumexp", "cross_entropy", "mse_loss", "layer_norm",
    "rms_norm", "group_norm", "sum", "mean", "var", "exp", "log", "pow", "rsqrt", "sqrt",
    "logsigmoid",
)  # fmt: skip

_state = threading.local()  # .stack: [(enabled, dtype name)], innermost last
_install_lock = threading.Lock()
_active = 0  # autocast regions open, all threads together
_originals: dict[str, Callable] = {}


def current_policy() -> str | None:
    """The low dtype in force in this thread ('float16' / 'bfloat16'), or None."""
    stack = getattr(_state, "stack", None)
    if not stack:
        return None
    enabled, dtype = stack[-1]
    return dtype if enabled else None


def is_autocast_enabled() -> bool:
    return current_policy() is not None


def policy_of(op_name: str) -> str:
    """'low', 'float32' or 'unchanged': what autocast does to ``op_name``."""
    if op_name in LOW_PRECISION_OPS:
        return "low"
    if op_name in FLOAT32_OPS:
        return "float32"
    return "unchanged"


def _to_low(value, dtype: str):
    if not isinstance(value, Tensor) or value.dtype == np.float64:
        return value
    if value.dtype == np.float16:  # a real float16 tensor: float32 carrier, same values
        value = value.float()
    if value.dtype != np.float32:
        return value
    return round_to(value, dtype)


def _to_float32(value):
    if isinstance(value, Tensor) and value.dtype == np.float16:
        return value.float()
    return value


def _low_wrapper(name: str, original: Callable) -> Callable:
    operands = LOW_PRECISION_OPS[name]

    @functools.wraps(original)
    def run(*args, **kwargs):
        dtype = current_policy()
        if dtype is None:
            return original(*args, **kwargs)
        n = len(operands)
        args = tuple(_to_low(a, dtype) if i < n else a for i, a in enumerate(args))
        kwargs = {k: (_to_low(v, dtype) if k in operands else v) for k, v in kwargs.items()}
        out = original(*args, **kwargs)
        return _to_low(out, dtype)

    run.__autocast_original__ = original
    return run


def _float32_wrapper(original: Callable) -> Callable:
    @functools.wraps(original)
    def run(*args, **kwargs):
        if current_policy() is None:
            return original(*args, **kwargs)
        args = tuple(_to_float32(a) for a in args)
        kwargs = {k: _to_float32(v) for k, v in kwargs.items()}
        return original(*args, **kwargs)

    run.__autocast_original__ = original
    return run


def _install() -> None:
    import tinyllm.functional as F

    for name in LOW_PRECISION_OPS:
        _originals[name] = getattr(F, name)
        setattr(F, name, _low_wrapper(name, _originals[name]))
    for name in FLOAT32_OPS:
        _originals[name] = getattr(F, name)
        setattr(F, name, _float32_wrapper(_originals[name]))


def _uninstall() -> None:
    import tinyllm.functional as F

    for name, original in _originals.items():
        setattr(F, name, original)
    _originals.clear()


class autocast:  # noqa: N801  (PyTorch's name)
    """Context manager (and decorator) choosing a precision per op; see the module docstring.

    ``autocast(device_type="cpu", dtype=None, enabled=True)`` as ``torch.autocast``: dtype
    'bfloat16' (default on "cpu") or 'float16' (default on "cuda"); ``enabled=False`` inside
    an autocast region turns it off for the nested block.
    """

    def __init__(self, device_type: str = "cpu", dtype=None, enabled: bool = True) -> None:
        if device_type in LOW_DTYPES_BY_NAME:  # autocast("bfloat16"): the dtype given first
            device_type, dtype = "cpu", device_type
        if device_type not in ("cpu", "cuda"):
            raise ValueError(f"autocast: device_type must be 'cpu' or 'cuda', got {device_type!r}")
        if dtype is None:
            dtype = "bfloat16" if device_type == "cpu" else "float16"
        self.device_type = device_type
        self.fast_dtype = low_dtype_name(dtype)
        self.enabled = bool(enabled)

    def __enter__(self) -> autocast:
        global _active
        with _install_lock:
            if _active == 0:
                _install()
            _active += 1
        if not hasattr(_state, "stack"):
            _state.stack = []
        _state.stack.append((self.enabled, self.fast_dtype))
        return self

    def __exit__(self, *exc) -> None:
        global _active
        _state.stack.pop()
        with _install_lock:
            _active -= 1
            if _active == 0:
                _uninstall()

    def __call__(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args, **kwargs):
            with autocast(self.device_type, self.fast_dtype, self.enabled):
                return fn(*args, **kwargs)

        return run


LOW_DTYPES_BY_NAME = ("float16", "bfloat16", "half", "fp16", "bf16")
