"""IVF: an inverted-file index with a k-means coarse quantiser (as faiss ``IndexIVFFlat``).

Training runs k-means (k-means++ seeding, :mod:`tinyllm.rag.kmeans`) to get ``nlist``
centroids c_1..c_nlist. Each stored vector goes to the list of its nearest centroid. A query
ranks the centroids, scans only the vectors in its ``nprobe`` best lists exactly, and returns
the k best of those. Recall grows with nprobe (the probed lists of a larger nprobe are a
superset) and reaches exact search at nprobe = nlist; the cost is about nprobe/nlist of a
brute-force scan plus the centroid ranking.

Vectors are stored grouped by list (``list_vectors`` in list order, ``list_ids`` their ids,
``offsets`` the list boundaries), so each list is one contiguous slice; the scan over the
probed lists is a Numba kernel with a bounded max-heap of size k.

The coarse quantiser uses L2 for the ``"l2"`` and ``"cosine"`` metrics (cosine vectors are
unit-normalised, where L2 and cosine order agree) and inner product for ``"ip"``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numba import njit

from tinyllm.rag.exact import top_k
from tinyllm.rag.kmeans import assign_to_centroids, kmeans
from tinyllm.rag.persistence import load_typed, save_arrays
from tinyllm.rag.search_kernels import heap_pop, heap_push, row_distance
from tinyllm.rag.similarity import (
    check_metric,
    distances_to_scores,
    kernel_metric,
    prepare_vectors,
)

# faiss trains on at most 256 points per centroid
MAX_TRAIN_POINTS_PER_LIST = 256


@njit(cache=True)
def ivf_scan(list_vectors, list_ids, offsets, probes, queries, k, metric):
    """Exact top-k over the probed lists of each query.

    probes (Q, P) int64 list numbers; returns (distances (Q, k) float32, ids (Q, k) int64)."""
    n_queries = queries.shape[0]
    out_d = np.full((n_queries, k), np.inf, np.float32)
    out_ids = np.full((n_queries, k), -1, np.int64)
    res_keys = np.empty(k + 1, np.float32)
    res_rows = np.empty(k + 1, np.int32)
    for qi in range(n_queries):
        query = queries[qi]
        n_res = 0
        for p in range(probes.shape[1]):
            lst = probes[qi, p]
            for r in range(offsets[lst], offsets[lst + 1]):
                d = row_distance(list_vectors, r, query, metric)
                if n_res < k or d < -res_keys[0]:
                    n_res = heap_push(res_keys, res_rows, n_res, -d, r)
                    if n_res > k:
                        n_res = heap_pop(res_keys, res_rows, n_res)
        for t in range(n_res - 1, -1, -1):
            out_d[qi, t] = -res_keys[0]
            out_ids[qi, t] = list_ids[res_rows[0]]
            n_res = heap_pop(res_keys, res_rows, n_res)
    return out_d, out_ids


class IVFIndex:
    """Inverted-file index: ``train`` (k-means), ``add``, ``search(queries, k, nprobe)``.

    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((500, 4))
    >>> index = IVFIndex(dim=4, nlist=8, nprobe=8)
    >>> _ = index.build(x)
    >>> index.search(x[:2], k=1)[1][:, 0].tolist()
    [0, 1]
    """

    def __init__(
        self,
        dim: int,
        nlist: int = 100,
        metric: str = "l2",
        nprobe: int = 1,
        n_iter: int = 25,
        seed: int = 0,
    ) -> None:
        check_metric("IVFIndex", metric)
        for name, value in (("dim", dim), ("nlist", nlist), ("nprobe", nprobe), ("n_iter", n_iter)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"IVFIndex: {name} must be a positive integer, got {value!r}")
        self.dim = int(dim)
        self.nlist = int(nlist)
        self.metric = metric
        self.nprobe = int(nprobe)
        self.n_iter = int(n_iter)
        self.seed = int(seed)
        self.centroids: np.ndarray | None = None
        self._list_vectors = np.zeros((0, self.dim), dtype=np.float32)
        self._list_ids = np.zeros(0, dtype=np.int64)
        self._offsets = np.zeros(self.nlist + 1, dtype=np.int64)

    def __len__(self) -> int:
        return self._list_ids.shape[0]

    @property
    def is_trained(self) -> bool:
        return self.centroids is not None

    @property
    def list_sizes(self) -> np.ndarray:
        """Number of vectors in each list (nlist,)."""
        return np.diff(self._offsets)

    def train(self, vectors: np.ndarray) -> IVFIndex:
        """Fit the nlist centroids by k-means on (a sample of at most 256·nlist of) vectors."""
        x = prepare_vectors("IVFIndex.train", "vectors", vectors, self.dim, self.metric)
        if x.shape[0] < self.nlist:
            raise ValueError(
                f"IVFIndex.train: need at least nlist={self.nlist} vectors, got shape {x.shape}"
            )
        limit = MAX_TRAIN_POINTS_PER_LIST * self.nlist
        if x.shape[0] > limit:
            rng = np.random.default_rng(self.seed)
            x = x[np.sort(rng.choice(x.shape[0], limit, replace=False))]
        centroids, _, _ = kmeans(x, self.nlist, n_iter=self.n_iter, seed=self.seed)
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        return self

    def _assign(self, x: np.ndarray) -> np.ndarray:
        if self.metric == "ip":
            return np.argmax(x @ self.centroids.T, axis=1)
        return assign_to_centroids(x, self.centroids)[0]

    def add(self, vectors: np.ndarray) -> np.ndarray:
        """Store ``vectors`` (N, D) in their nearest lists; returns their ids."""
        if not self.is_trained:
            raise RuntimeError("IVFIndex.add: the index is not trained; call train() first")
        new = prepare_vectors("IVFIndex.add", "vectors", vectors, self.dim, self.metric)
        start = len(self)
        ids = np.arange(start, start + new.shape[0], dtype=np.int64)
        if new.shape[0] == 0:
            return ids
        labels_old = np.repeat(np.arange(self.nlist), self.list_sizes)
        labels = np.concatenate([labels_old, self._assign(new)])
        order = np.argsort(labels, kind="stable")
        self._list_vectors = np.ascontiguousarray(np.concatenate([self._list_vectors, new])[order])
        self._list_ids = np.concatenate([self._list_ids, ids])[order]
        self._offsets = np.searchsorted(labels[order], np.arange(self.nlist + 1)).astype(np.int64)
        return ids

    def build(self, vectors: np.ndarray) -> np.ndarray:
        """``train(vectors)`` then ``add(vectors)``; returns the ids."""
        return self.train(vectors).add(vectors)

    def probe_lists(self, queries: np.ndarray, nprobe: int) -> np.ndarray:
        """The nprobe best lists of each (prepared) query, best first: (Q, nprobe) int64."""
        if self.metric == "ip":
            scores, largest = queries @ self.centroids.T, True
        else:
            c_norms = (self.centroids * self.centroids).sum(1)
            scores, largest = c_norms[None, :] - 2.0 * (queries @ self.centroids.T), False
        return top_k(scores, nprobe, largest=largest)[1].astype(np.int64)

    def search(
        self, queries: np.ndarray, k: int, nprobe: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)`` (Q, k): exact top-k within the ``nprobe`` nearest lists."""
        if not self.is_trained:
            raise RuntimeError("IVFIndex.search: the index is not trained; call train() first")
        q = prepare_vectors("IVFIndex.search", "queries", queries, self.dim, self.metric)
        nprobe = self.nprobe if nprobe is None else nprobe
        if not isinstance(nprobe, (int, np.integer)) or nprobe < 1:
            raise ValueError(f"IVFIndex.search: nprobe must be a positive integer, got {nprobe!r}")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"IVFIndex.search: k must be a positive integer, got {k!r}")
        probes = self.probe_lists(q, min(int(nprobe), self.nlist))
        distances, ids = ivf_scan(
            self._list_vectors,
            self._list_ids,
            self._offsets,
            probes,
            q,
            int(k),
            kernel_metric(self.metric),
        )
        if self.metric != "l2":
            distances = np.where(ids >= 0, distances_to_scores(distances, self.metric), -np.inf)
        return distances.astype(np.float32), ids

    def save(self, path: str | Path) -> Path:
        """Write the index to ``path`` (``.npz``, atomically, no pickle)."""
        if not self.is_trained:
            raise RuntimeError("IVFIndex.save: the index is not trained")
        arrays = {
            "centroids": self.centroids,
            "list_vectors": self._list_vectors,
            "list_ids": self._list_ids,
            "offsets": self._offsets,
        }
        meta = {
            "type": "IVFIndex",
            "dim": self.dim,
            "nlist": self.nlist,
            "metric": self.metric,
            "nprobe": self.nprobe,
            "n_iter": self.n_iter,
            "seed": self.seed,
        }
        return save_arrays(path, arrays, meta)

    @classmethod
    def load(cls, path: str | Path) -> IVFIndex:
        """Read an index written by :meth:`save`."""
        return load_typed(cls, path)

    @classmethod
    def _from_arrays(cls, arrays: dict, meta: dict) -> IVFIndex:
        index = cls(
            meta["dim"], meta["nlist"], meta["metric"], meta["nprobe"], meta["n_iter"], meta["seed"]
        )
        index.centroids = np.ascontiguousarray(arrays["centroids"], dtype=np.float32)
        index._list_vectors = np.ascontiguousarray(arrays["list_vectors"], dtype=np.float32)
        index._list_ids = arrays["list_ids"].astype(np.int64)
        index._offsets = arrays["offsets"].astype(np.int64)
        return index
