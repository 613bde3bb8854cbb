"""Activation checkpointing (recomputation): ``torch.utils.checkpoint.checkpoint``'s contract.

``y = checkpoint(fn, *args)`` runs ``fn(*args)`` without recording a graph (no intermediate
activation of ``fn`` is kept: only the inputs and the outputs), and records one node whose
backward

    1. replays the random generators' state as it was when the forward began (so a dropout
       inside ``fn`` draws the same mask), and puts the current state back afterwards;
    2. reruns ``fn`` with grad enabled on detached copies of the inputs (leaves that require
       grad exactly where the originals did);
    3. backpropagates the incoming gradients through that fresh graph: parameters used inside
       ``fn`` receive their ``.grad`` from it, and the inputs' gradients are returned.

Memory: peak activations fall from the sum over all segments to the segments' boundaries
plus the largest single segment; time: one more forward of every checkpointed segment.
The gradients are bit-identical to the run without checkpointing as long as ``fn`` is a
deterministic function of its inputs and the generator state (the same ops on the same
arrays in the same order), and a parameter used inside ``fn`` is not also used outside
(its two gradient parts would then be summed in another order).

Random state: on the CPU NumPy's generator state is copied and restored exactly. On a GPU
CuPy's generator has no readable state; ``backend.get_rng_state`` starts a new stream epoch
that ``set_rng_state`` can replay, so the recomputation draws what the checkpointed forward
drew (but the draws after a checkpoint differ from a run without it). ``fn`` must not depend
on mutable state that changes between forward and backward (a module's ``training`` flag).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tinyllm import backend
from tinyllm.function import Function
from tinyllm.grad_mode import enable_grad, is_grad_enabled, no_grad
from tinyllm.tensor import Tensor

__all__ = ["checkpoint", "checkpoint_sequential"]


def _rng_state(on_device: bool):
    """What to replay: NumPy's bit-generator state (CPU) or the device epoch (GPU)."""
    if on_device:
        return ("device", backend.get_rng_state())
    return ("cpu", dict(backend.generator("cpu").bit_generator.state))


def _set_rng_state(state) -> None:
    kind, value = state
    if kind == "device":
        backend.set_rng_state(value)
    else:
        backend.generator("cpu").bit_generator.state = value


class _Checkpoint(Function):
    @staticmethod
    def forward(ctx, run, *arrays):
        # run: a closure holding fn, the input Tensors' layout and the RNG state;
        # arrays: the inputs' data (Tensors) or the values themselves
        ctx.run = run
        ctx.save_for_backward(*(a for a in arrays if hasattr(a, "shape") and hasattr(a, "dtype")))
        return run.outputs

    @staticmethod
    def backward(ctx, *grads):
        ctx.saved_tensors  # noqa: B018  (raises if an input was modified in place since)
        run = ctx.run
        inputs, outputs = run.replay(ctx.needs_input_grad[2:])  # after run, anchor
        pairs = [(o, g) for o, g in zip(outputs, grads) if o.requires_grad and g is not None]
        if pairs:
            with enable_grad():
                if len(pairs) == 1:
                    pairs[0][0].backward(pairs[0][1])
                else:  # d/d out_i of sum_i <out_i, g_i> is g_i exactly
                    total = None
                    for o, g in pairs:
                        term = (o * Tensor(g)).sum()
                        total = term if total is None else total + term
                    total.backward()
        result = [None, None]  # for ``run`` and the anchor
        for t in inputs:
            result.append(t.grad.data if isinstance(t, Tensor) and t.grad is not None else None)
        return tuple(result)


