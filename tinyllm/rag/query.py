"""Query-side techniques: pseudo-relevance feedback (RM3), HyDE, multi-query fusion.

RM3 (Lavrenko & Croft 2001; Abdul-Jaleel et al. 2004), as in Anserini/pyserini:

1. Retrieve the top ``fb_docs`` documents D_R for the original query q with BM25.
2. Relevance model RM1: P(w | R) ∝ Σ_{d ∈ D_R} P(w | d) · P(q | d), with
   P(w | d) = f(w, d) / |d| and P(q | d) taken as the document's first-pass score (clipped at
   0, normalised over D_R; uniform if all are 0). Stop words are excluded from the feedback
   terms. Keep the ``fb_terms`` most probable terms and renormalise to sum 1.
3. RM3 interpolation: q'(w) = λ · P(w | q) + (1 − λ) · P(w | R), with P(w | q) the
   normalised query term counts and λ = ``original_weight``. The weights of q' sum to 1.
4. Re-rank with the weighted query Σ_w q'(w) · bm25(w, d).

λ = 1 gives the original ranking exactly (the query weights are the counts scaled by one
constant). Anserini's defaults are fb_terms = 10, fb_docs = 10, λ = 0.5.

HyDE (Gao et al., "Precise Zero-Shot Dense Retrieval without Relevance Labels", 2022): an
instruction-following LM writes N hypothetical passages d̂_1..d̂_N answering the query; the
search vector is the mean of the encodings of the query and the passages,

    v = (f(q) + Σ_i f(d̂_i)) / (N + 1),

and dense retrieval uses v. The paper samples N = 8 at temperature 0.7. The LM and the encoder
are injected callables (``generate(prompt) -> str``, ``embed(texts) -> (n, D)``), so this
module does not depend on any model code.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Sequence

import numpy as np

from tinyllm.rag.bm25 import BM25
from tinyllm.rag.fusion import reciprocal_rank_fusion
from tinyllm.rag.text import STOPWORDS

HYDE_PROMPT = "Please write a passage to answer the question.\nQuestion: {query}\nPassage:"


def rm3_expand(
    query: str,
    bm25: BM25,
    fb_docs: int = 10,
    fb_terms: int = 10,
    original_weight: float = 0.5,
    stopwords: frozenset[str] | set[str] = STOPWORDS,
) -> dict[str, float]:
    """The RM3-expanded query as ``{term: weight}`` (weights sum to 1)."""
    if not 0.0 <= original_weight <= 1.0:
        raise ValueError(f"rm3_expand: original_weight must be in [0, 1], got {original_weight}")
    if fb_docs < 1 or fb_terms < 0:
        raise ValueError(f"rm3_expand: need fb_docs >= 1, fb_terms >= 0, got {fb_docs}, {fb_terms}")
    tokens = bm25.tokenizer(query)
    if not tokens:
        return {}
    counts = Counter(tokens)
    total = sum(counts.values())
    query_model = {t: c / total for t, c in counts.items()}
    if original_weight == 1.0 or fb_terms == 0 or len(bm25) == 0:
        return query_model
    scores, doc_ids = bm25.search(query, fb_docs)
    doc_weights = np.maximum(scores, 0.0)
    if doc_weights.sum() > 0:
        doc_weights = doc_weights / doc_weights.sum()
    else:
        doc_weights = np.full(len(doc_ids), 1.0 / len(doc_ids))
    lengths = bm25.doc_lengths()
    relevance: dict[str, float] = {}
    for doc, weight in zip(doc_ids.tolist(), doc_weights.tolist()):
        if weight == 0.0 or lengths[doc] == 0:
            continue
        for term, f in bm25.document_vector(doc).items():
            if term in stopwords:
                continue
            relevance[term] = relevance.get(term, 0.0) + weight * f / lengths[doc]
    top = sorted(relevance.items(), key=lambda item: (-item[1], item[0]))[:fb_terms]
    mass = sum(w for _, w in top)
    expanded = {t: original_weight * w for t, w in query_model.items()}
    if mass > 0:
        for term, w in top:
            expanded[term] = expanded.get(term, 0.0) + (1.0 - original_weight) * w / mass
    else:  # no feedback terms: all mass on the original query
        expanded = dict(query_model)
    return {t: w for t, w in expanded.items() if w > 0}


def rm3_search(query: str, bm25: BM25, k: int, **rm3_options) -> tuple[np.ndarray, np.ndarray]:
    """BM25 search with the RM3-expanded query: ``(scores, ids)``."""
    return bm25.search(rm3_expand(query, bm25, **rm3_options), k)


def hyde_vector(
    query: str,
    generate: Callable[[str], str],
    embed: Callable[[list[str]], np.ndarray],
    n_samples: int = 1,
    prompt: str = HYDE_PROMPT,
    include_query: bool = True,
) -> np.ndarray:
    """The HyDE search vector (D,): mean encoding of the query and ``n_samples`` passages
    written by ``generate(prompt.format(query=query))``."""
    if n_samples < 1:
        raise ValueError(f"hyde_vector: n_samples must be >= 1, got {n_samples}")
    passages = []
    for i in range(n_samples):
        text = generate(prompt.format(query=query))
        if not isinstance(text, str):
            raise TypeError(
                f"hyde_vector: generate() returned {type(text).__name__} for sample {i}, "
                "expected str"
            )
        passages.append(text)
    texts = ([query] if include_query else []) + passages
    vectors = np.asarray(embed(texts), dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(texts):
        raise ValueError(
            f"hyde_vector: embed() must return shape ({len(texts)}, D), got {vectors.shape}"
        )
    return vectors.mean(0)


def hyde_search(
    query: str,
    index,
    generate: Callable[[str], str],
    embed: Callable[[list[str]], np.ndarray],
    k: int,
    n_samples: int = 1,
    **search_options,
) -> tuple[np.ndarray, np.ndarray]:
    """Dense search of ``index`` (anything with ``search(queries, k)``) with the HyDE vector;
    returns the index's ``(scores, ids)`` for the single query, shapes (k,)."""
    vector = hyde_vector(query, generate, embed, n_samples)
    scores, ids = index.search(vector[None, :], k, **search_options)
    return scores[0], ids[0]


def multi_query_fusion(
    queries: Sequence[str],
    search: Callable[[str], Sequence[Hashable]],
    k: int | None = None,
) -> list[tuple[Hashable, float]]:
    """RAG-Fusion: run ``search`` (query -> ranked ids) for the original query and its
    rewrites (e.g. LM paraphrases), fuse the rankings by RRF; the top ``k`` ``(id, score)``."""
    fused = reciprocal_rank_fusion([list(search(q)) for q in queries])
    return fused if k is None else fused[:k]
