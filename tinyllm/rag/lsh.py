"""LSH: random-hyperplane locality-sensitive hashing (Charikar, STOC 2002), multi-table.

A table draws b random Gaussian hyperplanes r_1..r_b and hashes x to the b-bit code
h(x) = [r_1·x > 0, ..., r_b·x > 0]. For two vectors at angle θ each bit agrees with
probability 1 − θ/π, so they share a whole code with probability (1 − θ/π)^b and meet in at
least one of L independent tables with probability

    P(candidate) = 1 − (1 − (1 − θ/π)^b)^L            (:func:`collision_probability`).

Multi-probe lookup also visits the buckets whose codes differ from the query's in at most
``max_hamming`` bits (Hamming ball), which raises recall without more tables. The candidates
found are re-ranked exactly with the index metric. Recall rises with L (the candidates of the
first L tables are a subset of those of the first L + 1).

Hyperplanes pass through a centre: the origin for ``"cosine"`` and ``"ip"``, and the mean of
the first vectors added for ``"l2"`` (so the hash tracks angles around the data, a heuristic;
p-stable LSH is the textbook L2 family).

Buckets: every (table t, code c) pair becomes one int64 key (t << b) | c; the keys of all
tables are sorted once, so a bucket is the range ``searchsorted(key, "left")`` to
``searchsorted(key, "right")`` and all probed buckets of a query are found in one call.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from tinyllm.rag.exact import top_k
from tinyllm.rag.persistence import load_typed, save_arrays
from tinyllm.rag.similarity import (
    check_metric,
    empty_results,
    larger_is_better,
    pairwise_scores,
    prepare_vectors,
)

MAX_BITS = 48


def collision_probability(theta: float | np.ndarray, n_bits: int, n_tables: int):
    """P(two vectors at angle θ share a bucket in ≥ 1 of n_tables tables of n_bits bits)."""
    per_bit = 1.0 - np.asarray(theta) / np.pi
    return 1.0 - (1.0 - per_bit**n_bits) ** n_tables


def hamming_masks(n_bits: int, max_hamming: int) -> np.ndarray:
    """All n_bits-bit masks with at most ``max_hamming`` set bits (0 first), int64."""
    masks = [0]
    for weight in range(1, max_hamming + 1):
        for bits in itertools.combinations(range(n_bits), weight):
            masks.append(sum(1 << b for b in bits))
    return np.array(masks, dtype=np.int64)


def _ranges_to_indices(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Concatenation of arange(lo[i], hi[i]) over i, without a Python loop."""
    lengths = hi - lo
    keep = lengths > 0
    lo, lengths = lo[keep], lengths[keep]
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    return np.repeat(lo - starts, lengths) + np.arange(total)


