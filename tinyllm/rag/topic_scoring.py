"""A learned linear score for documents (help topics): features, ranking and the fit.

For a query q, the first stage gives every passage p a fused score F(p) (BM25 and dense
cosine, each over its top ``fetch_k``, min-max normalised and weighted), and a document t
present in that list gets the features (``TOPIC_FEATURES``, maxima over t's passages, a
shared passage counting for each of its documents):

    fused     max_p F(p)                               (MaxP of the fused list)
    title     cos(q, title_t)
    centroid  cos(q, c_t)          c_t: the unit mean of t's passage vectors
    dense_max max_p cos(q, p)      over the dense top list; a passage below it counts as
                                   the list's lowest cosine
    bm25_max  max_p BM25(q, p) / max_p' BM25(q, p')    over the BM25 top list, 0 below it
    maxsim    max_p MaxSim(q, p)   (:mod:`tinyllm.rag.late_interaction`, every passage)

and five more (round 11 of the experiment), none learned from labels:

    log_size      log |t's passages|                  (a prior: MaxP favours long documents)
    symbol_max    max_p O(q, p) / max_p' O(q, p')     O: BM25 over Python's operator tokens
                                                      (:func:`tinyllm.rag.text.operator_tokens`),
                                                      every passage; 0 for a query without any
    template_max  max_j cos(q, u_j)    over t's template questions u_j
                                       (:mod:`tinyllm.rag.template_questions`; 0 without)
    fused_second  the second best F(p) of t's passages in the fused list (0 with one)
    fused_count   log(1 + |t's passages in the fused list|)

and scores S(t) = Σ_f w_f x_f(t). The shown passage of t is its best fused passage (w_fused
> 0 keeps it so), and :func:`tinyllm.rag.collapse.document_ranking` orders and collapses
(ties, distinct passages) exactly as for the hand-set formula, which is the special case
w = (fused 1, title λ, centroid μ).

The weights are fitted by :func:`fit_topic_weights`: a listwise softmax loss per question,

    L(w) = (1/n) Σ_q [log Σ_{t ∈ G_q} e^{S_q(t)} − log Σ_{t ∈ P_q} e^{S_q(t)}] + α ||w||²,

G_q the documents present for q and P_q those whose shown passage answers it (its homes
meet the labels), minimised by L-BFGS with the gradient X_qᵀ(π − ρ) of
:func:`tinyllm.rag.cross_encoder.listwise_loss`. Only the direction of w orders documents;
α fixes its scale.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tinyllm.rag.collapse import document_ranking
from tinyllm.rag.cross_encoder import listwise_loss

TOPIC_FEATURES = (
    "fused",
    "title",
    "centroid",
    "dense_max",
    "bm25_max",
    "maxsim",
    "log_size",
    "symbol_max",
    "template_max",
    "fused_second",
    "fused_count",
)


@dataclass
class TopicTable:
    """The documents present for one query, their features and what ranks them.

    ``documents`` (in the order of their best fused passage), ``passages`` (that passage of
    each), ``features`` [n, len(TOPIC_FEATURES)]; ``fused`` and ``memberships``: the fused
    passage scores and the passages' documents, from which :func:`rank_topics` ranks."""

    documents: list[str]
    passages: np.ndarray
    features: np.ndarray
    fused: list[tuple[int, float]]
    memberships: Sequence[Collection[str]]


def topic_table(
    fused: Sequence[tuple[int, float]],
    memberships: Sequence[Collection[str]],
    lexical: Sequence[tuple[int, float]],
    dense: Sequence[tuple[int, float]],
    title: Mapping[str, float],
    centroid: Mapping[str, float],
    maxsim: np.ndarray | None = None,
    symbols: np.ndarray | None = None,
    templates: Mapping[str, float] | None = None,
) -> TopicTable:
    """The :class:`TopicTable` of one query from its first stages: ``fused`` [(passage,
    F)], ``lexical`` and ``dense`` [(passage, score)] (the top lists that were fused),
    ``title`` and ``centroid`` cosines per document, ``maxsim`` [P] and ``symbols`` [P]
    (the operator BM25 scores) of every passage, ``templates`` the best template-question
    cosine per document (None, or a document missing from it: the column is 0)."""
    ranked = document_ranking(fused, memberships)  # every present document, best passage
    documents = [d for d, _, _ in ranked]
    n_passages = len(memberships)
    floor = min((s for _, s in dense), default=0.0)
    dense_all = np.full(n_passages, floor)
    for pid, score in dense:
        dense_all[pid] = score
    bm25_all = np.zeros(n_passages)
    top = max((s for _, s in lexical), default=0.0)
    if top > 0.0:
        for pid, score in lexical:
            bm25_all[pid] = score / top
    column = {d: j for j, d in enumerate(documents)}
    # every (passage, present document) pair; each maximum runs over a document's passages
    pairs = [(pid, column[d]) for pid, members in enumerate(memberships) for d in members
             if d in column]  # fmt: skip
    pids, cols = np.array(pairs, dtype=np.int64).reshape(-1, 2).T
    dense_max = np.full(len(documents), -np.inf)
    np.maximum.at(dense_max, cols, dense_all[pids])
    bm25_max = np.zeros(len(documents))
    np.maximum.at(bm25_max, cols, bm25_all[pids])
    maxsim_max = np.zeros(len(documents)) if maxsim is None else np.full(len(documents), -np.inf)
    if maxsim is not None:
        np.maximum.at(maxsim_max, cols, np.asarray(maxsim, dtype=np.float64)[pids])
    symbol_max = np.zeros(len(documents))
    if symbols is not None:
        symbols = np.asarray(symbols, dtype=np.float64)
        best = symbols.max(initial=0.0)
        if best > 0.0:
            np.maximum.at(symbol_max, cols, symbols[pids] / best)
    listed: list[list[float]] = [[] for _ in documents]  # fused scores of each one's passages
    for pid, score in fused:
        for d in memberships[pid]:
            if d in column:
                listed[column[d]].append(score)
    second = [sorted(scores)[-2] if len(scores) > 1 else 0.0 for scores in listed]
    features = np.column_stack(
        [
            [f for _, _, f in ranked],
            [title.get(d, 0.0) for d in documents],
            [centroid[d] for d in documents],
            dense_max,
            bm25_max,
            maxsim_max,
            np.log(np.bincount(cols, minlength=len(documents))),
            symbol_max,
            [templates.get(d, 0.0) for d in documents] if templates else np.zeros(len(documents)),
            second,
            np.log1p([len(scores) for scores in listed]),
        ]
    )
    passages = np.array([p for _, p, _ in ranked], dtype=np.int64)
    return TopicTable(documents, passages, features, list(fused), memberships)


