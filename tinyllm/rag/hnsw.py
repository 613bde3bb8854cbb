"""HNSW: hierarchical navigable small-world graphs (Malkov & Yashunin, TPAMI 2018).

A multi-layer proximity graph. Every element gets a random level

    l = ⌊−ln(U) · mL⌋,  U ~ Uniform(0, 1],  mL = 1 / ln M,   so  P(level ≥ l) = M^(−l),

and appears on layers 0..l. Upper layers are sparse "express lanes"; layer 0 holds everything.

INSERT (Algorithm 1) of q with level l into a graph whose entry point has top level L:
greedy descent (ef = 1) from the entry point through layers L..l+1; then on each layer
min(l, L)..0 a beam search with ``ef_construction`` (Algorithm 2) whose result set W also seeds
the next layer; q is linked to M neighbours chosen from W by the heuristic of Algorithm 4, and
each such neighbour e links back to q; when e's list exceeds M_max (M on layers ≥ 1,
M_max0 = 2M on layer 0) it is re-selected from its old list plus q with the same heuristic.
If l > L, q becomes the new entry point (entry-point promotion).

K-NN-SEARCH (Algorithm 5): greedy descent to layer 1, beam search with ``ef`` (at least k) on
layer 0, return the k nearest.

Both loops run in Numba (:mod:`tinyllm.rag.hnsw_kernels`); the graph lives in flat int32
arrays. Vectors are stored as float32. Metrics: ``"l2"`` (squared distances returned),
``"ip"``, ``"cosine"`` (similarities returned).

>>> rng = np.random.default_rng(0)
>>> index = HNSWIndex(dim=8, M=8, ef_construction=50)
>>> _ = index.add(rng.standard_normal((200, 8)))
>>> scores, ids = index.search(index.vectors[:3], k=1)
>>> ids[:, 0].tolist()
[0, 1, 2]
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from tinyllm.rag.hnsw_kernels import hnsw_insert, hnsw_search
from tinyllm.rag.persistence import load_typed, save_arrays
from tinyllm.rag.similarity import (
    check_metric,
    distances_to_scores,
    kernel_metric,
    prepare_vectors,
)

# number of nodes per kernel call while building (lets Ctrl-C and progress through)
_INSERT_CHUNK = 8192


class HNSWIndex:
    """An HNSW graph index over float32 vectors; ids are insertion order (0, 1, ...).

    Args:
        dim: vector dimension D.
        metric: ``"l2"``, ``"ip"`` or ``"cosine"``.
        M: neighbours per node on layers ≥ 1 (2M on layer 0); M ≥ 2.
        ef_construction: beam width while inserting.
        ef: default beam width while searching (``max(ef, k)`` is used).
        seed: seed of the level sampler.
    """

    def __init__(
        self,
        dim: int,
        metric: str = "l2",
        M: int = 16,
        ef_construction: int = 200,
        ef: int = 50,
        seed: int = 100,
    ) -> None:
        check_metric("HNSWIndex", metric)
        for name, value, low in (
            ("dim", dim, 1),
            ("M", M, 2),
            ("ef_construction", ef_construction, 1),
            ("ef", ef, 1),
        ):
            if not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"HNSWIndex: {name} must be an integer >= {low}, got {value!r}")
        self.dim = int(dim)
        self.metric = metric
        self.M = int(M)
        self.M0 = 2 * self.M
        self.mL = 1.0 / math.log(self.M)
        self.ef_construction = int(ef_construction)
        self.ef = int(ef)
        self.seed = int(seed)
        self._rng = np.random.default_rng(seed)
        self._n = 0
        self._n_up = 0
        self._entry = -1
        self._max_level = -1
        self._tag = 0
        self._allocate(0, 0)

    # ----------------------------------------------------------------- storage
    def _allocate(self, capacity: int, capacity_up: int) -> None:
        self._data = np.zeros((capacity, self.dim), dtype=np.float32)
        self._levels = np.zeros(capacity, dtype=np.int32)
        self._offset_up = np.full(capacity, -1, dtype=np.int32)
        self._links0 = np.full((capacity, self.M0), -1, dtype=np.int32)
        self._counts0 = np.zeros(capacity, dtype=np.int32)
        self._visited = np.zeros(capacity, dtype=np.int32)
        self._links_up = np.full((capacity_up, self.M), -1, dtype=np.int32)
        self._counts_up = np.zeros(capacity_up, dtype=np.int32)

    @staticmethod
    def _grown(array: np.ndarray, rows: int, fill) -> np.ndarray:
        out = np.full((rows,) + array.shape[1:], fill, dtype=array.dtype)
        out[: array.shape[0]] = array
        return out

    def _reserve(self, n_total: int, n_up_total: int) -> None:
        capacity = self._data.shape[0]
        if n_total > capacity:
            new = max(n_total, 2 * capacity, 64)
            self._data = self._grown(self._data, new, 0.0)
            self._levels = self._grown(self._levels, new, 0)
            self._offset_up = self._grown(self._offset_up, new, -1)
            self._links0 = self._grown(self._links0, new, -1)
            self._counts0 = self._grown(self._counts0, new, 0)
            self._visited = np.zeros(new, dtype=np.int32)
            self._tag = 0
        capacity_up = self._links_up.shape[0]
        if n_up_total > capacity_up:
            new = max(n_up_total, 2 * capacity_up, 16)
            self._links_up = self._grown(self._links_up, new, -1)
            self._counts_up = self._grown(self._counts_up, new, 0)

    # ----------------------------------------------------------------- public API
    def __len__(self) -> int:
        return self._n

    @property
    def vectors(self) -> np.ndarray:
        """The stored vectors (N, D), float32 (normalised for cosine)."""
        return self._data[: self._n]

    @property
    def levels(self) -> np.ndarray:
        """The level of every node (N,)."""
        return self._levels[: self._n]

    @property
    def entry_point(self) -> int:
        """The id of the entry point (−1 when empty)."""
        return int(self._entry)

    @property
    def max_level(self) -> int:
        """The top level of the graph (the entry point's level; −1 when empty)."""
        return int(self._max_level)

    def sample_levels(self, n: int) -> np.ndarray:
        """Draw n levels ⌊−ln(U)·mL⌋ with U uniform on (0, 1] (advances the index's RNG)."""
        uniform = 1.0 - self._rng.random(n)  # in (0, 1]: level 0 has probability 1 − 1/M
        return np.floor(-np.log(uniform) * self.mL).astype(np.int32)

    def neighbours(self, node: int, layer: int) -> np.ndarray:
        """The neighbour ids of ``node`` on ``layer`` (a copy)."""
        if not 0 <= node < self._n:
            raise IndexError(f"HNSWIndex.neighbours: node {node} out of range [0, {self._n})")
        if not 0 <= layer <= self._levels[node]:
            raise ValueError(
                f"HNSWIndex.neighbours: node {node} has level {self._levels[node]}, "
                f"no layer {layer}"
            )
        if layer == 0:
            return self._links0[node, : self._counts0[node]].copy()
        row = self._offset_up[node] + layer - 1
        return self._links_up[row, : self._counts_up[row]].copy()

    def degrees(self, layer: int) -> np.ndarray:
        """Out-degrees on ``layer`` of the nodes present there (level ≥ layer), in id order."""
        nodes = np.flatnonzero(self.levels >= layer)
        if layer == 0:
            return self._counts0[nodes].copy()
        return self._counts_up[self._offset_up[nodes] + layer - 1].copy()

    def add(self, vectors: np.ndarray) -> np.ndarray:
        """Insert ``vectors`` (N, D) one by one (Algorithm 1); returns their ids."""
        new = prepare_vectors("HNSWIndex.add", "vectors", vectors, self.dim, self.metric)
        count = new.shape[0]
        start = self._n
        if count == 0:
            return np.zeros(0, dtype=np.int64)
        levels = self.sample_levels(count)
        offsets = np.full(count, -1, dtype=np.int32)
        has_up = levels > 0
        up_rows = np.cumsum(levels) - levels + self._n_up
        offsets[has_up] = up_rows[has_up]
        n_up_total = self._n_up + int(levels.sum())
        self._reserve(start + count, n_up_total)
        stop = start + count
        self._data[start:stop] = new
        self._levels[start:stop] = levels
        self._offset_up[start:stop] = offsets
        self._n_up = n_up_total
        metric = kernel_metric(self.metric)
        for lo in range(start, stop, _INSERT_CHUNK):
            hi = min(lo + _INSERT_CHUNK, stop)
            entry, max_level, tag = hnsw_insert(
                self._data,
                self._levels,
                self._offset_up,
                self._links0,
                self._counts0,
                self._links_up,
                self._counts_up,
                lo,
                hi,
                self._entry,
                self._max_level,
                self.M,
                self.M0,
                self.ef_construction,
                metric,
                self._visited,
                self._tag,
            )
            self._entry, self._max_level, self._tag = int(entry), int(max_level), int(tag)
            self._n = hi
        return np.arange(start, stop, dtype=np.int64)

    def search(
        self, queries: np.ndarray, k: int, ef: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)`` (Q, k) of the approximate k nearest neighbours of each query.

        ``ef`` (default ``self.ef``) is the layer-0 beam width; ``max(ef, k)`` is used.
        """
        q = prepare_vectors("HNSWIndex.search", "queries", queries, self.dim, self.metric)
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"HNSWIndex.search: k must be a positive integer, got {k!r}")
        ef = self.ef if ef is None else ef
        if not isinstance(ef, (int, np.integer)) or ef < 1:
            raise ValueError(f"HNSWIndex.search: ef must be a positive integer, got {ef!r}")
        distances, ids = hnsw_search(
            self._data,
            self._n,
            q,
            int(k),
            int(max(ef, k)),
            self._entry,
            self._max_level,
            self._links0,
            self._counts0,
            self._offset_up,
            self._links_up,
            self._counts_up,
            kernel_metric(self.metric),
        )
        if self.metric != "l2":
            distances = np.where(ids >= 0, distances_to_scores(distances, self.metric), -np.inf)
        return distances.astype(np.float32), ids

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        """Write the index to ``path`` (``.npz``, atomically, no pickle)."""
        n, n_up = self._n, self._n_up
        arrays = {
            "vectors": self._data[:n],
            "levels": self._levels[:n],
            "offset_up": self._offset_up[:n],
            "links0": self._links0[:n],
            "counts0": self._counts0[:n],
            "links_up": self._links_up[:n_up],
            "counts_up": self._counts_up[:n_up],
        }
        meta = {
            "type": "HNSWIndex",
            "dim": self.dim,
            "metric": self.metric,
            "M": self.M,
            "ef_construction": self.ef_construction,
            "ef": self.ef,
            "seed": self.seed,
            "entry": self._entry,
            "max_level": self._max_level,
            "rng_state": self._rng.bit_generator.state,
        }
        return save_arrays(path, arrays, meta)

    @classmethod
    def load(cls, path: str | Path) -> HNSWIndex:
        """Read an index written by :meth:`save` (adding more vectors afterwards works)."""
        return load_typed(cls, path)

    @classmethod
    def _from_arrays(cls, arrays: dict, meta: dict) -> HNSWIndex:
        index = cls(
            meta["dim"],
            meta["metric"],
            meta["M"],
            meta["ef_construction"],
            meta["ef"],
            meta["seed"],
        )
        n = arrays["vectors"].shape[0]
        n_up = arrays["links_up"].shape[0]
        index._reserve(n, n_up)
        index._data[:n] = arrays["vectors"]
        index._levels[:n] = arrays["levels"]
        index._offset_up[:n] = arrays["offset_up"]
        index._links0[:n] = arrays["links0"]
        index._counts0[:n] = arrays["counts0"]
        index._links_up[:n_up] = arrays["links_up"]
        index._counts_up[:n_up] = arrays["counts_up"]
        index._n, index._n_up = n, n_up
        index._entry, index._max_level = int(meta["entry"]), int(meta["max_level"])
        index._rng.bit_generator.state = meta["rng_state"]
        return index
