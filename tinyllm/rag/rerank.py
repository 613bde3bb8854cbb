"""Reranking a first-stage candidate list.

Maximal marginal relevance (Carbonell & Goldstein, SIGIR 1998): select items one at a time,

    next = argmax_{d ∉ S} [ λ · sim(d, q) − (1 − λ) · max_{s ∈ S} sim(d, s) ],

trading relevance (λ = 1: plain relevance order) against novelty (λ = 0: after the most
relevant item, the items least similar to those already chosen). The first pick is always
the most relevant item (as in LangChain; for λ = 0 the formula alone would not decide it).
Similarities are cosines of the given vectors. Ties go to the earlier candidate.

Cross-encoder reranking: a model reads the query and a passage together and outputs a
relevance score, s(q, d) = w · h_CLS(BERT([CLS] q [SEP] d [SEP])) in the usual form; it is
too expensive for a whole collection but accurate on the top candidates of a first stage. Any
callable ``score_pairs([(query, passage), ...]) -> scores`` plugs in here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tinyllm.rag.similarity import as_matrix, cosine_similarity


def mmr(
    query_vector: np.ndarray,
    doc_vectors: np.ndarray,
    k: int,
    lambda_: float = 0.5,
) -> list[int]:
    """Indices (into ``doc_vectors`` (N, D)) of k items chosen by MMR, in selection order."""
    docs = as_matrix("mmr", "doc_vectors", doc_vectors, dtype=np.float64)
    query = as_matrix("mmr", "query_vector", query_vector, dim=docs.shape[1], dtype=np.float64)
    if query.shape[0] != 1:
        raise ValueError(f"mmr: query_vector must be one vector, got shape {query.shape}")
    if not 0.0 <= lambda_ <= 1.0:
        raise ValueError(f"mmr: lambda_ must be in [0, 1], got {lambda_}")
    if not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"mmr: k must be an integer >= 0, got {k!r}")
    n = docs.shape[0]
    relevance = cosine_similarity(query, docs)[0]
    pairwise = cosine_similarity(docs, docs)
    selected: list[int] = []
    redundancy = np.full(n, -np.inf)  # max similarity to the selected set
    available = np.ones(n, dtype=bool)
    for _ in range(min(k, n)):
        if selected:
            objective = lambda_ * relevance - (1.0 - lambda_) * redundancy
            objective = np.where(available, objective, -np.inf)
        else:  # the first pick is the most relevant item, whatever λ (also for λ = 0)
            objective = relevance
        best = int(np.argmax(objective))  # first maximum: earlier candidate on ties
        selected.append(best)
        available[best] = False
        redundancy = np.maximum(redundancy, pairwise[best])
    return selected


def cross_encoder_rerank(
    query: str,
    passages: Sequence[str],
    score_pairs: Callable[[list[tuple[str, str]]], Sequence[float]],
    k: int | None = None,
    batch_size: int = 32,
) -> list[tuple[int, float]]:
    """Score every (query, passage) pair with ``score_pairs`` in batches and return
    ``[(passage index, score), ...]`` best first (ties: earlier passage), cut to k."""
    if batch_size < 1:
        raise ValueError(f"cross_encoder_rerank: batch_size must be >= 1, got {batch_size}")
    scores: list[float] = []
    for start in range(0, len(passages), batch_size):
        pairs = [(query, p) for p in passages[start : start + batch_size]]
        batch = [float(s) for s in score_pairs(pairs)]
        if len(batch) != len(pairs):
            raise ValueError(
                f"cross_encoder_rerank: score_pairs returned {len(batch)} scores "
                f"for {len(pairs)} pairs"
            )
        scores.extend(batch)
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    ranked = [(i, scores[i]) for i in order]
    return ranked if k is None else ranked[:k]
