"""Numba building blocks shared by the graph (HNSW) and inverted-list (IVF) search kernels.

(Named ``search_kernels`` so that it is not mistaken for ``tinyllm.kernels``, the engine's
kernel layer: these are retrieval helpers, with no tiers and no dispatch.)

Nothing here is compiled at import: ``@njit`` compiles on the first call, and these helpers are
compiled into the entry-point kernels that call them (``hnsw_kernels``, ``ivf``), so they add no
separate signatures. Every function works on float32 vectors and int32 ids.

Distances (what the kernels minimise), selected by an integer code:

- ``METRIC_L2`` (0):      d(a, b) = Σ_j (a_j − b_j)²
- ``METRIC_NEG_DOT`` (1): d(a, b) = −Σ_j a_j b_j

The reductions are explicit scalar loops compiled with the ``reassoc``/``contract`` fast-math
flags only, so LLVM may vectorise the sum (it reorders the additions) while comparisons with
infinities stay exact (no ``nnan``/``ninf`` assumptions).

Heaps are binary min-heaps stored in two parallel arrays (``keys`` float32, ``values`` int32)
with an explicit size; a max-heap is a min-heap of negated keys.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numba import njit

from tinyllm.kernels import numba_cache
from tinyllm.rag.similarity import METRIC_L2

# hnsw_kernels.py and ivf.py call these functions: an edit here must recompile them too
numba_cache.install(Path(__file__).resolve().parent)

_FAST_SUM = {"reassoc", "contract", "nsz"}


@njit(cache=True, fastmath=_FAST_SUM)
def row_distance(data, i, query, metric):
    """Distance between stored row ``data[i]`` and vector ``query`` (float32)."""
    acc = np.float32(0.0)
    if metric == METRIC_L2:
        for j in range(query.shape[0]):
            diff = data[i, j] - query[j]
            acc += diff * diff
        return acc
    for j in range(query.shape[0]):
        acc += data[i, j] * query[j]
    return -acc


@njit(cache=True, fastmath=_FAST_SUM)
def rows_distance(data, i, k, metric):
    """Distance between two stored rows ``data[i]`` and ``data[k]`` (float32)."""
    acc = np.float32(0.0)
    if metric == METRIC_L2:
        for j in range(data.shape[1]):
            diff = data[i, j] - data[k, j]
            acc += diff * diff
        return acc
    for j in range(data.shape[1]):
        acc += data[i, j] * data[k, j]
    return -acc


@njit(cache=True)
def heap_push(keys, values, size, key, value):
    """Push (key, value) onto the min-heap of ``size`` entries; returns the new size."""
    i = size
    keys[i] = key
    values[i] = value
    while i > 0:
        parent = (i - 1) >> 1
        if keys[parent] <= key:
            break
        keys[i] = keys[parent]
        values[i] = values[parent]
        i = parent
    keys[i] = key
    values[i] = value
    return size + 1


@njit(cache=True)
def heap_pop(keys, values, size):
    """Remove the minimum (``keys[0]``, ``values[0]``; read it first); returns the new size."""
    size -= 1
    if size == 0:
        return 0
    key = keys[size]
    value = values[size]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and keys[child + 1] < keys[child]:
            child += 1
        if keys[child] >= key:
            break
        keys[i] = keys[child]
        values[i] = values[child]
        i = child
    keys[i] = key
    values[i] = value
    return size