def check_topic_weights(weights: Mapping[str, float]) -> np.ndarray:
    """``weights`` as a vector in ``TOPIC_FEATURES`` order (missing: 0); a ValueError names
    an unknown feature or a ``fused`` weight that is not positive."""
    if not isinstance(weights, Mapping):
        raise TypeError(
            f"topic weights: a mapping of feature -> weight, got {type(weights).__name__}"
        )
    unknown = set(weights) - set(TOPIC_FEATURES)
    if unknown:
        raise ValueError(
            f"topic weights: unknown features {sorted(unknown)}; known: {TOPIC_FEATURES}"
        )
    w = np.array([float(weights.get(f, 0.0)) for f in TOPIC_FEATURES])
    if not w[0] > 0.0:
        raise ValueError(f"topic weights: 'fused' must be > 0, got {w[0]!r}")
    return w


def rank_topics(
    table: TopicTable, weights: Mapping[str, float], distinct_passages: bool = True
) -> list[tuple[str, int, float]]:
    """``[(document, shown passage, S), ...]`` best first, S = Σ_f w_f x_f, through
    :func:`~tinyllm.rag.collapse.document_ranking` (its tie rules and
    ``distinct_passages``)."""
    w = check_topic_weights(weights)
    rest = table.features[:, 1:] @ w[1:] if len(table.documents) else np.zeros(0)
    prior = dict(zip(table.documents, rest.tolist()))
    scaled = [(pid, w[0] * score) for pid, score in table.fused]
    return document_ranking(scaled, table.memberships, prior, 1.0, distinct_passages)


def fit_topic_weights(
    tables: Sequence[TopicTable],
    positives: Sequence[np.ndarray],
    l2: float = 1e-4,
    start: Mapping[str, float] | None = None,
    features: Sequence[str] = TOPIC_FEATURES,
) -> dict[str, float]:
    """Weights of ``features`` (the others 0) minimising the listwise loss of the module
    docstring over the tables with at least one positive (``positives[i]``: a bool per
    document of ``tables[i]``); ``start``: the initial weights (default fused 1)."""
    from scipy.optimize import minimize

    if len(tables) != len(positives):
        raise ValueError(f"fit_topic_weights: {len(tables)} tables, {len(positives)} positives")
    columns = [TOPIC_FEATURES.index(f) for f in features]
    groups = []
    for table, positive in zip(tables, positives):
        positive = np.asarray(positive, dtype=bool)
        if positive.shape != (len(table.documents),):
            raise ValueError(
                f"fit_topic_weights: positives {positive.shape} for {len(table.documents)} "
                "documents"
            )
        if positive.any():
            groups.append((table.features[:, columns], positive))
    if not groups:
        raise ValueError("fit_topic_weights: no question has a positive document")
    w0 = np.array([(start or {"fused": 1.0}).get(f, 0.0) for f in features])
    w = minimize(topic_objective, w0, args=(groups, l2), jac=True, method="L-BFGS-B").x
    return {f: float(v) for f, v in zip(features, w)}


def topic_objective(
    w: np.ndarray, groups: Sequence[tuple[np.ndarray, np.ndarray]], l2: float
) -> tuple[float, np.ndarray]:
    """L(w) of the module docstring and its gradient (1/n) Σ_q X_qᵀ(π − ρ) + 2αw, over
    ``groups`` [(features X_q [n_q, F], positive mask [n_q]), ...]: what
    :func:`fit_topic_weights` minimises."""
    total, grad = 0.0, np.zeros_like(w)
    for x, positive in groups:
        loss, d_scores = listwise_loss(x @ w, positive)
        total += loss
        grad += x.T @ d_scores
    n = len(groups)
    return total / n + l2 * (w @ w), grad / n + 2.0 * l2 * w
