"""Vector similarities and the metric conventions shared by every index.

For row vectors a (N, D) and b (M, D):

- dot:    s_ij = a_i · b_j
- cosine: s_ij = a_i · b_j / (‖a_i‖ ‖b_j‖)        (zero rows get similarity 0)
- L2:     d_ij = ‖a_i − b_j‖² = ‖a_i‖² − 2 a_i·b_j + ‖b_j‖²   (squared, as faiss and hnswlib)

For unit vectors ‖a − b‖² = 2 − 2 a·b, so L2-ascending, dot-descending and cosine-descending
rankings coincide; for unnormalised vectors maximum inner product search differs from both.

Index metrics are ``"l2"`` (results are squared distances, ascending), ``"ip"`` (inner
products, descending) and ``"cosine"`` (vectors are normalised when added and queries when
searched; results are cosine similarities, descending). Internally every index minimises a
distance: squared L2, or −a·b for ``"ip"``/``"cosine"``.
"""

from __future__ import annotations

import numpy as np

METRICS = ("l2", "ip", "cosine")
# the integer codes the Numba kernels use for the distance they minimise
METRIC_L2 = 0
METRIC_NEG_DOT = 1


def check_metric(function: str, metric: str) -> str:
    """Return ``metric`` if it is one of :data:`METRICS`, else raise naming ``function``."""
    if metric not in METRICS:
        raise ValueError(f"{function}: metric must be one of {METRICS}, got {metric!r}")
    return metric


def kernel_metric(metric: str) -> int:
    """The distance code the kernels minimise for an index metric."""
    return METRIC_L2 if metric == "l2" else METRIC_NEG_DOT


def larger_is_better(metric: str) -> bool:
    """True for similarity metrics (``ip``, ``cosine``), False for ``l2`` distances."""
    return metric != "l2"


def as_matrix(function: str, name: str, x, dim: int | None = None, dtype=np.float32) -> np.ndarray:
    """``x`` as a C-contiguous 2-D array of ``dtype``; a 1-D vector becomes one row.

    Raises a ValueError naming ``function`` and ``name`` when the shape is wrong, the width is
    not ``dim``, or the values are not finite.
    """
    array = np.asarray(x)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"{function}: {name} must be 1-D or 2-D (N, D), got shape {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(f"{function}: {name} must have {dim} columns, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"{function}: {name} must be numeric, got dtype {array.dtype}")
    array = np.ascontiguousarray(array, dtype=dtype)
    if array.size and not np.isfinite(array).all():
        raise ValueError(f"{function}: {name} contains NaN or infinity")
    return array


def normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` divided by their L2 norms (rows with norm below ``eps`` stay zero)."""
    x = np.asarray(x)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, eps)


def dot_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All inner products: a (N, D), b (M, D) -> (N, M). 1-D inputs are single rows."""
    a2 = as_matrix("dot_similarity", "a", a, dtype=np.result_type(a, np.float32))
    b2 = as_matrix("dot_similarity", "b", b, dim=a2.shape[1], dtype=a2.dtype)
    return a2 @ b2.T


def cosine_similarity(a: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """All cosine similarities: a (N, D), b (M, D) -> (N, M)."""
    a2 = as_matrix("cosine_similarity", "a", a, dtype=np.result_type(a, np.float32))
    b2 = as_matrix("cosine_similarity", "b", b, dim=a2.shape[1], dtype=a2.dtype)
    return normalize(a2, eps) @ normalize(b2, eps).T


def l2_distance(a: np.ndarray, b: np.ndarray, squared: bool = True) -> np.ndarray:
    """All (squared by default) Euclidean distances: a (N, D), b (M, D) -> (N, M).

    Uses ‖a‖² − 2 a·b + ‖b‖² (one matrix product), clipped at 0 against rounding.
    """
    a2 = as_matrix("l2_distance", "a", a, dtype=np.result_type(a, np.float32))
    b2 = as_matrix("l2_distance", "b", b, dim=a2.shape[1], dtype=a2.dtype)
    d2 = (a2 * a2).sum(1)[:, None] - 2.0 * (a2 @ b2.T) + (b2 * b2).sum(1)[None, :]
    np.maximum(d2, 0.0, out=d2)
    return d2 if squared else np.sqrt(d2)


def pairwise_scores(queries: np.ndarray, base: np.ndarray, metric: str) -> np.ndarray:
    """The result scores of ``metric`` between every query and every base row: (Q, N).

    Squared distances for ``"l2"``; inner products for ``"ip"``; cosines for ``"cosine"``.
    """
    check_metric("pairwise_scores", metric)
    if metric == "l2":
        return l2_distance(queries, base)
    if metric == "ip":
        return dot_similarity(queries, base)
    return cosine_similarity(queries, base)


def prepare_vectors(function: str, name: str, x, dim: int | None, metric: str) -> np.ndarray:
    """Validate ``x`` as float32 (N, dim) rows, normalised when ``metric`` is cosine."""
    array = as_matrix(function, name, x, dim=dim)
    if metric == "cosine":
        array = np.ascontiguousarray(normalize(array), dtype=np.float32)
    return array


def distances_to_scores(distances: np.ndarray, metric: str) -> np.ndarray:
    """Kernel distances (squared L2 or −a·b) -> the scores an index returns."""
    return distances if metric == "l2" else -distances


def empty_results(n_queries: int, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) filled with the padding used when fewer than k results exist."""
    fill = np.inf if metric == "l2" else -np.inf
    return (
        np.full((n_queries, k), fill, dtype=np.float32),
        np.full((n_queries, k), -1, dtype=np.int64),
    )
