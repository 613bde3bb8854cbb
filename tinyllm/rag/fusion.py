"""Hybrid ranking: combining the result lists of several retrievers.

Reciprocal rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009):

    RRF(d) = Σ_lists w_l / (k + rank_l(d)),   k = 60, rank starting at 1,

where a document absent from a list contributes 0 for it (w_l = 1 by default). RRF uses only
ranks, so it is invariant to any monotone transform of each retriever's scores.

Normalized score fusion (a.k.a. linear / convex combination): scores of each list are min-max
normalised per query, s' = (s − min) / (max − min) (all ones when max = min), then

    F(d) = Σ_lists w_l · s'_l(d),

with absent documents contributing 0. Unlike RRF it depends on the score scales, which is why
the per-query normalisation is needed.

Ties are broken by first appearance: the order in which documents are first met scanning the
lists in order, each list best first. For RRF a list is a ranking, so its order is its
meaning; :func:`score_fusion` sorts every ``{id: score}`` map by (score descending, id) itself
(by score alone when the ids do not compare), so its result does not depend on the maps'
insertion order.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

RRF_K = 60


def _check_weights(function: str, weights, n_lists: int) -> list[float]:
    if weights is None:
        return [1.0] * n_lists
    weights = [float(w) for w in weights]
    if len(weights) != n_lists:
        raise ValueError(f"{function}: got {len(weights)} weights for {n_lists} lists")
    return weights


def _sorted_items(totals: dict) -> list[tuple[Hashable, float]]:
    # stable sort on descending score keeps first-appearance order among ties
    return sorted(totals.items(), key=lambda item: -item[1])


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[Hashable]],
    k: float = RRF_K,
    weights: Sequence[float] | None = None,
) -> list[tuple[Hashable, float]]:
    """Fuse ranked id lists (best first) into ``[(id, score), ...]`` sorted by RRF score.

    >>> reciprocal_rank_fusion([["d1", "d2", "d3"], ["d3", "d1", "d4"]])[0][0]
    'd1'
    """
    if k < 0:
        raise ValueError(f"reciprocal_rank_fusion: k must be >= 0, got {k}")
    weights = _check_weights("reciprocal_rank_fusion", weights, len(rankings))
    totals: dict = {}
    for ranking, weight in zip(rankings, weights):
        seen = set()
        for rank, doc in enumerate(ranking, start=1):
            if doc in seen:
                raise ValueError(f"reciprocal_rank_fusion: id {doc!r} appears twice in one list")
            seen.add(doc)
            totals[doc] = totals.get(doc, 0.0) + weight / (k + rank)
    return _sorted_items(totals)


def min_max_normalize(scores: Mapping[Hashable, float]) -> dict[Hashable, float]:
    """Scores mapped to [0, 1] by (s − min)/(max − min); all 1.0 when every score is equal."""
    if not scores:
        return {}
    values = np.array(list(scores.values()), dtype=np.float64)
    low, high = values.min(), values.max()
    if high == low:
        return {doc: 1.0 for doc in scores}
    return {doc: (float(s) - low) / (high - low) for doc, s in scores.items()}


def score_fusion(
    score_lists: Sequence[Mapping[Hashable, float]],
    weights: Sequence[float] | None = None,
) -> list[tuple[Hashable, float]]:
    """Fuse ``{id: score}`` maps (higher is better) by weighted sum of min-max normalised
    scores; returns ``[(id, fused score), ...]`` best first. For distance lists, pass the
    negated distances."""
    weights = _check_weights("score_fusion", weights, len(score_lists))
    totals: dict = {}
    for scores, weight in zip(score_lists, weights):
        normalized = min_max_normalize(scores)
        for doc in _best_first(scores):
            totals[doc] = totals.get(doc, 0.0) + weight * normalized[doc]
    return _sorted_items(totals)


def _best_first(scores: Mapping[Hashable, float]) -> list[Hashable]:
    """The ids of ``scores`` sorted by (score descending, id); by score alone (stable) when
    the ids do not compare with each other."""
    try:
        return [doc for doc, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]
    except TypeError:
        return [doc for doc, _ in sorted(scores.items(), key=lambda kv: -kv[1])]