class LSHIndex:
    """Random-hyperplane LSH with ``n_tables`` tables of ``n_bits`` bits each.

    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((300, 8))
    >>> index = LSHIndex(dim=8, n_bits=8, n_tables=4, metric="cosine")
    >>> _ = index.add(x)
    >>> index.search(x[:2], k=1)[1][:, 0].tolist()
    [0, 1]
    """

    def __init__(
        self,
        dim: int,
        n_bits: int = 16,
        n_tables: int = 8,
        metric: str = "cosine",
        max_hamming: int = 0,
        seed: int = 0,
    ) -> None:
        check_metric("LSHIndex", metric)
        for name, value in (("dim", dim), ("n_bits", n_bits), ("n_tables", n_tables)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"LSHIndex: {name} must be a positive integer, got {value!r}")
        if n_bits > MAX_BITS:
            raise ValueError(f"LSHIndex: n_bits must be <= {MAX_BITS}, got {n_bits}")
        if n_tables >= 1 << (62 - n_bits):
            raise ValueError(f"LSHIndex: n_tables={n_tables} too large for n_bits={n_bits}")
        if not isinstance(max_hamming, (int, np.integer)) or not 0 <= max_hamming <= n_bits:
            raise ValueError(f"LSHIndex: max_hamming must be in [0, n_bits], got {max_hamming!r}")
        self.dim = int(dim)
        self.n_bits = int(n_bits)
        self.n_tables = int(n_tables)
        self.metric = metric
        self.max_hamming = int(max_hamming)
        self.seed = int(seed)
        rng = np.random.default_rng(seed)
        # planes[t, j] is the normal of hyperplane j of table t
        self.planes = rng.standard_normal((self.n_tables, self.n_bits, self.dim)).astype(np.float32)
        self.center: np.ndarray | None = None if metric == "l2" else np.zeros(dim, np.float32)
        self._vectors = np.zeros((0, self.dim), dtype=np.float32)
        self._codes = np.zeros((0, self.n_tables), dtype=np.int64)
        self._keys = np.zeros(0, dtype=np.int64)
        self._key_ids = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return self._vectors.shape[0]

    def hash(self, x: np.ndarray) -> np.ndarray:
        """The code of each (prepared) row of x in every table: (N, n_tables) int64."""
        projections = (x - self.center) @ self.planes.reshape(-1, self.dim).T
        bits = (projections > 0).reshape(x.shape[0], self.n_tables, self.n_bits)
        weights = np.left_shift(np.int64(1), np.arange(self.n_bits, dtype=np.int64))
        return (bits.astype(np.int64) * weights).sum(-1)

    def _table_keys(self, codes: np.ndarray) -> np.ndarray:
        """Bucket keys (t << n_bits) | code for codes (N, n_tables)."""
        tables = np.arange(self.n_tables, dtype=np.int64) << self.n_bits
        return codes | tables[None, :]

    def add(self, vectors: np.ndarray) -> np.ndarray:
        """Hash and store ``vectors`` (N, D); returns their ids."""
        new = prepare_vectors("LSHIndex.add", "vectors", vectors, self.dim, self.metric)
        start = len(self)
        ids = np.arange(start, start + new.shape[0], dtype=np.int64)
        if new.shape[0] == 0:
            return ids
        if self.center is None:
            self.center = new.mean(0).astype(np.float32)
        self._vectors = np.concatenate([self._vectors, new])
        self._codes = np.concatenate([self._codes, self.hash(new)])
        keys = self._table_keys(self._codes).T.ravel()  # table-major: (L·N,)
        order = np.argsort(keys, kind="stable")
        self._keys = keys[order]
        self._key_ids = np.tile(np.arange(len(self), dtype=np.int64), self.n_tables)[order]
        return ids

    def candidates(self, query: np.ndarray, n_tables: int, max_hamming: int) -> np.ndarray:
        """Ids sharing a probed bucket with one prepared query vector (D,), sorted, unique."""
        codes = self.hash(query[None, :])[0, :n_tables]
        masks = hamming_masks(self.n_bits, max_hamming)
        tables = np.arange(n_tables, dtype=np.int64)[:, None] << self.n_bits
        probes = (tables | (codes[:, None] ^ masks[None, :])).ravel()
        lo = np.searchsorted(self._keys, probes, side="left")
        hi = np.searchsorted(self._keys, probes, side="right")
        return np.unique(self._key_ids[_ranges_to_indices(lo, hi)])

    def search(
        self,
        queries: np.ndarray,
        k: int,
        n_tables: int | None = None,
        max_hamming: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)`` (Q, k): exact re-ranking of the bucket candidates.

        ``n_tables`` uses only the first tables (default all); ``max_hamming`` is the probe
        radius (default the index's). Missing slots (too few candidates) hold id −1.
        """
        q = prepare_vectors("LSHIndex.search", "queries", queries, self.dim, self.metric)
        n_tables = self.n_tables if n_tables is None else n_tables
        max_hamming = self.max_hamming if max_hamming is None else max_hamming
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"LSHIndex.search: k must be a positive integer, got {k!r}")
        if not 1 <= n_tables <= self.n_tables:
            raise ValueError(
                f"LSHIndex.search: n_tables must be in [1, {self.n_tables}], got {n_tables}"
            )
        if not 0 <= max_hamming <= self.n_bits:
            raise ValueError(
                f"LSHIndex.search: max_hamming must be in [0, n_bits], got {max_hamming}"
            )
        scores, ids = empty_results(q.shape[0], k, self.metric)
        if len(self) == 0:
            return scores, ids
        metric = "ip" if self.metric == "cosine" else self.metric
        for i in range(q.shape[0]):
            found = self.candidates(q[i], n_tables, max_hamming)
            if found.size == 0:
                continue
            row = pairwise_scores(q[i : i + 1], self._vectors[found], metric)
            values, order = top_k(row, min(k, found.size), largest=larger_is_better(metric))
            scores[i, : order.shape[1]] = values[0]
            ids[i, : order.shape[1]] = found[order[0]]
        return scores, ids

    def save(self, path: str | Path) -> Path:
        """Write the index to ``path`` (``.npz``, atomically, no pickle)."""
        arrays = {"planes": self.planes, "vectors": self._vectors}
        if self.center is not None:
            arrays["center"] = self.center
        meta = {
            "type": "LSHIndex",
            "dim": self.dim,
            "n_bits": self.n_bits,
            "n_tables": self.n_tables,
            "metric": self.metric,
            "max_hamming": self.max_hamming,
            "seed": self.seed,
        }
        return save_arrays(path, arrays, meta)

    @classmethod
    def load(cls, path: str | Path) -> LSHIndex:
        """Read an index written by :meth:`save` (the buckets are rebuilt from the vectors)."""
        return load_typed(cls, path)

    @classmethod
    def _from_arrays(cls, arrays: dict, meta: dict) -> LSHIndex:
        index = cls(
            meta["dim"],
            meta["n_bits"],
            meta["n_tables"],
            meta["metric"],
            meta["max_hamming"],
            meta["seed"],
        )
        index.planes = np.ascontiguousarray(arrays["planes"], dtype=np.float32)
        if "center" in arrays:
            index.center = arrays["center"].astype(np.float32)
        vectors = arrays["vectors"]
        if vectors.shape[0]:
            # vectors are stored prepared (normalised for cosine); re-adding is idempotent
            index.add(vectors)
        return index
