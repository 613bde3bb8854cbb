"""Choosing the next token from logits: temperature, top-k, nucleus (top-p), greedy.

For logits z over V tokens:
    temperature T:  p = softmax(z / T)            (T -> 0 is greedy, argmax)
    top-k:          keep the k largest logits, set the rest to -inf
    top-p:          keep the smallest set of tokens, by descending probability, whose
                    cumulative probability reaches p (the token that crosses p is kept)
"""

from __future__ import annotations

import numpy as np


def top_k_filter(logits: np.ndarray, k: int) -> np.ndarray:
    """Logits with all but the ``k`` largest per row set to -inf (ties at the k-th kept)."""
    if k <= 0:
        raise ValueError(f"top_k must be positive, got {k}")
    if k >= logits.shape[-1]:
        return logits
    kth = np.partition(logits, -k, axis=-1)[..., -k][..., None]
    return np.where(logits < kth, -np.inf, logits)


def top_p_filter(logits: np.ndarray, p: float) -> np.ndarray:
    """Logits outside the nucleus of cumulative probability ``p`` set to -inf."""
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    if p == 1.0:
        return logits
    order = np.argsort(-logits, axis=-1, kind="stable")
    sorted_logits = np.take_along_axis(logits, order, axis=-1)
    probs = np.exp(sorted_logits - sorted_logits[..., :1])
    probs /= probs.sum(axis=-1, keepdims=True)
    before = np.cumsum(probs, axis=-1) - probs  # mass of the tokens ranked above each one
    drop_sorted = before >= p
    drop = np.empty_like(drop_sorted)
    np.put_along_axis(drop, order, drop_sorted, axis=-1)
    return np.where(drop, -np.inf, logits)


def sample_next(
    logits: np.ndarray,
    rng: np.random.Generator,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> np.ndarray:
    """One token id per row of ``logits`` [B, V] (int64 [B])."""
    logits = np.asarray(logits, dtype=np.float64)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return logits.argmax(axis=-1).astype(np.int64)
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    u = rng.random((logits.shape[0], 1))
    return (probs.cumsum(axis=-1) < u).sum(axis=-1).clip(max=logits.shape[-1] - 1).astype(np.int64)
