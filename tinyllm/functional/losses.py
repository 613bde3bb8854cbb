"""Loss functions: cross-entropy fused with log-softmax, and mean squared error.

Cross-entropy over classes c for logits x (rows n), target t_n, smoothing eps, weight-free:

    lse_n  = log sum_c exp(x_nc)                      (saved: one number per row)
    p_nc   = exp(x_nc - lse_n)
    q_nc   = (1 - eps) [c == t_n] + eps / C           (the smoothed target distribution)
    loss_n = lse_n - sum_c q_nc x_nc                  (= -sum_c q_nc log p_nc)
    dx_nc  = dloss_n (p_nc - q_nc)

Rows whose target equals ``ignore_index`` contribute 0 loss and 0 gradient; with
``reduction="mean"`` the sum is divided by the number of rows not ignored (0 rows: loss 0).
A class index outside [0, C) that is not ``ignore_index`` raises IndexError (as PyTorch).

Soft targets (PyTorch's "class probabilities": a float target of the input's shape), with
q_nc = (1 - eps) t_nc + eps / C (PyTorch's smoothing rule; sum_c q_nc need not be 1):

    loss_n = lse_n sum_c q_nc - sum_c q_nc x_nc       (= -sum_c q_nc log p_nc)
    dx_nc  = dloss_n (p_nc sum_k q_nk - q_nc)
    dt_nc  = dloss_n (1 - eps) (lse_n - x_nc)         (the target is differentiable too)

``ignore_index`` does not apply to soft targets, and ``reduction="mean"`` divides by the
number of rows N (times the extra dims d...), as PyTorch.

Host syncs: on a device (CuPy) array nothing here reads a value back to the host. The number
of rows that count, n = sum_n [t_n != ignore_index], stays a 0-d device array and the mean
divides by max(n, 1) on the device. The range check of the class indices runs on NumPy
targets always (it costs no sync there) and on device targets only under
``tinyllm.detect_anomaly()``; unchecked, an out-of-range index on the device gives that
row a NaN loss and NaN gradients (the CUDA kernel never reads outside the row). A target
on another device than the input is an error naming both devices.

Only the log-sum-exp per row is saved, never the [N, C] probabilities. The arithmetic runs in
``tinyllm.kernels`` (``kernels/softmax.py``: class indices on reference, Numba and CUDA
tiers; soft targets on reference and Numba).
"""

from __future__ import annotations

import numpy as np

from tinyllm import kernels
from tinyllm.anomaly import is_anomaly_enabled
from tinyllm.backend import device_of, get_array_module, is_floating
from tinyllm.function import Function
from tinyllm.tensor import Tensor

__all__ = ["cross_entropy", "mse_loss"]


class CrossEntropy(Function):
    """Runs ``tinyllm.kernels.cross_entropy_forward/backward`` (reference, Numba or CUDA)."""

    @staticmethod
    def forward(ctx, logits, target, ignore_index, label_smoothing, reduction):
        # logits: [N, C]; target: [N] integer
        xp = get_array_module(logits)
        loss, lse = kernels.cross_entropy_forward(logits, target, ignore_index, label_smoothing)
        ctx.save_for_backward(logits, target, lse)  # lse: [N], one number per row
        ctx.ignore_index, ctx.label_smoothing = ignore_index, label_smoothing
        ctx.reduction = reduction
        if reduction == "none":
            return loss
        total = loss.sum()
        if reduction == "mean":
            # max(n, 1), n = rows not ignored: a 0-d array of the logits' dtype, computed
            # where the target is (no host sync on a device); exact below 2^24 rows in float32
            count = xp.maximum((target != ignore_index).sum(), 1).astype(logits.dtype)
            ctx.count = count  # [] (0-d)
            total = total / count
        return xp.asarray(total, dtype=logits.dtype)

    @staticmethod
    def backward(ctx, dloss):
        logits, target, lse = ctx.saved_tensors
        # loss_n = lse_n - sum_c q_nc x_nc  =>  dx_nc = dloss_n (softmax(x_n)_c - q_nc)
        if ctx.reduction == "mean":
            dloss = dloss / ctx.count  # mean = sum / max(n, 1)
        dx = kernels.cross_entropy_backward(
            dloss, logits, target, lse, ctx.ignore_index, ctx.label_smoothing
        )
        return dx, None, None, None, None


class CrossEntropySoft(Function):
    """Runs ``tinyllm.kernels.cross_entropy_soft_forward/backward`` (reference or Numba)."""

    @staticmethod
    def forward(ctx, logits, target, label_smoothing, reduction):
        # logits, target: [..., C] (classes last); loss: [...]
        xp = get_array_module(logits)
        loss, lse = kernels.cross_entropy_soft_forward(logits, target, label_smoothing)
        ctx.save_for_backward(logits, target, lse)  # lse: [...], one number per row
        ctx.label_smoothing, ctx.reduction, ctx.rows = label_smoothing, reduction, loss.size
        if reduction == "none":
            return loss
        total = loss.sum()
        if reduction == "mean":
            total = total / max(loss.size, 1)
        return xp.asarray(total, dtype=logits.dtype)

    @staticmethod
    def backward(ctx, dloss):
        logits, target, lse = ctx.saved_tensors
        # loss_n = lse_n sum_c q_nc - sum_c q_nc x_nc, q = (1 - eps) t + eps / C
        #   =>  dx_nc = dloss_n (p_nc sum_k q_nk - q_nc),  dt_nc = dloss_n (1 - eps)(lse_n - x_nc)
        if ctx.reduction == "mean":
            dloss = dloss / max(ctx.rows, 1)
        needs = ctx.needs_input_grad
        dx, dt = kernels.cross_entropy_soft_backward(
            dloss, logits, target, lse, ctx.label_smoothing, target_grad=needs[1]
        )
        return (dx if needs[0] else None), dt, None, None


