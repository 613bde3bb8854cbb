"""``Function``: one differentiable op, a forward and a hand-written backward, on arrays.

The API is PyTorch's custom-function API, except that ``forward`` and ``backward`` receive and
return arrays (NumPy or CuPy), never Tensors::

    class Square(Function):
        @staticmethod
        def forward(ctx, x):               # x: ndarray
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, dy):             # one gradient per forward argument
            (x,) = ctx.saved_tensors
            return 2 * x * dy

    y = Square.apply(t)                    # t, y: Tensor

``apply`` unwraps Tensor arguments to arrays (other arguments pass through unchanged), runs
``forward`` without recording anything inside it, wraps the outputs, and — when grad mode is
on and some input requires a gradient — records the ``Context`` as the outputs' ``grad_fn``.

What the engine guarantees to every backward:
- it receives one gradient per output (zeros for outputs that got none), of the output's shape;
- what it returns is checked: one entry per forward argument, ``None`` where the argument is
  not a Tensor requiring a gradient; a gradient of a broadcast shape is summed back to the
  input's shape here, in one place, so elementwise backwards stay one line; the dtype must
  equal the input's (no silent upcasting);
- arrays it saved that belong to a Tensor are version-checked: an in-place change to such a
  Tensor between forward and backward raises instead of giving a wrong gradient.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

from tinyllm import anomaly, backend, profiler_state
from tinyllm.grad_mode import is_grad_enabled
from tinyllm.tensor import Tensor


def live_graph_nodes() -> int:
    """How many recorded graph nodes (Contexts) are alive now: a leak detector for tests.

    Walks the garbage collector's objects, so it costs milliseconds: call it in tests and
    debugging, not in a training loop.
    """
    import gc

    return sum(1 for o in gc.get_objects() if type(o) is Context and o.fn is not None)


class Context:
    """The record of one op application: what backward needs, and the graph edges.

    ``inputs`` holds strong references to the input Tensors (the graph's edges); outputs are
    held only weakly, so a graph is freed as soon as nothing refers to its last output.
    """

    # Defaults live on the class, so creating a Context costs no attribute writes; an op's
    # forward may set any other attribute it needs for backward (ctx.dim = ...).
    saved_arrays: tuple = ()
    needs_input_grad: tuple = ()
    non_differentiable: tuple = ()
    materialize_grads = True
    fn: type[Function] | None = None
    inputs: tuple = ()  # input Tensors (None for non-tensor arguments): the graph's edges
    outputs: tuple = ()  # weak references to the output Tensors
    output_meta: tuple = ()  # (shape, dtype) per output
    saved_versions: tuple = ()  # (counter, version) per saved array that is a Tensor's data
    freed = False
    created_at: str | None = None

    # -- the PyTorch-compatible surface ---------------------------------------------
    def save_for_backward(self, *arrays) -> None:
        """Keep these arrays for backward (inputs, outputs or intermediates)."""
        self.saved_arrays = arrays

    @property
    def saved_tensors(self) -> tuple:
        """The arrays given to ``save_for_backward``, checked for in-place changes."""
        if self.freed:
            raise RuntimeError(self.second_backward_message())
        for counter, version in self.saved_versions:
            if counter.value != version:
                raise RuntimeError(
                    f"{self.name}.backward: one of the arrays saved for backward was modified "
                    f"by an in-place operation (version {counter.value}, saved at version "
                    f"{version}); the gradient would be wrong. Use an out-of-place op instead."
                )
        return self.saved_arrays

    def second_backward_message(self) -> str:
        return (
            f"{self.name}.backward: trying to backward through the graph a second time "
            "(its saved arrays were freed after the first backward); call "
            ".backward(retain_graph=True) the first time if you need to backward twice"
        )

    def mark_non_differentiable(self, *arrays) -> None:
        """Declare outputs (e.g. argmax indices) that never carry a gradient."""
        self.non_differentiable = arrays

    def set_materialize_grads(self, value: bool) -> None:
        """When False, backward receives None (not zeros) for outputs that got no gradient."""
        self.materialize_grads = bool(value)

    @property
    def name(self) -> str:
        return self.fn.__name__ if self.fn is not None else "Function"

    def release(self) -> None:
        """Free saved arrays after backward (the graph edges stay, for error messages)."""
        self.saved_arrays = ()
        self.freed = True

    def __repr__(self) -> str:
        return f"<{self.name}Backward>"


class Function:
    """Base class of every differentiable op: subclass and write ``forward``/``backward``."""

    # True for ops whose output is a view of the first input (reshape, transpose, ...):
    # the output then shares the input's version counter, as views share memory.
    is_view = False

    @staticmethod
    def forward(ctx: Context, *args: Any, **kwargs: Any):
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Context, *grads: Any):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any):
        """Run the op on Tensors (and plain values); return a Tensor or a tuple of them."""
        arrays = []
        needs = []
        edges = []  # the input Tensors (None for other arguments): the graph's edges
        tensors = []
        array_type = None
        for a in args:
            if isinstance(a, Tensor):
                data = a._data
                if array_type is None:
                    array_type = type(data)
                elif type(data) is not array_type:
                    _check_same_device(cls, args)
                arrays.append(data)
                needs.append(a._requires_grad)
                edges.append(a)
                tensors.append(a)
            else:
                arrays.append(a)
                needs.append(False)
                edges.append(None)
        record = True in needs and is_grad_enabled()

        ctx = Context()
        ctx.needs_input_grad = tuple(needs) if record else (False,) * len(args)
        profiler = profiler_state.active
        if profiler is not None:
            start = time.perf_counter()
        raw = cls.forward(ctx, *arrays, **kwargs)
        multiple = type(raw) is tuple
        raw_outputs = raw if multiple else (raw,)

        checking = anomaly.is_anomaly_enabled()
        if checking:
            anomaly.check_finite(cls.__name__, "forward", raw_outputs, None)

        non_diff = ctx.non_differentiable
        outputs = []
        for i, array in enumerate(raw_outputs):
            differentiable = (
                record
                and backend.is_floating(array.dtype)  # bfloat16 (ml_dtypes) included
                and not (non_diff and any(array is nd for nd in non_diff))
            )
            out = Tensor._from_op(array, differentiable)
            if differentiable:
                out.grad_fn = ctx
                if i:
                    out._output_index = i
            outputs.append(out)

        if cls.is_view and tensors and args[0] is tensors[0]:
            for out in outputs:
                out._version = tensors[0]._version

        if record:
            ctx.fn = cls
            ctx.inputs = tuple(edges)
            if multiple:
                ctx.outputs = tuple([weakref.ref(o) for o in outputs])
                ctx.output_meta = tuple([(a.shape, a.dtype) for a in raw_outputs])
            else:  # one output (most ops): no list to build
                ctx.outputs = (weakref.ref(outputs[0]),)
                ctx.output_meta = ((raw.shape, raw.dtype),)
            if ctx.saved_arrays:
                ctx.saved_versions = _saved_versions(ctx.saved_arrays, tensors, outputs)
            if checking:
                ctx.created_at = anomaly.creation_stack()
        if profiler is not None:
            saved = sum(getattr(a, "nbytes", 0) for a in ctx.saved_arrays) if record else 0
            profiler.record_forward(cls.__name__, time.perf_counter() - start, saved)
        return tuple(outputs) if multiple else outputs[0]


def _check_same_device(cls, args) -> None:
    devices = [a.device for a in args if isinstance(a, Tensor)]
    for d in devices[1:]:
        if d != devices[0]:
            raise RuntimeError(
                f"{cls.__name__}: expected all tensors on the same device, got {devices[0]} and {d}"
            )


def _saved_versions(saved: tuple, tensors: list, outputs: list) -> tuple:
    """(version counter, current version) for each saved array that is a Tensor's data."""
    records = []
    for array in saved:
        for owner in tensors:
            if owner._data is array:
                records.append((owner._version, owner._version.value))
                break
        else:
            for owner in outputs:
                if owner._data is array:
                    records.append((owner._version, owner._version.value))
                    break
    return tuple(records)
