"""Gradient utilities: global-norm clipping, as ``torch.nn.utils``."""

from __future__ import annotations

import math

from tinyllm import backend
from tinyllm.tensor import Tensor


def clip_grad_norm_(
    parameters, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False
) -> Tensor:
    """Scale all gradients together so that their global norm is at most ``max_norm``.

    total = (sum_p ||g_p||^q)^(1/q)  (q = norm_type; max |g| for q = inf)
    g_p <- g_p * min(1, max_norm / (total + 1e-6))

    Returns the norm *before* clipping, as PyTorch does.
    """
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return Tensor(backend.as_array(0.0))
    xp = backend.get_array_module(grads[0].data)
    norm_type = float(norm_type)
    if math.isinf(norm_type):
        total = max(float(xp.abs(g.data).max()) for g in grads)
    else:
        total = sum(float((xp.abs(g.data.astype(xp.float64)) ** norm_type).sum()) for g in grads)
        total = total ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"clip_grad_norm_: the total norm of gradients is {total}")
    coef = min(1.0, max_norm / (total + 1e-6))
    if coef < 1.0:
        for g in grads:
            g.data *= g.data.dtype.type(coef)
    return Tensor(xp.asarray(total, dtype=grads[0].dtype))