class _Run:
    """fn, its arguments' layout, the RNG state at the forward, and the forward's outputs."""

    def __init__(self, fn, args, kwargs, preserve_rng_state: bool) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs
        on_device = any(isinstance(a, Tensor) and a.device != "cpu" for a in args)
        self.rng = _rng_state(on_device) if preserve_rng_state else None
        with no_grad():
            out = fn(*args, **kwargs)
        self.single = isinstance(out, Tensor)
        outs = (out,) if self.single else tuple(out)
        if not all(isinstance(o, Tensor) for o in outs):
            raise TypeError(
                "checkpoint: fn must return a Tensor or a tuple of Tensors, got "
                f"{type(out).__name__}"
            )
        self.outputs = tuple(o.data for o in outs)

    def replay(self, needs: Sequence[bool]):
        """Rerun fn with grad on detached inputs (the RNG state replayed, then restored)."""
        inputs = []
        for a, need in zip(self.args, needs):
            if isinstance(a, Tensor):
                d = a.detach()
                d.requires_grad_(bool(need) and a.is_floating_point())
                inputs.append(d)
            else:
                inputs.append(a)
        current = None
        if self.rng is not None:
            current = _rng_state(self.rng[0] == "device")
            _set_rng_state(self.rng)
        try:
            with enable_grad():
                out = self.fn(*inputs, **self.kwargs)
        finally:
            if current is not None:
                _set_rng_state(current)
        return inputs, ((out,) if self.single else tuple(out))


def checkpoint(
    function: Callable[..., Any],
    *args: Any,
    preserve_rng_state: bool = True,
    **kwargs: Any,
):
    """``function(*args, **kwargs)``, with its activations recomputed in the backward.

    Returns what ``function`` returns (a Tensor or a tuple of Tensors), attached to the graph
    by one node whose backward reruns ``function`` (module docstring). Under ``no_grad``, or
    when nothing needs a gradient, it is a plain call. With ``preserve_rng_state`` (the
    default) the rerun replays the random state of the forward, so dropout masks match.

    >>> import tinyllm, tinyllm.utils
    >>> x = tinyllm.randn(3, requires_grad=True)
    >>> y = tinyllm.utils.checkpoint(lambda t: (t * t).sum(), x)
    >>> y.backward()
    >>> bool((x.grad.numpy() == 2 * x.detach().numpy()).all())
    True
    """
    if not callable(function):
        raise TypeError(f"checkpoint: function must be callable, got {type(function).__name__}")
    if not is_grad_enabled():
        return function(*args, **kwargs)
    for name, value in kwargs.items():
        if isinstance(value, Tensor) and value.requires_grad:
            raise TypeError(
                f"checkpoint: keyword argument {name!r} is a Tensor that requires grad; pass "
                "it positionally so that its gradient flows"
            )
    run = _Run(function, args, kwargs, preserve_rng_state)
    # a 0-d leaf that requires grad: the node is recorded even when no input requires grad
    # (parameters used inside ``function`` still need their gradients); its gradient is None
    first = next((a for a in args if isinstance(a, Tensor)), None)
    xp = np if first is None else backend.get_array_module(first.data)
    anchor = Tensor(xp.zeros((), np.float32), requires_grad=True)  # on the inputs' device
    outs = _Checkpoint.apply(run, anchor, *args)
    outs = (outs,) if isinstance(outs, Tensor) else outs
    return outs[0] if run.single else outs


def checkpoint_sequential(functions, segments: int, input, preserve_rng_state: bool = True):
    """torch's ``checkpoint_sequential``: run ``functions`` (a list or a Sequential) in
    ``segments`` checkpointed chunks of consecutive layers; the last chunk runs normally."""
    functions = list(functions.children()) if hasattr(functions, "children") else list(functions)
    if not 1 <= segments <= max(1, len(functions)):
        raise ValueError(
            f"checkpoint_sequential: segments must be in [1, {len(functions)}], got {segments}"
        )
    size = -(-len(functions) // segments)

    def run_chunk(start: int, end: int):
        def forward(x):
            for f in functions[start:end]:
                x = f(x)
            return x

        return forward

    x = input
    for start in range(0, len(functions), size):
        end = min(len(functions), start + size)
        if end == len(functions):
            return run_chunk(start, end)(x)
        x = checkpoint(run_chunk(start, end), x, preserve_rng_state=preserve_rng_state)
    return x
