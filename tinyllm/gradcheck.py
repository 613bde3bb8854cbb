"""Finite-difference gradient checking in float64, under a random cotangent.

For a function f with outputs y_j and a random cotangent v_j per output, the scalar
L(x) = sum_j <v_j, y_j(x)> has gradient dL/dx = backward(v). The check compares, for each
input that requires a gradient,

    analytic:  g = backward(v)                           (the op's hand-written backward)
    numeric:   (L(x + eps e) - L(x - eps e)) / (2 eps)   (central difference)

elementwise (e runs over every element) when the input is small, and along random unit
directions d (comparing <g, d>) when it is large. A random cotangent matters: with the
all-ones cotangent of ``.sum()``, softmax and normalization gradients vanish and a wrong
backward passes. An element fails when |g - numeric| > atol + rtol * |numeric|.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tinyllm import backend
from tinyllm.grad_mode import enable_grad, no_grad
from tinyllm.tensor import Tensor


class GradcheckError(AssertionError):
    """Raised when an analytic gradient disagrees with finite differences."""


def _outputs(result) -> list[Tensor]:
    items = result if isinstance(result, (tuple, list)) else (result,)
    return [t for t in items if isinstance(t, Tensor) and t.is_floating_point()]


def _scalar(fn, arrays, inputs, cotangents) -> float:
    """L = sum_j <v_j, y_j> evaluated with the inputs' data replaced by ``arrays``."""
    args = [Tensor(a) if isinstance(t, Tensor) else t for t, a in zip(inputs, arrays)]
    with no_grad():
        outs = _outputs(fn(*args))
    return float(sum(np.sum(backend.to_numpy(o.data) * v) for o, v in zip(outs, cotangents)))


def gradcheck(
    fn: Callable,
    inputs: Sequence | Tensor,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    *,
    max_elements: int = 4096,
    n_directions: int = 16,
    seed: int = 0,
    raise_exception: bool = True,
) -> bool:
    """Check ``fn``'s backward against central differences; True or GradcheckError.

    ``inputs`` are Tensors (those with ``requires_grad`` are checked, and must be float64)
    and other arguments passed through. The error names the input, the element and both
    derivatives. Inputs with more than ``max_elements`` elements are checked along
    ``n_directions`` random directions instead of element by element.
    """
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad; nothing to check")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise ValueError(
                f"gradcheck: input {i} is {inputs[i].dtype}; finite differences need float64"
            )
    rng = np.random.default_rng(seed)

    # analytic: one backward per output with its random cotangent, summed in .grad
    saved_grads = [inputs[i].grad for i in checked]
    for i in checked:
        inputs[i].grad = None
    with enable_grad():
        outs = _outputs(fn(*inputs))
    if not outs:
        raise ValueError("gradcheck: fn returned no floating-point tensor")
    cotangents = [rng.standard_normal(o.shape) for o in outs]
    for k, (out, v) in enumerate(zip(outs, cotangents)):
        if out.requires_grad:
            out.backward(v, retain_graph=k < len(outs) - 1)
    analytic = {}
    for i in checked:
        g = inputs[i].grad
        analytic[i] = np.zeros(inputs[i].shape) if g is None else backend.to_numpy(g.data)
    for i, g in zip(checked, saved_grads):
        inputs[i].grad = g

    base = [backend.to_numpy(t.data).copy() if isinstance(t, Tensor) else t for t in inputs]
    xp = backend.get_array_module(inputs[checked[0]].data)

    def at(i, x):
        arrays = list(base)
        arrays[i] = xp.asarray(x)
        return _scalar(fn, arrays, inputs, cotangents)

    def fail(msg: str) -> bool:
        if raise_exception:
            raise GradcheckError(msg)
        return False

    for i in checked:
        x0 = base[i]
        g = analytic[i]
        if x0.size <= max_elements:
            for flat in range(x0.size):
                e = np.zeros(x0.size)
                e[flat] = eps
                e = e.reshape(x0.shape)
                numeric = (at(i, x0 + e) - at(i, x0 - e)) / (2 * eps)
                a = float(g.reshape(-1)[flat])
                if not abs(a - numeric) <= atol + rtol * abs(numeric):
                    where = tuple(map(int, np.unravel_index(flat, x0.shape))) if x0.ndim else ()
                    return fail(
                        f"gradcheck: input {i} (shape {x0.shape}), element {where}: "
                        f"analytic {a:.10g} vs numeric {numeric:.10g} "
                        f"(|diff| {abs(a - numeric):.3g} > atol {atol} + rtol {rtol} * |numeric|)"
                    )
        else:
            for k in range(n_directions):
                d = rng.standard_normal(x0.shape)
                d /= np.linalg.norm(d)
                numeric = (at(i, x0 + eps * d) - at(i, x0 - eps * d)) / (2 * eps)
                a = float(np.sum(g * d))
                if not abs(a - numeric) <= atol + rtol * abs(numeric):
                    return fail(
                        f"gradcheck: input {i} (shape {x0.shape}), random direction {k}: "
                        f"analytic {a:.10g} vs numeric {numeric:.10g} "
                        f"(|diff| {abs(a - numeric):.3g} > atol {atol} + rtol {rtol} * |numeric|)"
                    )
    return True
