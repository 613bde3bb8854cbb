"""Matrix multiplication with NumPy's ``matmul`` broadcasting rules.

    Y = A @ B          dA = dY @ B^T          dB = A^T @ dY

Vectors are promoted (A: [k] -> [1, k]; B: [k] -> [k, 1]) and the added axis removed again.
Batch dims broadcast; the engine sums the gradient of a broadcast operand back. When B is a
plain matrix and A is batched (activations times a weight), dB is computed as one GEMM over
the flattened batch instead of a batched GEMM followed by a sum.
"""

from __future__ import annotations

from tinyllm.function import Function
from tinyllm.tensor import Tensor

__all__ = ["matmul"]


class MatMul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        if a.ndim == 2 and b.ndim == 2:
            return a.dot(b)  # the same GEMM; ndarray.dot dispatches in half matmul's time
        if a.ndim > 2 and b.ndim == 2:  # one GEMM over the rows (NumPy's batched path is slow)
            y = (a.reshape(-1, a.shape[-1]) @ b).reshape(a.shape[:-1] + (b.shape[-1],))
        else:
            y = a @ b
        # bfloat16: NumPy's matmul of ml_dtypes arrays gives float32 (ndarray.dot does not)
        return y if y.dtype == a.dtype else y.astype(a.dtype)

    @staticmethod
    def backward(ctx, dy):
        a, b = ctx.saved_tensors
        if a.ndim == 2 and b.ndim == 2:  # plain matrices: two GEMMs, nothing to reshape
            need_a, need_b = ctx.needs_input_grad
            return (dy.dot(b.T) if need_a else None), (a.T.dot(dy) if need_b else None)
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        if b.ndim == 1:
            dy = dy[..., None]
        if a.ndim == 1:
            dy = dy[..., None, :]
        da = db = None
        if ctx.needs_input_grad[0] and dy.ndim > 2 and b2.ndim == 2:
            da = (dy.reshape(-1, dy.shape[-1]) @ b2.T).reshape(dy.shape[:-1] + (b2.shape[0],))
            if a.ndim == 1:
                da = da.reshape(da.shape[:-2] + (-1,))
        elif ctx.needs_input_grad[0]:
            da = dy @ b2.swapaxes(-1, -2)
            if a.ndim == 1:
                da = da.reshape(da.shape[:-2] + (-1,))
        if ctx.needs_input_grad[1]:
            if b2.ndim == 2 and a2.ndim > 2:
                k, n = a2.shape[-1], dy.shape[-1]
                db = a2.reshape(-1, k).T @ dy.reshape(-1, n)
            else:
                db = a2.swapaxes(-1, -2) @ dy
            if b.ndim == 1:
                db = db.reshape(db.shape[:-2] + (-1,))
        return da, db


def matmul(input, other):
    """``input @ other``: matrix product with batch broadcasting."""
    a = input._data if isinstance(input, Tensor) else input
    b = other._data if isinstance(other, Tensor) else other
    if a.ndim == 2 and b.ndim == 2 and a.shape[1] == b.shape[0]:  # the common case, checked
        return MatMul.apply(input, other)
    if a.ndim == 0 or b.ndim == 0:
        raise RuntimeError(f"matmul: both arguments need at least 1 dim, got {a.shape} @ {b.shape}")
    k_a = a.shape[-1]
    k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if k_a != k_b:
        raise RuntimeError(
            f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be multiplied "
            f"({k_a} != {k_b})"
        )
    return MatMul.apply(input, other)
