"""Numba kernels for HNSW (Malkov & Yashunin, "Efficient and robust approximate nearest
neighbor search using Hierarchical Navigable Small World graphs", TPAMI 2018).

Graph layout (all int32, flat, one row per node and layer):

- layer 0:   ``links0[i, :counts0[i]]`` are the neighbours of node i; row width M0 = 2M.
- layers ≥1: a node of level l ≥ 1 owns l consecutive rows of ``links_up`` (width M), starting
  at ``offset_up[i]``; its layer-λ neighbours are
  ``links_up[offset_up[i] + λ − 1, :counts_up[offset_up[i] + λ − 1]]``. Nodes of level 0 have
  ``offset_up[i] = −1``. (This is hnswlib's ``linkLists_`` idea: the upper layers hold about
  N/(M−1) rows in total, so they are not stored as N-row arrays.)

Entry points:

- :func:`hnsw_insert` inserts nodes ``start..stop-1`` (Algorithm 1), whose vectors, levels and
  ``offset_up`` rows the caller has already written; returns the new entry point, top level
  and visited tag.
- :func:`hnsw_search` answers a batch of queries (Algorithm 5).

Helpers (compiled into those two): ``_search_layer`` (Algorithm 2, a beam search with a
candidate min-heap C and a result max-heap W of size ≤ ef), ``_greedy_closest`` (Algorithm 2
with ef = 1, written as hnswlib's greedy walk), ``_select_neighbours`` (Algorithm 4, the
heuristic: keep candidate e, scanned by increasing distance to q, iff it is closer to q than
to every neighbour already kept; extendCandidates and keepPrunedConnections off, as in
hnswlib; fewer than m candidates are all kept).

The visited set is an int32 array of "tags": a node is visited in the current search iff
``visited[node] == tag``; each search uses a fresh tag, so the array is never cleared.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from tinyllm.rag.search_kernels import heap_pop, heap_push, row_distance, rows_distance

_TAG_LIMIT = 2**31 - 2


@njit(cache=True)
def _count(node, layer, counts0, offset_up, counts_up):
    if layer == 0:
        return counts0[node]
    return counts_up[offset_up[node] + layer - 1]


@njit(cache=True)
def _neighbour(node, layer, j, links0, offset_up, links_up):
    if layer == 0:
        return links0[node, j]
    return links_up[offset_up[node] + layer - 1, j]


@njit(cache=True)
def _set_neighbours(node, layer, ids, n, links0, counts0, offset_up, links_up, counts_up):
    if layer == 0:
        for j in range(n):
            links0[node, j] = ids[j]
        counts0[node] = n
    else:
        row = offset_up[node] + layer - 1
        for j in range(n):
            links_up[row, j] = ids[j]
        counts_up[row] = n


@njit(cache=True)
def _greedy_closest(
    data, query, cur, cur_d, layer, links0, counts0, offset_up, links_up, counts_up, metric
):
    """Move to the closest neighbour while that improves the distance (ef = 1 search)."""
    changed = True
    while changed:
        changed = False
        node = cur
        for j in range(_count(node, layer, counts0, offset_up, counts_up)):
            e = _neighbour(node, layer, j, links0, offset_up, links_up)
            d = row_distance(data, e, query, metric)
            if d < cur_d:
                cur_d = d
                cur = e
                changed = True
    return cur, cur_d


@njit(cache=True)
def _search_layer(
    data,
    query,
    ep_ids,
    ep_d,
    n_ep,
    layer,
    ef,
    links0,
    counts0,
    offset_up,
    links_up,
    counts_up,
    metric,
    visited,
    tag,
    cand_keys,
    cand_ids,
    res_keys,
    res_ids,
):
    """SEARCH-LAYER (Algorithm 2). Fills the max-heap (res_keys = −distance, res_ids) with the
    ≤ ef nearest elements found and returns its size."""
    n_cand = 0
    n_res = 0
    for i in range(n_ep):
        e = ep_ids[i]
        visited[e] = tag
        n_cand = heap_push(cand_keys, cand_ids, n_cand, ep_d[i], e)
        n_res = heap_push(res_keys, res_ids, n_res, -ep_d[i], e)
        if n_res > ef:
            n_res = heap_pop(res_keys, res_ids, n_res)
    while n_cand > 0:
        c_d = cand_keys[0]
        c = cand_ids[0]
        # stop when the nearest unexpanded candidate is further than the furthest result
        if c_d > -res_keys[0]:
            break
        n_cand = heap_pop(cand_keys, cand_ids, n_cand)
        for j in range(_count(c, layer, counts0, offset_up, counts_up)):
            e = _neighbour(c, layer, j, links0, offset_up, links_up)
            if visited[e] == tag:
                continue
            visited[e] = tag
            d = row_distance(data, e, query, metric)
            if n_res < ef or d < -res_keys[0]:
                n_cand = heap_push(cand_keys, cand_ids, n_cand, d, e)
                n_res = heap_push(res_keys, res_ids, n_res, -d, e)
                if n_res > ef:
                    n_res = heap_pop(res_keys, res_ids, n_res)
    return n_res


@njit(cache=True)
def _drain_sorted(res_keys, res_ids, n_res, out_ids, out_d):
    """Empty the result max-heap into out_ids/out_d sorted by increasing distance."""
    for t in range(n_res - 1, -1, -1):
        out_d[t] = -res_keys[0]
        out_ids[t] = res_ids[0]
        n_res = heap_pop(res_keys, res_ids, n_res)


@njit(cache=True)
def _select_neighbours(data, cand_ids, cand_d, n, m, metric, out):
    """SELECT-NEIGHBORS-HEURISTIC (Algorithm 4) over candidates sorted by distance to q."""
    if n < m:
        for i in range(n):
            out[i] = cand_ids[i]
        return n
    kept = 0
    for i in range(n):
        if kept >= m:
            break
        e = cand_ids[i]
        good = True
        for j in range(kept):
            if rows_distance(data, e, out[j], metric) < cand_d[i]:
                good = False
                break
        if good:
            out[kept] = e
            kept += 1
    return kept


@njit(cache=True)
def hnsw_insert(
    data,
    levels,
    offset_up,
    links0,
    counts0,
    links_up,
    counts_up,
    start,
    stop,
    entry,
    max_level,
    M,
    M0,
    ef_construction,
    metric,
    visited,
    tag,
):
    """INSERT (Algorithm 1) for nodes start..stop-1; returns (entry, max_level, tag).

    ``entry = −1`` means an empty graph. The caller has stored ``data[q]``, ``levels[q]`` and
    ``offset_up[q]`` for the new nodes; their link counts must be zero.
    """
    efc = ef_construction
    cand_keys = np.empty(stop + 1, np.float32)
    cand_ids = np.empty(stop + 1, np.int32)
    res_keys = np.empty(efc + 1, np.float32)
    res_ids = np.empty(efc + 1, np.int32)
    w_ids = np.empty(efc + 1, np.int32)
    w_d = np.empty(efc + 1, np.float32)
    ep_ids = np.empty(efc + 1, np.int32)
    ep_d = np.empty(efc + 1, np.float32)
    selected = np.empty(M0 + 1, np.int32)
    shrink_ids = np.empty(M0 + 1, np.int32)
    shrink_d = np.empty(M0 + 1, np.float32)
    shrink_out = np.empty(M0 + 1, np.int32)
    for q in range(start, stop):
        level = levels[q]
        if entry < 0:
            entry = q
            max_level = level
            continue
        query = data[q]
        cur = entry
        cur_d = row_distance(data, cur, query, metric)
        # phase 1: greedy descent (ef = 1) through the layers above the new node's level
        for layer in range(max_level, level, -1):
            cur, cur_d = _greedy_closest(
                data,
                query,
                cur,
                cur_d,
                layer,
                links0,
                counts0,
                offset_up,
                links_up,
                counts_up,
                metric,
            )
        ep_ids[0] = cur
        ep_d[0] = cur_d
        n_ep = 1
        # phase 2: on each layer min(level, max_level)..0, beam search with ef_construction,
        # choose M neighbours by the heuristic, connect both ways, shrink overflowing lists
        for layer in range(min(level, max_level), -1, -1):
            if tag >= _TAG_LIMIT:
                visited[:] = 0
                tag = 0
            tag += 1
            n_res = _search_layer(
                data,
                query,
                ep_ids,
                ep_d,
                n_ep,
                layer,
                efc,
                links0,
                counts0,
                offset_up,
                links_up,
                counts_up,
                metric,
                visited,
                tag,
                cand_keys,
                cand_ids,
                res_keys,
                res_ids,
            )
            _drain_sorted(res_keys, res_ids, n_res, w_ids, w_d)
            n_sel = _select_neighbours(data, w_ids, w_d, n_res, M, metric, selected)
            _set_neighbours(
                q, layer, selected, n_sel, links0, counts0, offset_up, links_up, counts_up
            )
            m_max = M0 if layer == 0 else M
            for s in range(n_sel):
                e = selected[s]
                n_e = _count(e, layer, counts0, offset_up, counts_up)
                if n_e < m_max:
                    if layer == 0:
                        links0[e, n_e] = q
                        counts0[e] = n_e + 1
                    else:
                        row = offset_up[e] + layer - 1
                        links_up[row, n_e] = q
                        counts_up[row] = n_e + 1
                    continue
                # e overflows: re-select its m_max neighbours from its old list plus q,
                # sorted by distance to e (insertion sort: at most 2M + 1 entries)
                shrink_ids[0] = q
                shrink_d[0] = rows_distance(data, e, q, metric)
                for j in range(n_e):
                    nb = _neighbour(e, layer, j, links0, offset_up, links_up)
                    d = rows_distance(data, e, nb, metric)
                    t = j + 1
                    while t > 0 and shrink_d[t - 1] > d:
                        shrink_d[t] = shrink_d[t - 1]
                        shrink_ids[t] = shrink_ids[t - 1]
                        t -= 1
                    shrink_d[t] = d
                    shrink_ids[t] = nb
                n_keep = _select_neighbours(
                    data, shrink_ids, shrink_d, n_e + 1, m_max, metric, shrink_out
                )
                _set_neighbours(
                    e, layer, shrink_out, n_keep, links0, counts0, offset_up, links_up, counts_up
                )
            # the next layer starts from all of W
            for t in range(n_res):
                ep_ids[t] = w_ids[t]
                ep_d[t] = w_d[t]
            n_ep = n_res
        # entry-point promotion: the new node becomes the entry if its level is the highest
        if level > max_level:
            entry = q
            max_level = level
    return entry, max_level, tag


@njit(cache=True)
def hnsw_search(
    data,
    n,
    queries,
    k,
    ef,
    entry,
    max_level,
    links0,
    counts0,
    offset_up,
    links_up,
    counts_up,
    metric,
):
    """K-NN-SEARCH (Algorithm 5) for each query row: greedy descent to layer 1, then a beam
    search of width ef ≥ k on layer 0. Returns (distances (Q, k) float32, ids (Q, k) int64);
    missing slots hold id −1 and distance +inf."""
    n_queries = queries.shape[0]
    out_d = np.full((n_queries, k), np.inf, np.float32)
    out_ids = np.full((n_queries, k), -1, np.int64)
    if entry < 0:
        return out_d, out_ids
    visited = np.zeros(n, np.int32)
    cand_keys = np.empty(n + 1, np.float32)
    cand_ids = np.empty(n + 1, np.int32)
    res_keys = np.empty(ef + 1, np.float32)
    res_ids = np.empty(ef + 1, np.int32)
    w_ids = np.empty(ef + 1, np.int32)
    w_d = np.empty(ef + 1, np.float32)
    ep_ids = np.empty(1, np.int32)
    ep_d = np.empty(1, np.float32)
    tag = 0
    for qi in range(n_queries):
        query = queries[qi]
        cur = entry
        cur_d = row_distance(data, cur, query, metric)
        for layer in range(max_level, 0, -1):
            cur, cur_d = _greedy_closest(
                data,
                query,
                cur,
                cur_d,
                layer,
                links0,
                counts0,
                offset_up,
                links_up,
                counts_up,
                metric,
            )
        ep_ids[0] = cur
        ep_d[0] = cur_d
        if tag >= _TAG_LIMIT:
            visited[:] = 0
            tag = 0
        tag += 1
        n_res = _search_layer(
            data,
            query,
            ep_ids,
            ep_d,
            1,
            0,
            ef,
            links0,
            counts0,
            offset_up,
            links_up,
            counts_up,
            metric,
            visited,
            tag,
            cand_keys,
            cand_ids,
            res_keys,
            res_ids,
        )
        _drain_sorted(res_keys, res_ids, n_res, w_ids, w_d)
        for t in range(min(k, n_res)):
            out_d[qi, t] = w_d[t]
            out_ids[qi, t] = w_ids[t]
    return out_d, out_ids
