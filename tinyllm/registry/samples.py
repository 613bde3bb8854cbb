"""Sample-input generators shared by the registry's family files (one of each).

Every generator takes ``(rng, dtype, *shape)`` and returns a NumPy array of ``dtype``; no
shape arguments means a 0-d array. They place values where finite differences are
meaningful: away from kinks (``away_from``), without ties (``distinct``), inside a domain
(``positive``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["affine", "away_from", "distinct", "positive", "probabilities", "randn"]


def randn(rng: np.random.Generator, dtype, *shape: int) -> np.ndarray:
    """Standard normal samples."""
    return rng.standard_normal(shape).astype(dtype)


def positive(rng: np.random.Generator, dtype, *shape: int) -> np.ndarray:
    """Uniform in [0.5, 2]: inside the domain of log, sqrt, rsqrt and a divisor."""
    return rng.uniform(0.5, 2.0, shape).astype(dtype)


def away_from(
    rng: np.random.Generator, dtype, *shape: int, points=(0.0,), gap: float = 0.1
) -> np.ndarray:
    """Normal samples pushed at least ``gap`` away from each of ``points`` (kinks)."""
    x = rng.standard_normal(shape)
    for p in points:
        near = np.abs(x - p) < gap
        x = np.where(near, p + np.sign(x - p + 1e-12) * (gap + np.abs(x - p)), x)
    return x.astype(dtype)


def distinct(rng: np.random.Generator, dtype, *shape: int) -> np.ndarray:
    """Values with no ties (a shuffled grid plus small noise): max/min are well defined."""
    n = int(np.prod(shape)) if shape else 1
    grid = rng.permutation(n).astype(np.float64) * 0.37 - n * 0.15
    return (grid + rng.uniform(-0.05, 0.05, n)).reshape(shape).astype(dtype)


def probabilities(rng: np.random.Generator, dtype, *shape: int, axis: int = -1) -> np.ndarray:
    """Positive values summing to 1 along ``axis`` (a class distribution per row)."""
    p = rng.uniform(0.1, 1.0, shape)
    return (p / p.sum(axis=axis, keepdims=True)).astype(dtype)


def affine(rng: np.random.Generator, dtype, *shape: int) -> tuple[np.ndarray, np.ndarray]:
    """A weight around 1 and a bias around 0, both of ``shape``."""
    return (1 + 0.5 * rng.standard_normal(shape)).astype(dtype), randn(rng, dtype, *shape)
