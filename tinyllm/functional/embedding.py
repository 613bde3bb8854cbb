"""Embedding lookup: rows of a weight table picked by integer indices.

Forward, for an index tensor idx of any shape and a table W [V, E]:

    y[..., :] = W[idx[...], :]                              y: idx.shape + [E]

Backward: every output row sends its gradient back to the table row it came from, and rows
picked several times accumulate (a scatter-add, ``tinyllm.backend.scatter_add``):

    dW[v, :] = sum over positions p with idx[p] = v of dy[p, :]
    dW[padding_idx, :] = 0                                  (when padding_idx is given)

As PyTorch, the row at ``padding_idx`` is returned by the forward like any other but never
receives a gradient, so it stays a fixed "pad" vector during training. The index tensor gets
no gradient. Only the indices are saved (and the table's shape). Kernel tiers: reference only.

An index outside [0, V) raises IndexError. That check reads the indices' values: on a NumPy
index it is free and always done; on a device index it would be a host sync per call, so it
runs only under ``tinyllm.detect_anomaly()`` (check the host batch before moving it, or turn
anomaly detection on to debug).
"""

from __future__ import annotations

import numpy as np

from tinyllm.anomaly import is_anomaly_enabled
from tinyllm.backend import get_array_module, scatter_add
from tinyllm.function import Function
from tinyllm.tensor import Tensor

__all__ = ["embedding"]


class Embedding(Function):
    @staticmethod
    def forward(ctx, idx, weight, padding_idx):
        # idx: [...] integers in [0, V); weight: [V, E]
        ctx.save_for_backward(idx)  # idx: [...] integer
        ctx.weight_shape = weight.shape
        ctx.padding_idx = padding_idx
        return weight[idx]  # [..., E]

    @staticmethod
    def backward(ctx, dy):
        (idx,) = ctx.saved_tensors
        dw = None
        if ctx.needs_input_grad[1]:
            xp = get_array_module(dy)
            V, E = ctx.weight_shape
            # y[p] = W[idx[p]]  =>  dW[v] = sum_{p: idx[p] = v} dy[p]
            dw = xp.zeros((V, E), dtype=dy.dtype)
            scatter_add(dw, idx.reshape(-1), dy.reshape(-1, E))
            if ctx.padding_idx is not None:
                dw[ctx.padding_idx] = 0
        return None, dw, None


def embedding(
    input,
    weight,
    padding_idx: int | None = None,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
):
    """Look up rows of ``weight`` [V, E] at the integer indices ``input`` (any shape).

    PyTorch's semantics; ``padding_idx`` (negative counts from the end) names a row that gets
    no gradient. ``max_norm``, ``scale_grad_by_freq`` and ``sparse`` are not supported.

    >>> import tinyllm, tinyllm.functional as F
    >>> W = tinyllm.tensor([[0.0, 0.0], [1.0, 2.0]])
    >>> F.embedding(tinyllm.tensor([1, 1, 0]), W).tolist()
    [[1.0, 2.0], [1.0, 2.0], [0.0, 0.0]]
    """
    if max_norm is not None or scale_grad_by_freq or sparse:
        raise NotImplementedError(
            "embedding: max_norm, scale_grad_by_freq and sparse are not supported"
        )
    idx = input.data if isinstance(input, Tensor) else input
    if not hasattr(idx, "dtype") or idx.dtype.kind not in "iu":
        kind = getattr(idx, "dtype", type(idx).__name__)
        raise TypeError(f"embedding: input must hold integer indices, got {kind}")
    if weight.ndim != 2:
        raise ValueError(
            f"embedding: weight must be a 2-d table [num_embeddings, embedding_dim], "
            f"got shape {tuple(weight.shape)}"
        )
    V = weight.shape[0]
    # the range check reads values: free on a NumPy index, a host sync on a device one, where
    # it runs only under detect_anomaly (unchecked, CuPy's indexing wraps an out-of-range index)
    if idx.size and (get_array_module(idx) is np or is_anomaly_enabled()):
        low, high = int(idx.min()), int(idx.max())
        if low < 0 or high >= V:
            bad = low if low < 0 else high
            raise IndexError(
                f"embedding: index {bad} is out of range for a weight of shape "
                f"{tuple(weight.shape)} (expected indices in [0, {V}))"
            )
    if padding_idx is not None:
        if not -V <= padding_idx < V:
            raise ValueError(
                f"embedding: padding_idx={padding_idx} is out of range for a weight of shape "
                f"{tuple(weight.shape)} (expected in [{-V}, {V}))"
            )
        padding_idx = int(padding_idx) % V
    # a Tensor index stays a Tensor, so that a device mismatch with weight is reported
    return Embedding.apply(input if isinstance(input, Tensor) else idx, weight, padding_idx)
