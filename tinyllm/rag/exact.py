"""Exact (brute-force) nearest-neighbour search.

For Q queries and N stored vectors the score matrix (Q, N) is one matrix product (see
:mod:`tinyllm.rag.similarity`); the k best per row are found with ``np.argpartition`` in
O(N) per row, and only those k are sorted (O(k log k)), instead of a full O(N log N) argsort.
Queries are processed in chunks so the score matrix stays under ``chunk_elements`` floats.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyllm.rag.persistence import load_typed, save_arrays
from tinyllm.rag.similarity import (
    as_matrix,
    check_metric,
    empty_results,
    larger_is_better,
    pairwise_scores,
    prepare_vectors,
)

CHUNK_ELEMENTS = 1 << 24


def top_k(scores: np.ndarray, k: int, largest: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The k best entries of each row of ``scores`` (Q, N), best first: ``(values, indices)``.

    ``largest=True`` picks the largest values, ``False`` the smallest. When k ≥ N all N are
    returned, sorted. Uses argpartition, then sorts only the k selected entries. Equal values
    are ordered by index (lower first), also across the k-th place, so results are
    deterministic.
    """
    scores = np.asarray(scores)
    if scores.ndim == 1:
        values, indices = top_k(scores[None, :], k, largest)
        return values[0], indices[0]
    if scores.ndim != 2:
        raise ValueError(f"top_k: scores must be 1-D or 2-D, got shape {scores.shape}")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"top_k: k must be a positive integer, got {k!r}")
    n = scores.shape[1]
    keyed = -scores if largest else scores
    if k >= n:
        indices = np.argsort(keyed, axis=1, kind="stable")
        return np.take_along_axis(scores, indices, axis=1), indices
    part = np.argpartition(keyed, k - 1, axis=1)
    kth = np.take_along_axis(keyed, part[:, k - 1 : k], axis=1)
    part = part[:, :k]
    # sort the k selected by (key, index) so equal scores come out in index order
    part.sort(axis=1)
    part_keys = np.take_along_axis(keyed, part, axis=1)
    order = np.argsort(part_keys, axis=1, kind="stable")
    indices = np.take_along_axis(part, order, axis=1)
    # rows with ties across the k-th place: the partition picked an arbitrary subset of the
    # tied entries; redo those rows with a full stable sort (lowest indices win)
    ties = np.flatnonzero((keyed <= kth).sum(axis=1) > k)
    if ties.size:
        indices[ties] = np.argsort(keyed[ties], axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, indices, axis=1), indices


def exact_search(
    base: np.ndarray, queries: np.ndarray, k: int, metric: str = "l2"
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest rows of ``base`` (N, D) to each query (Q, D): ``(scores, ids)`` (Q, k).

    Computed in the dtype of the inputs (float64 stays float64). Scores are squared L2
    distances (ascending) for ``"l2"`` and similarities (descending) otherwise. When k > N the
    missing slots hold id −1.
    """
    check_metric("exact_search", metric)
    dtype = np.result_type(base, queries, np.float32)
    base2 = as_matrix("exact_search", "base", base, dtype=dtype)
    queries2 = as_matrix("exact_search", "queries", queries, dim=base2.shape[1], dtype=dtype)
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"exact_search: k must be a positive integer, got {k!r}")
    n_queries, n = queries2.shape[0], base2.shape[0]
    scores_out, ids_out = empty_results(n_queries, k, metric)
    scores_out = scores_out.astype(dtype)
    if n == 0:
        return scores_out, ids_out
    kk = min(k, n)
    rows = max(1, CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, n_queries, rows):
        block = pairwise_scores(queries2[start : start + rows], base2, metric)
        values, indices = top_k(block, kk, largest=larger_is_better(metric))
        scores_out[start : start + rows, :kk] = values
        ids_out[start : start + rows, :kk] = indices
    return scores_out, ids_out


class ExactIndex:
    """A flat index: stores every vector, searches by brute force (:func:`exact_search`).

    >>> index = ExactIndex(dim=2, metric="l2")
    >>> _ = index.add(np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]]))
    >>> scores, ids = index.search(np.array([[0.9, 0.1]]), k=2)
    >>> ids.tolist()
    [[1, 0]]
    """

    def __init__(self, dim: int, metric: str = "l2") -> None:
        check_metric("ExactIndex", metric)
        if not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"ExactIndex: dim must be a positive integer, got {dim!r}")
        self.dim = int(dim)
        self.metric = metric
        self._vectors = np.zeros((0, self.dim), dtype=np.float32)

    def __len__(self) -> int:
        return self._vectors.shape[0]

    @property
    def vectors(self) -> np.ndarray:
        """The stored vectors (N, D), float32 (normalised for cosine)."""
        return self._vectors

    def add(self, vectors: np.ndarray) -> np.ndarray:
        """Append ``vectors`` (N, D); returns their ids (consecutive, in insertion order)."""
        new = prepare_vectors("ExactIndex.add", "vectors", vectors, self.dim, self.metric)
        start = len(self)
        self._vectors = np.concatenate([self._vectors, new], axis=0)
        return np.arange(start, len(self), dtype=np.int64)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)`` of the k nearest stored vectors to each query (Q, D)."""
        q = prepare_vectors("ExactIndex.search", "queries", queries, self.dim, self.metric)
        metric = "ip" if self.metric == "cosine" else self.metric
        return exact_search(self._vectors, q, k, metric)

    def save(self, path: str | Path) -> Path:
        """Write the index to ``path`` (an ``.npz`` archive, atomically, no pickle)."""
        meta = {"type": "ExactIndex", "dim": self.dim, "metric": self.metric}
        return save_arrays(path, {"vectors": self._vectors}, meta)

    @classmethod
    def load(cls, path: str | Path) -> ExactIndex:
        """Read an index written by :meth:`save`."""
        return load_typed(cls, path)

    @classmethod
    def _from_arrays(cls, arrays: dict, meta: dict) -> ExactIndex:
        index = cls(meta["dim"], meta["metric"])
        index._vectors = np.ascontiguousarray(arrays["vectors"], dtype=np.float32)
        return index
