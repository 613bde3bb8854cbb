"""Loss functions: cross-entropy fused with log-softmax, and mean squared error.

Cross-entropy over classes c for logits x (rows n), target t_n, smoothing eps, weight-free:

    lse_n  = log sum_c exp(x_nc)                      (saved: one number per row)
    p_nc   = exp(x_nc - lse_n)
    q_nc   = (1 - eps) [c == t_n] + eps / C           (the smoothed target distribution)
    loss_n = lse_n - sum_c q_nc x_nc                  (= -sum_c q_nc log p_nc)
    dx_nc  = dloss_n (p_nc - q_nc)

Rows whose target equals ``ignore_index`` contribute 0 loss and 0 gradient; with
``reduction="mean"`` the sum is divided by the number of rows not ignored (0 rows: loss 0).
Only the log-sum-exp per row is saved, never the [N, C] probabilities. The arithmetic runs in
``tinyllm.kernels`` (``kernels/softmax.py``: reference, Numba and CUDA tiers).
"""

from __future__ import annotations

from tinyllm import kernels
from tinyllm.backend import get_array_module
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
        count = int((target != ignore_index).sum())  # rows that count
        ctx.save_for_backward(logits, target, lse)  # lse: [N], one number per row
        ctx.ignore_index, ctx.label_smoothing = ignore_index, label_smoothing
        ctx.reduction, ctx.count = reduction, count
        if reduction == "none":
            return loss
        total = loss.sum()
        if reduction == "mean":
            total = total / max(count, 1)
        return xp.asarray(total, dtype=logits.dtype)

    @staticmethod
    def backward(ctx, dloss):
        logits, target, lse = ctx.saved_tensors
        # loss_n = lse_n - sum_c q_nc x_nc  =>  dx_nc = dloss_n (softmax(x_n)_c - q_nc)
        if ctx.reduction == "mean":
            dloss = dloss / max(ctx.count, 1)
        dx = kernels.cross_entropy_backward(
            dloss, logits, target, lse, ctx.ignore_index, ctx.label_smoothing
        )
        return dx, None, None, None, None


def cross_entropy(
    input,
    target,
    weight=None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
):
    """Cross-entropy of logits ``input`` [N, C] (or [N, C, d...]) against class ``target``.

    PyTorch's semantics, fused with log-softmax; ``weight`` (class weights) is not supported.
    """
    if weight is not None:
        raise NotImplementedError("cross_entropy: class weights are not supported")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be mean, sum or none, got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    t = target.data if isinstance(target, Tensor) else target
    if t.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: target must hold class indices (integers), got {t.dtype}")
    if input.ndim == 1:
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
    bad = (t != ignore_index) & ((t < 0) | (t >= C))
    if bool(bad.any()):
        raise IndexError(f"cross_entropy: target value {int(t[bad][0])} out of range [0, {C})")
    loss = CrossEntropy.apply(input, xp.asarray(t), ignore_index, float(label_smoothing), reduction)
    if reduction == "none" and extra:
        loss = loss.reshape((-1,) + tuple(extra))
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
