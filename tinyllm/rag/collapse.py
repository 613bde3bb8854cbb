"""Document-level results: collapsing passage scores into one result per document.

A passage p belongs to the documents M(p) whose text contains it (its own topic, plus every
topic that repeats its text word for word: the passage store keeps one copy of a repeated
passage). Given first-stage passage scores F(p) (e.g. fused BM25 + dense scores), a document
t scores

    S(t) = max_{p : t ∈ M(p)} F(p) + λ · prior(t),

("MaxP": the document is as relevant as its best passage), where ``prior`` is an optional
per-document score for the query, e.g. the cosine of the query and the document's title
embedding (a title field, as in multi-field BM25F-style ranking), weighted by λ. Every
document is returned once, with its best passage, so the top k name k distinct documents;
the same passage may stand for two documents that share its text. With
``distinct_passages`` it stands for the first of them only: a document whose best passage
already stands for a document ranked above it is left out, so the top k also show k
distinct passages (the reader sees no text twice; the passage's other documents are in
``memberships``).

Ties do not depend on the order of the input: the passages are scanned sorted by (score
descending, passage id), a document's best passage is the first one met in that order, and
documents with equal S are ordered by the rank of their best passage in that scan, then by
name.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence


def document_ranking(
    passage_scores: Sequence[tuple[int, float]],
    memberships: Sequence[Collection[str]],
    prior: Mapping[str, float] | None = None,
    prior_weight: float = 0.0,
    distinct_passages: bool = False,
) -> list[tuple[str, int, float]]:
    """``[(document, best passage id, S(document)), ...]`` best first, from ``passage_scores``
    ``[(passage id, F), ...]`` and ``memberships[passage id]`` (the documents of a passage);
    with ``distinct_passages``, each passage id at most once (the first document it stands
    for).

    >>> document_ranking([(0, 0.9), (1, 0.8), (2, 0.5)], [{"a"}, {"b", "a"}, {"c"}])
    [('a', 0, 0.9), ('b', 1, 0.8), ('c', 2, 0.5)]
    >>> document_ranking([(0, 0.9), (1, 0.5)], [{"a", "b"}, {"c"}], distinct_passages=True)
    [('a', 0, 0.9), ('c', 1, 0.5)]
    """
    if prior_weight != 0.0 and prior is None:
        raise ValueError("document_ranking: prior_weight given without a prior")
    scored = [(int(pid), float(score)) for pid, score in passage_scores]
    for pid, _ in scored:
        if not 0 <= pid < len(memberships):
            raise IndexError(
                f"document_ranking: passage id {pid} outside memberships of {len(memberships)}"
            )
        if not memberships[pid]:
            raise ValueError(f"document_ranking: passage {pid} belongs to no document")
    # scan best first (ties: lower passage id), so the result does not depend on input order
    scored.sort(key=lambda item: (-item[1], item[0]))
    best: dict[str, tuple[int, float, int]] = {}  # document -> (passage, score, scan rank)
    for rank, (pid, score) in enumerate(scored):
        for document in memberships[pid]:
            if document not in best:
                best[document] = (pid, score, rank)
    out = []
    for document, (pid, score, rank) in best.items():
        bonus = 0.0
        if prior_weight != 0.0:
            if document not in prior:
                raise KeyError(f"document_ranking: no prior for document {document!r}")
            bonus = prior_weight * float(prior[document])
        out.append((document, pid, score + bonus, rank))
    out.sort(key=lambda item: (-item[2], item[3], item[0]))
    if distinct_passages:  # keep a passage's first (best) document only
        shown: set[int] = set()
        kept = []
        for item in out:
            if item[1] not in shown:
                shown.add(item[1])
                kept.append(item)
        out = kept
    return [(document, pid, score) for document, pid, score, _ in out]
