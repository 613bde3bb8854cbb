"""k-means clustering (Lloyd's algorithm) with k-means++ seeding.

k-means++ (Arthur & Vassilvitskii, 2007): the first centre is a uniformly random point; each
further centre is a point drawn with probability D(x)² / Σ D², where D(x) is the distance from
x to its nearest centre chosen so far. The expected inertia is then O(log k) times optimal.

Lloyd iterations alternate assignment (each point to its nearest centre, via
‖x‖² − 2 x·c + ‖c‖², one matrix product per chunk) and update (each centre becomes the mean
of its points), until the relative decrease of the inertia Σ ‖x − c(x)‖² falls below ``tol``.
A centre that loses all its points is moved to the point currently furthest from its own
centre (each empty centre to a different point), as faiss does in spirit.
"""

from __future__ import annotations

import numpy as np

from tinyllm.rag.similarity import as_matrix

_CHUNK_ELEMENTS = 1 << 22


def assign_to_centroids(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of each row of x (N, D) among centroids (K, D).

    Returns ``(labels (N,) int64, squared distances (N,))``.
    """
    n, k = x.shape[0], centroids.shape[0]
    labels = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=x.dtype)
    c_norms = (centroids * centroids).sum(1)
    rows = max(1, _CHUNK_ELEMENTS // max(k, 1))
    for start in range(0, n, rows):
        block = x[start : start + rows]
        d2 = c_norms[None, :] - 2.0 * (block @ centroids.T)
        best = np.argmin(d2, axis=1)
        labels[start : start + rows] = best
        dist[start : start + rows] = np.take_along_axis(d2, best[:, None], 1)[:, 0] + (
            block * block
        ).sum(1)
    np.maximum(dist, 0.0, out=dist)
    return labels, dist


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k initial centres drawn by D² sampling (k-means++) from the rows of x (N, D)."""
    n = x.shape[0]
    x_norms = (x * x).sum(1)
    centres = np.empty((k, x.shape[1]), dtype=x.dtype)
    first = int(rng.integers(n))
    centres[0] = x[first]
    d2 = np.maximum(x_norms - 2.0 * (x @ x[first]) + x_norms[first], 0.0)
    for i in range(1, k):
        total = float(d2.sum())
        if total <= 0.0:  # fewer distinct points than k: duplicate uniformly random points
            pick = int(rng.integers(n))
        else:
            cumulative = np.cumsum(d2, dtype=np.float64)
            pick = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
            pick = min(pick, n - 1)
        centres[i] = x[pick]
        np.minimum(d2, np.maximum(x_norms - 2.0 * (x @ x[pick]) + x_norms[pick], 0.0), out=d2)
    return centres


def kmeans(
    x: np.ndarray,
    k: int,
    n_iter: int = 25,
    tol: float = 1e-4,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Cluster the rows of x (N, D) into k groups.

    Returns ``(centroids (k, D) float32, labels (N,) int64, inertia)``.
    """
    x = as_matrix("kmeans", "x", x)
    n = x.shape[0]
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ValueError(
            f"kmeans: k must be an integer in [1, N={n}] for x of shape {x.shape}, got {k!r}"
        )
    rng = np.random.default_rng(seed)
    centroids = kmeans_plus_plus(x, int(k), rng)
    previous = np.inf
    labels, dist = assign_to_centroids(x, centroids)
    for _ in range(n_iter):
        # update step: each centroid becomes the mean of its points
        counts = np.bincount(labels, minlength=k)
        sums = np.zeros_like(centroids)
        np.add.at(sums, labels, x)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
        empty = np.flatnonzero(~filled)
        if empty.size:
            far = np.argsort(-dist)[: empty.size]
            centroids[empty] = x[far]
        labels, dist = assign_to_centroids(x, centroids)
        inertia = float(dist.sum(dtype=np.float64))
        if previous - inertia <= tol * max(inertia, 1e-30):
            previous = inertia
            break
        previous = inertia
    return centroids, labels, float(dist.sum(dtype=np.float64))
