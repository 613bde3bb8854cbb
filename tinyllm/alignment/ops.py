"""Small differentiable helpers that every alignment loss needs.

The losses' log sigma(x) is ``tinyllm.functional.logsigmoid`` (one Function, stable for any x,
with the hand-written backward sigma(-x)).

The masked reductions keep the mask out of the graph (it is a constant) and never divide by 0:

    masked_sum(x, m)  = sum_i x_i m_i
    masked_mean(x, m) = sum_i x_i m_i / max(sum_i m_i, 1)

``masked_whiten`` (NumPy, no graph: advantages are constants of the loss) standardizes the
valid entries: (x - mean) / sqrt(var + eps), with the mean added back when ``shift_mean`` is
False (TRL's convention for the unwhitened-mean variant).
"""

from __future__ import annotations

import numpy as np

import tinyllm
import tinyllm.functional as F
from tinyllm.tensor import Tensor

__all__ = [
    "entropy_from_logits",
    "masked_mean",
    "masked_sum",
    "masked_whiten",
    "as_tensor",
]


def as_tensor(values, like: Tensor | None = None, dtype=None) -> Tensor:
    """A constant Tensor (no grad) from an array, on ``like``'s device and dtype by default."""
    if isinstance(values, Tensor):
        return values
    if like is not None:
        dtype = dtype or like.dtype
        return tinyllm.tensor(np.asarray(values), dtype=dtype, device=like.device)
    return tinyllm.tensor(np.asarray(values), dtype=dtype)


def masked_sum(x: Tensor, mask, dim=None) -> Tensor:
    """sum(x * mask) over ``dim`` (all when None); the mask is a constant."""
    return (x * as_tensor(mask, like=x)).sum(dim=dim)


def masked_mean(x: Tensor, mask, dim=None) -> Tensor:
    """sum(x * mask) / max(sum(mask), 1) over ``dim`` (all when None)."""
    m = np.asarray(mask.data if isinstance(mask, Tensor) else mask, dtype=np.float64)
    count = np.maximum(m.sum() if dim is None else m.sum(axis=dim), 1.0)
    return masked_sum(x, m, dim) / as_tensor(count, like=x)


def masked_whiten(
    values: np.ndarray, mask: np.ndarray, shift_mean: bool = True, eps: float = 1e-8
) -> np.ndarray:
    """Standardize ``values`` over the entries where ``mask`` is 1 (others set to 0).

    Uses the unbiased variance over the valid entries (TRL's ``masked_whiten``).
    """
    values = np.asarray(values, dtype=np.float64)
    m = np.asarray(mask, dtype=np.float64)
    n = m.sum()
    if n == 0:
        return np.zeros_like(values)
    mean = (values * m).sum() / n
    var = (((values - mean) ** 2) * m).sum() / max(n - 1, 1)
    out = (values - mean) / np.sqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * m


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of softmax(logits) over the last dim: H = logsumexp(z) - sum_v p_v z_v."""
    p = F.softmax(logits, dim=-1)
    return F.logsumexp(logits, dim=-1) - (p * logits).sum(dim=-1)
