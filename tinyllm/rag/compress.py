"""Context compression: fitting retrieved text into a token budget.

Extractive selection: split the context into sentences, score each against the query, and
take sentences greedily by decreasing score while they fit the budget (a sentence that does
not fit is skipped and smaller ones are still tried); the kept sentences are emitted in
their original order. The default scorer is BM25 over the sentences (Lucene IDF, so scores
are non-negative); :func:`embedding_scorer` builds a cosine scorer from any embedder.

Token dropping by surprisal (Selective Context, Li 2023; LLMLingua, Jiang et al. EMNLP 2023):
a small language model gives each token its self-information

    s_i = −log p(x_i | x_<i),

and the tokens that are least surprising (most predictable) are dropped, keeping the
``budget`` tokens of highest s_i in their original order. Ties are broken towards earlier
tokens, so the kept set is {i : s_i > γ} plus the earliest tokens with s_i = γ, where γ is the
``budget``-th largest surprisal (returned as the threshold). LLMLingua's iterative form
(``segment_size``): the prompt is cut into segments; each segment is scored conditioned on the
already-compressed prefix, ``logprobs(compressed_prefix + segment)``, and compressed to its
share of the budget before the next segment is scored. The language model is an injected
callable ``logprobs(tokens) -> (len(tokens),) log-probabilities``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from tinyllm.rag.bm25 import BM25
from tinyllm.rag.similarity import cosine_similarity
from tinyllm.rag.text import count_words, split_sentences

SentenceScorer = Callable[[str, list[str]], np.ndarray]


def bm25_sentence_scorer(query: str, sentences: list[str]) -> np.ndarray:
    """BM25 (Lucene IDF) score of each sentence for the query, the sentences as the corpus."""
    return BM25(idf="lucene").fit(sentences).get_scores(query)


def embedding_scorer(embed: Callable[[list[str]], np.ndarray]) -> SentenceScorer:
    """A scorer giving the cosine similarity between embed([query]) and embed(sentences)."""

    def score(query: str, sentences: list[str]) -> np.ndarray:
        vectors = np.asarray(embed([query] + list(sentences)))
        return cosine_similarity(vectors[:1], vectors[1:])[0]

    return score


@dataclass
class ExtractiveResult:
    """The compressed text, the kept sentence indices (original order) and all sentences."""

    text: str
    kept: list[int]
    sentences: list[str]
    scores: np.ndarray = field(repr=False)


def extractive_compress(
    query: str,
    context: str | Sequence[str],
    budget: int,
    scorer: SentenceScorer = bm25_sentence_scorer,
    count_tokens: Callable[[str], int] = count_words,
) -> ExtractiveResult:
    """Keep the query-relevant sentences of ``context`` (a text, or a list of passages) within
    ``budget`` tokens (``count_tokens``, default whitespace words), in original order."""
    if not isinstance(budget, (int, np.integer)) or budget < 0:
        raise ValueError(f"extractive_compress: budget must be an integer >= 0, got {budget!r}")
    texts = [context] if isinstance(context, str) else list(context)
    sentences = [s for text in texts for s in split_sentences(text)]
    if not sentences:
        return ExtractiveResult("", [], [], np.zeros(0))
    scores = np.asarray(scorer(query, sentences), dtype=np.float64)
    if scores.shape != (len(sentences),):
        raise ValueError(
            f"extractive_compress: scorer returned shape {scores.shape}, "
            f"expected ({len(sentences)},)"
        )
    order = np.argsort(-scores, kind="stable")  # best first, earlier sentence on ties
    used, kept = 0, []
    for i in order.tolist():
        cost = count_tokens(sentences[i])
        if used + cost <= budget:
            kept.append(i)
            used += cost
    kept.sort()
    return ExtractiveResult(" ".join(sentences[i] for i in kept), kept, sentences, scores)


@dataclass
class SurprisalResult:
    """Kept tokens (in order), their indices, every token's surprisal (nats) and the
    per-segment thresholds γ."""

    tokens: list
    kept: np.ndarray
    surprisal: np.ndarray
    thresholds: list[float]


def _keep_top(surprisal: np.ndarray, n_keep: int) -> tuple[np.ndarray, float]:
    """Indices (sorted) of the n_keep largest surprisals, ties to earlier; and γ."""
    if n_keep <= 0:
        return np.zeros(0, dtype=np.int64), float("inf")
    order = np.argsort(-surprisal, kind="stable")[:n_keep]
    return np.sort(order), float(surprisal[order[-1]])


def surprisal_compress(
    tokens: Sequence,
    logprobs: Callable[[list], np.ndarray],
    budget: int | None = None,
    ratio: float | None = None,
    segment_size: int | None = None,
) -> SurprisalResult:
    """Drop the most predictable tokens, keeping ``budget`` tokens (or ``ratio`` of them).

    ``logprobs(seq)`` must return log p(seq[i] | seq[:i]) for every i, shape (len(seq),).
    With ``segment_size`` the LLMLingua iterative scheme is used (see the module docstring);
    otherwise every token is scored once on the full prompt (Selective Context).
    """
    tokens = list(tokens)
    n = len(tokens)
    if (budget is None) == (ratio is None):
        raise ValueError("surprisal_compress: give exactly one of budget and ratio")
    if ratio is not None:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"surprisal_compress: ratio must be in [0, 1], got {ratio}")
        budget = int(round(ratio * n))
    if not isinstance(budget, (int, np.integer)) or budget < 0:
        raise ValueError(f"surprisal_compress: budget must be an integer >= 0, got {budget!r}")
    budget = min(int(budget), n)
    if segment_size is not None and segment_size < 1:
        raise ValueError(f"surprisal_compress: segment_size must be >= 1, got {segment_size}")

    def score(sequence: list, last: int) -> np.ndarray:
        values = np.asarray(logprobs(sequence), dtype=np.float64)
        if values.shape != (len(sequence),):
            raise ValueError(
                f"surprisal_compress: logprobs returned shape {values.shape} for "
                f"{len(sequence)} tokens"
            )
        return -values[len(sequence) - last :]

    if n == 0:
        return SurprisalResult([], np.zeros(0, dtype=np.int64), np.zeros(0), [])
    if segment_size is None:
        surprisal = score(tokens, n)
        kept, gamma = _keep_top(surprisal, budget)
        return SurprisalResult([tokens[i] for i in kept], kept, surprisal, [gamma])
    surprisal = np.zeros(n)
    kept_all: list[int] = []
    thresholds: list[float] = []
    compressed: list = []
    for start in range(0, n, segment_size):
        stop = min(start + segment_size, n)
        segment = tokens[start:stop]
        seg_surprisal = score(compressed + segment, len(segment))
        surprisal[start:stop] = seg_surprisal
        # this segment's share: keep the running total at round(budget · stop / n)
        n_keep = int(round(budget * stop / n)) - len(kept_all)
        kept, gamma = _keep_top(seg_surprisal, min(max(n_keep, 0), len(segment)))
        thresholds.append(gamma)
        kept_all.extend((start + kept).tolist())
        compressed.extend(segment[i] for i in kept)
    kept_array = np.array(kept_all, dtype=np.int64)
    return SurprisalResult(compressed, kept_array, surprisal, thresholds)
