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


def _comparisons(fn, inputs, eps, max_elements, n_directions, seed):
    """Yield (input index, location, analytic, numeric) for every checked derivative."""
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

    # Each evaluation passes every Tensor input on that input's own device: the unperturbed
    # ones as copies made there (the caller's arrays are never handed to fn), the perturbed
    # one as its host copy x0 +- eps e moved back.
    base = [backend.to_numpy(t.data).copy() if isinstance(t, Tensor) else t for t in inputs]
    devices = [backend.device_of(t.data) if isinstance(t, Tensor) else None for t in inputs]
    unperturbed = [t.data.copy() if isinstance(t, Tensor) else t for t in inputs]

    def at(i, x):
        arrays = list(unperturbed)
        arrays[i] = backend.to_device(x, devices[i])
        return _scalar(fn, arrays, inputs, cotangents)

    for i in checked:
        x0, g = base[i], analytic[i]
        if x0.size <= max_elements:
            for flat in range(x0.size):
                e = np.zeros(x0.size)
                e[flat] = eps
                e = e.reshape(x0.shape)
                numeric = (at(i, x0 + e) - at(i, x0 - e)) / (2 * eps)
                where = tuple(map(int, np.unravel_index(flat, x0.shape))) if x0.ndim else ()
                yield i, f"element {where}", float(g.reshape(-1)[flat]), numeric
        else:
            for k in range(n_directions):
                d = rng.standard_normal(x0.shape)
                d /= np.linalg.norm(d)
                numeric = (at(i, x0 + eps * d) - at(i, x0 - eps * d)) / (2 * eps)
                yield i, f"random direction {k}", float(np.sum(g * d)), numeric


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
    shapes = [
        getattr(t, "shape", None)
        for t in (inputs if isinstance(inputs, (list, tuple)) else [inputs])
    ]
    for i, where, a, numeric in _comparisons(fn, inputs, eps, max_elements, n_directions, seed):
        if not abs(a - numeric) <= atol + rtol * abs(numeric):
            if not raise_exception:
                return False
            raise GradcheckError(
                f"gradcheck: input {i} (shape {shapes[i]}), {where}: analytic {a:.10g} vs "
                f"numeric {numeric:.10g} (|diff| {abs(a - numeric):.3g} > atol {atol} + "
                f"rtol {rtol} * |numeric|)"
            )
    return True


def gradcheck_report(
    fn: Callable,
    inputs: Sequence | Tensor,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    *,
    max_elements: int = 4096,
    n_directions: int = 16,
    seed: int = 0,
) -> dict:
    """Like ``gradcheck`` but measures: max absolute and relative error, and pass/fail."""
    max_abs = max_rel = 0.0
    passed = True
    for _, _, a, numeric in _comparisons(fn, inputs, eps, max_elements, n_directions, seed):
        diff = abs(a - numeric)
        max_abs = max(max_abs, diff)
        max_rel = max(max_rel, diff / max(abs(numeric), atol))  # atol floors the scale
        passed = passed and diff <= atol + rtol * abs(numeric)
    return {"max_abs_error": max_abs, "max_rel_error": max_rel, "passed": passed}


def gradcheck_parameters(
    module, loss_fn: Callable, *, max_elements: int = 256, n_directions: int = 4, **tolerances
) -> list[dict]:
    """Gradcheck ``loss_fn()`` (a function of ``module``'s state) w.r.t. each parameter.

    The module must be float64 (``module.double()``). Each parameter is perturbed in place
    for the finite differences and restored afterwards; parameters with more than
    ``max_elements`` elements are checked along random directions. Returns one row per
    parameter: name, shape and the ``gradcheck_report`` fields.
    """
    rows = []
    for name, p in module.named_parameters():

        def fn(x, _p=p):
            if x is _p:
                return loss_fn()
            saved = _p._data
            _p._data = x.data
            try:
                return loss_fn()
            finally:
                _p._data = saved

        report = gradcheck_report(
            fn, [p], max_elements=max_elements, n_directions=n_directions, **tolerances
        )
        report.update(parameter=name, shape=tuple(p.shape))
        rows.append(report)
    return rows
