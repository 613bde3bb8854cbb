"""Linear (fully connected) layer: y = x W^T + b, one Function.

Forward, for x [..., in] (any number of batch dims B), W [out, in] (PyTorch's layout) and an
optional b [out]:

    y = x W^T + b                                           y: [..., out]

Backward, over the batch dims flattened into rows (x2 = x.reshape(-1, in), dy2 likewise):

    dx = dy W                                               [..., in]
    dW = dy2^T x2                                           [out, in]   (one GEMM, not B of them)
    db = sum over rows of dy2                               [out]

Saves x and W (the inputs themselves, no new arrays). Kernel tiers: reference (BLAS via
``@``).
"""

from __future__ import annotations

from tinyllm.function import Function

__all__ = ["linear"]


class Linear(Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        # x: [..., in]; weight: [out, in]; bias: [out] or None
        ctx.save_for_backward(x, weight)  # the inputs
        # one GEMM over the rows: NumPy's batched matmul with a transposed operand does not
        # call BLAS (measured 14x slower for [8, 128, 256] @ [256, 768])
        y = x.reshape(-1, x.shape[-1]) @ weight.T  # [rows, out]
        if bias is not None:
            y += bias
        if y.dtype != x.dtype:  # bfloat16: NumPy's matmul of ml_dtypes arrays gives float32
            y = y.astype(x.dtype)
        return y.reshape(x.shape[:-1] + (weight.shape[0],))

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        out_features, in_features = weight.shape
        dy2 = dy.reshape(-1, out_features)  # [rows, out]
        dx = dw = db = None
        # y = x W^T + b
        if ctx.needs_input_grad[0]:
            dx = (dy2 @ weight).reshape(x.shape)  # dx = dy W: [..., in]
        if ctx.needs_input_grad[1]:
            dw = dy2.T @ x.reshape(-1, in_features)  # dW = dy^T x: [out, in]
        if ctx.needs_input_grad[2]:
            db = dy2.sum(axis=0)  # db = sum of dy over rows: [out]
        return dx, dw, db


def linear(input, weight, bias=None):
    """``input @ weight.T + bias`` with ``weight`` of shape [out_features, in_features].

    >>> import tinyllm, tinyllm.functional as F
    >>> F.linear(tinyllm.tensor([[1.0, 2.0]]), tinyllm.tensor([[1.0, 1.0]]), tinyllm.tensor([0.5]))
    tensor([[3.5]])
    """
    if weight.ndim != 2:
        raise ValueError(
            f"linear: weight must be 2-d [out_features, in_features], got shape "
            f"{tuple(weight.shape)}"
        )
    if input.ndim == 0 or input.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear: input of shape {tuple(input.shape)} does not match weight of shape "
            f"{tuple(weight.shape)} (the input's last dim must equal in_features="
            f"{weight.shape[1]})"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(
            f"linear: bias of shape {tuple(bias.shape)} does not match out_features="
            f"{weight.shape[0]} (weight of shape {tuple(weight.shape)})"
        )
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != input.dtype:
            raise TypeError(f"linear: {name} has dtype {t.dtype} but the input has {input.dtype}")
    return Linear.apply(input, weight, bias)
