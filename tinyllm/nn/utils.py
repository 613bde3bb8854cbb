"""Gradient utilities: global-norm clipping, as ``torch.nn.utils``."""

from __future__ import annotations

import math

import numpy as np

from tinyllm import backend
from tinyllm.tensor import Tensor


def clip_grad_norm_(
    parameters, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False
) -> Tensor:
    """Scale all gradients together so that their global norm is at most ``max_norm``.

    total = (sum_p ||g_p||^q)^(1/q)  (q = norm_type; max |g| for q = inf)
    g_p <- g_p * min(1, max_norm / (total + 1e-6))

    Returns the norm *before* clipping, as PyTorch does. The norm stays on the gradients'
    device: on a GPU no value is read back to the host (unless ``error_if_nonfinite``), and
    the gradients are always scaled by the clamped coefficient, as PyTorch does.
    """
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    grads = [p.grad.data for p in parameters if p.grad is not None]
    if not grads:
        return Tensor(backend.as_array(0.0))
    xp = backend.get_array_module(grads[0])
    norm_type = float(norm_type)
    if math.isinf(norm_type):
        total = xp.stack([xp.abs(g).max().astype(xp.float64) for g in grads]).max()
    else:
        parts = [(xp.abs(g.astype(xp.float64)) ** norm_type).sum() for g in grads]
        total = xp.stack(parts).sum() ** (1.0 / norm_type)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"clip_grad_norm_: the total norm of gradients is {float(total)}")
    coef = xp.minimum(1.0, max_norm / (total + 1e-6))
    if xp is not np or coef < 1.0:  # on the host, skip a pass that would multiply by 1
        for g in grads:
            g *= coef.astype(g.dtype)
    return Tensor(total.astype(grads[0].dtype))
