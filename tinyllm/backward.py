"""The backward pass: reverse-mode traversal of the recorded graph.

``run_backward(root, droot)`` walks the graph of Contexts that produced ``root``:

1. an iterative depth-first search lists the nodes in topological order (no recursion, so a
   chain of 100,000 ops works);
2. nodes run in that order, root first; each receives the summed gradient of each of its
   outputs and returns one gradient per input;
3. a gradient is summed back to its input's shape where the forward broadcast (the one place
   where un-broadcasting happens), checked for shape and dtype, then routed to the node that
   made that input, or accumulated for a leaf;
4. leaves get ``.grad += gradient`` once, after hooks; ``retain_grad`` tensors keep theirs;
5. unless ``retain_graph``, each node frees its saved arrays right after its backward.
"""

from __future__ import annotations

import time

from tinyllm import anomaly, profiler_state
from tinyllm.backend import get_array_module
from tinyllm.grad_mode import no_grad
from tinyllm.tensor import Tensor


def unbroadcast(grad, shape: tuple, op_name: str, index: int):
    """Sum ``grad`` over the axes that broadcasting added or stretched, to get ``shape``."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra < 0:
        raise RuntimeError(
            f"{op_name}.backward returned a gradient of shape {grad.shape} for input {index} "
            f"of shape {shape}"
        )
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    if grad.shape != shape:
        raise RuntimeError(
            f"{op_name}.backward returned a gradient of shape {grad.shape} for input {index} "
            f"of shape {shape}; it cannot be summed back to the input's shape"
        )
    return grad


def topological_order(root_node) -> list:
    """Nodes reachable from ``root_node``, each before every node that made its inputs."""
    order = []
    visited = {id(root_node)}
    stack = [(root_node, iter(root_node.inputs))]
    while stack:
        node, inputs = stack[-1]
        for tensor in inputs:
            child = tensor.grad_fn if tensor is not None else None
            if child is not None and id(child) not in visited:
                visited.add(id(child))
                stack.append((child, iter(child.inputs)))
                break
        else:
            stack.pop()
            order.append(node)
    order.reverse()
    return order


def _hooked(tensor, grad):
    """Apply ``tensor``'s hooks to ``grad`` (an array); a hook may return a replacement."""
    for hook in tensor._hooks or ():
        result = hook(Tensor._from_op(grad, False))
        if result is not None:
            grad = result.data if isinstance(result, Tensor) else result
    return grad


def run_backward(root, droot, retain_graph: bool = False) -> None:
    """Backpropagate ``droot`` (an array shaped like ``root``) into the leaves' ``.grad``."""
    leaf_grads: dict[int, list] = {}  # id(leaf) -> [leaf, summed gradient]

    def add_leaf(leaf, grad):
        entry = leaf_grads.get(id(leaf))
        if entry is None:
            leaf_grads[id(leaf)] = [leaf, grad]
        else:
            entry[1] = entry[1] + grad

    if root.grad_fn is None:
        add_leaf(root, droot)
        order = []
    else:
        order = topological_order(root.grad_fn)
    pending: dict[int, list] = {}
    if order:
        pending[id(root.grad_fn)] = [None] * len(root.grad_fn.output_meta)
        pending[id(root.grad_fn)][root._output_index] = droot

    checking = anomaly.is_anomaly_enabled()
    profiler = profiler_state.active
    with no_grad():
        for node in order:
            grads = pending.pop(id(node), None)
            if grads is None:
                missing = 1
            elif len(grads) == 1:
                missing = 1 if grads[0] is None else 0
            else:
                missing = sum(g is None for g in grads)
            if grads is None or missing == len(grads):
                if not retain_graph:
                    node.release()
                continue
            for i, ref in enumerate(node.outputs):
                out = ref()
                if out is not None and (out._hooks or out._retains_grad) and grads[i] is not None:
                    if out._hooks:
                        grads[i] = _hooked(out, grads[i])
                    if out._retains_grad:
                        g = grads[i]
                        out.grad = Tensor._from_op(
                            g if out.grad is None else out.grad.data + g, False
                        )
            if missing and node.materialize_grads:
                xp = get_array_module(next(x for x in grads if x is not None))
                for i, g in enumerate(grads):
                    if g is None:
                        shape, dtype = node.output_meta[i]
                        grads[i] = xp.zeros(shape, dtype=dtype)
            if node.freed:
                raise RuntimeError(node.second_backward_message())
            if profiler is not None:
                start = time.perf_counter()
            input_grads = node.fn.backward(node, *grads)
            if profiler is not None:
                profiler.record_backward(node.name, time.perf_counter() - start)
            if type(input_grads) is not tuple:
                input_grads = (input_grads,)
            if len(input_grads) != len(node.inputs):
                raise RuntimeError(
                    f"{node.name}.backward returned {len(input_grads)} gradients, "
                    f"expected {len(node.inputs)} (one per forward argument)"
                )
            if checking:
                anomaly.check_finite(node.name, "backward", input_grads, node.created_at)
            for index, (tensor, grad) in enumerate(zip(node.inputs, input_grads)):
                if grad is None or tensor is None or not tensor._requires_grad:
                    continue
                if grad.shape != tensor._data.shape:
                    grad = unbroadcast(grad, tensor._data.shape, node.name, index)
                if grad.dtype != tensor._data.dtype and tensor._data.dtype.name == "bfloat16":
                    # a bfloat16 input's backward may compute in float32 (ml_dtypes promotes
                    # matmul and the kernels' reference tier computes in float32): the
                    # gradient is stored in the input's format, as PyTorch stores bf16 grads
                    grad = grad.astype(tensor._data.dtype)
                if grad.dtype != tensor._data.dtype:
                    raise RuntimeError(
                        f"{node.name}.backward returned a {grad.dtype} gradient for input "
                        f"{index} of dtype {tensor.dtype}"
                    )
                producer = tensor.grad_fn
                if producer is None:
                    add_leaf(tensor, grad)
                    continue
                slots = pending.get(id(producer))
                if slots is None:
                    slots = pending[id(producer)] = [None] * len(producer.output_meta)
                k = tensor._output_index
                slots[k] = grad if slots[k] is None else slots[k] + grad
            if not retain_graph:
                node.release()

        given = set()
        for leaf, grad in leaf_grads.values():
            if leaf._hooks:
                grad = _hooked(leaf, grad)
            if leaf.grad is not None:
                grad = leaf.grad.data + grad
            elif grad is droot or grad.base is not None or id(grad) in given:
                # each leaf owns its .grad: never a view or an alias of another array
                grad = grad.copy()
            given.add(id(grad))
            leaf.grad = Tensor._from_op(grad, False)