def _classes_last(x):
    """[N, C, d...] -> [N, d..., C] (a Tensor is permuted on the graph; an array is moved)."""
    if x.ndim <= 2:
        return x
    if isinstance(x, Tensor):
        return x.permute(0, *range(2, x.ndim), 1)
    return get_array_module(x).moveaxis(x, 1, -1)


def _soft_cross_entropy(input, target, reduction: str, label_smoothing: float):
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(
            f"cross_entropy: a probability target must have the input's shape, got target "
            f"{tuple(target.shape)} and input {tuple(input.shape)}"
        )
    if target.dtype != input.dtype:
        raise TypeError(
            f"cross_entropy: a probability target must have the input's dtype, got target "
            f"{target.dtype} and input {input.dtype}"
        )
    if input.ndim == 0:
        raise ValueError("cross_entropy: input must have a class dim, got a 0-d tensor")
    return CrossEntropySoft.apply(
        _classes_last(input), _classes_last(target), float(label_smoothing), reduction
    )


def cross_entropy(
    input,
    target,
    weight=None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
):
    """Cross-entropy of logits ``input`` [C], [N, C] or [N, C, d...] against ``target``.

    ``target`` holds class indices (integers of shape [], [N] or [N, d...]) or class
    probabilities (floats of the input's shape). PyTorch's semantics, fused with
    log-softmax; ``weight`` (class weights) is not supported.

    >>> import tinyllm, tinyllm.functional as F
    >>> x = tinyllm.tensor([[0.0, 0.0]])
    >>> round(F.cross_entropy(x, tinyllm.tensor([1])).item(), 4)
    0.6931
    >>> round(F.cross_entropy(x, tinyllm.tensor([[0.25, 0.75]])).item(), 4)
    0.6931
    >>> F.cross_entropy(tinyllm.tensor([0.0, 0.0]), tinyllm.tensor(1), reduction="none").shape
    ()
    """
    if weight is not None:
        raise NotImplementedError("cross_entropy: class weights are not supported")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be mean, sum or none, got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    t = target.data if isinstance(target, Tensor) else target
    x = input.data if isinstance(input, Tensor) else input
    t_device, x_device = device_of(t), device_of(x)
    if t_device != x_device:
        raise RuntimeError(
            f"cross_entropy: target is on {t_device} but input is on {x_device} (target "
            f"{tuple(t.shape)}, input {tuple(x.shape)}): move the target with "
            f".to({x_device!r})"
        )
    if is_floating(t.dtype):
        return _soft_cross_entropy(input, target, reduction, label_smoothing)
    if t.dtype.kind not in "iu":
        raise TypeError(
            f"cross_entropy: target must hold class indices (integers) or class "
            f"probabilities (floats of the input's shape), got dtype {t.dtype}"
        )
    vector = input.ndim == 1
    if vector:
        input, t = input.unsqueeze(0), t.reshape(1)
    extra = input.shape[2:]
    if input.ndim > 2:  # [N, C, d...] -> [N * d..., C]
        input = input.permute(0, *range(2, input.ndim), 1).reshape(-1, input.shape[1])
        t = t.reshape(-1)
    if t.shape != (input.shape[0],):
        raise ValueError(
            f"cross_entropy: target shape {tuple(target.shape)} does not match input rows "
            f"{input.shape[0]} (input {tuple(input.shape)})"
        )
    C = input.shape[1]
    xp = get_array_module(t)
    check_values = xp is np or is_anomaly_enabled()  # a host sync on a device array
    bad = (t != ignore_index) & ((t < 0) | (t >= C)) if check_values else None
    if check_values and bool(bad.any()):
        raise IndexError(
            f"cross_entropy: target value {int(t[bad][0])} is out of range for {C} classes "
            f"[0, {C}) (and is not ignore_index={ignore_index})"
        )
    loss = CrossEntropy.apply(input, xp.asarray(t), ignore_index, float(label_smoothing), reduction)
    if reduction == "none" and extra:
        loss = loss.reshape((-1,) + tuple(extra))
    elif reduction == "none" and vector:  # input [C], target []: one loss of shape []
        loss = loss.reshape(())
    return loss


def mse_loss(input, target, reduction: str = "mean"):
    """Mean squared error, composed from primitive ops."""
    diff = input - target
    sq = diff * diff
    if reduction == "mean":
        return sq.mean()
    if reduction == "sum":
        return sq.sum()
    if reduction == "none":
        return sq
    raise ValueError(f"mse_loss: reduction must be mean, sum or none, got {reduction!r}")
