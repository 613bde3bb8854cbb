"""BM25 (Okapi) lexical ranking (Robertson et al., TREC-3, 1994).

For a query q (a multiset of terms; a repeated term counts once per occurrence) and a
document d of length |d| in a collection of N documents with average length avgdl:

    score(q, d) = Σ_{t∈q} w_t · idf(t) · f(t,d)·(k1 + 1) / (f(t,d) + k1·(1 − b + b·|d|/avgdl))

where f(t,d) is the count of t in d, n(t) the number of documents containing t, and w_t the
query weight of t (its count, or the weight given in a ``{term: weight}`` query).
Defaults k1 = 1.5, b = 0.75. The IDF is selected by ``idf``:

- ``"lucene"`` (default): ln(1 + (N − n + 0.5)/(n + 0.5)), always positive
  (Lucene/Elasticsearch; they also drop the (k1 + 1) factor, which does not change rankings;
  it is kept here). The default everywhere in ``tinyllm.rag`` (``BM25``, ``bm25_idf``,
  ``PassageRetriever``, ``tinyllm rag build``).
- ``"robertson"`` (textbook Robertson–Spärck Jones): ln((N − n + 0.5)/(n + 0.5)).
  Negative for terms in more than half the documents, so a common word in the query
  *lowers* a document's score; selectable for study.
- ``"rank_bm25"``: as ``rank_bm25.BM25Okapi``: Robertson IDF, then every negative IDF is
  replaced by ε · (mean IDF over the vocabulary, computed before the replacement), ε = 0.25.

Terms absent from the collection contribute 0. Scoring walks the postings of the query terms
only (term -> documents and counts, built as CSC arrays), so it costs O(Σ_t n(t)).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from tinyllm.rag.exact import top_k
from tinyllm.rag.persistence import load_arrays, save_arrays
from tinyllm.rag.text import tokenize

IDF_VARIANTS = ("robertson", "lucene", "rank_bm25")

Query = str | Sequence[str] | Mapping[str, float]


def bm25_idf(
    n_docs: int, doc_freq: np.ndarray, variant: str = "lucene", epsilon: float = 0.25
) -> np.ndarray:
    """IDF of terms with document frequencies ``doc_freq`` in N = ``n_docs`` documents
    (``variant``: ``"lucene"`` by default, ``"robertson"`` or ``"rank_bm25"``)."""
    if variant not in IDF_VARIANTS:
        raise ValueError(f"bm25_idf: variant must be one of {IDF_VARIANTS}, got {variant!r}")
    n = np.asarray(doc_freq, dtype=np.float64)
    ratio = (n_docs - n + 0.5) / (n + 0.5)
    if variant == "lucene":
        return np.log1p(ratio)
    idf = np.log(ratio)
    if variant == "rank_bm25" and idf.size:
        floor = epsilon * idf.mean()
        idf = np.where(idf < 0, floor, idf)
    return idf


class BM25:
    """An Okapi BM25 index over documents (raw strings, or lists of tokens).

    >>> docs = ["the cat sat", "the dog barked", "a cat and a dog", "birds fly", "fish swim"]
    >>> bm25 = BM25().fit(docs)
    >>> scores, ids = bm25.search("cat", k=2)
    >>> ids.tolist()
    [0, 2]

    The IDF is Lucene's (never negative) unless ``idf`` says otherwise. With the textbook
    ``idf="robertson"`` a term in more than half the documents has a negative weight:

    >>> BM25(idf="robertson").fit(docs[:3]).get_scores("cat").round(3).tolist()
    [-0.556, 0.0, -0.439]
    >>> BM25().fit(docs[:3]).get_scores("cat").round(3).tolist()
    [0.512, 0.0, 0.404]
    """

    def __init__(
        self,
        k1: float = 1.5,
        b: float = 0.75,
        idf: str = "lucene",
        epsilon: float = 0.25,
        tokenizer: Callable[[str], list[str]] = tokenize,
    ) -> None:
        if idf not in IDF_VARIANTS:
            raise ValueError(f"BM25: idf must be one of {IDF_VARIANTS}, got {idf!r}")
        if k1 < 0 or not 0.0 <= b <= 1.0:
            raise ValueError(f"BM25: need k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.k1 = float(k1)
        self.b = float(b)
        self.idf_variant = idf
        self.epsilon = float(epsilon)
        self.tokenizer = tokenizer
        self.vocabulary: dict[str, int] = {}
        self._doc_len = np.zeros(0, dtype=np.int64)
        # (document, term, count) triples of every document, in document order
        self._coo_doc = np.zeros(0, dtype=np.int64)
        self._coo_term = np.zeros(0, dtype=np.int64)
        self._coo_count = np.zeros(0, dtype=np.int64)
        self._dirty = True

    def __len__(self) -> int:
        return self._doc_len.shape[0]

    def _tokens(self, document) -> list[str]:
        if isinstance(document, str):
            return self.tokenizer(document)
        if isinstance(document, Sequence) and all(isinstance(t, str) for t in document):
            return list(document)
        raise TypeError(
            f"BM25: a document must be a str or a list of str tokens, got {type(document).__name__}"
        )

    def fit(self, documents: Sequence) -> BM25:
        """Index ``documents`` from scratch; returns self."""
        self.vocabulary = {}
        self._doc_len = np.zeros(0, dtype=np.int64)
        self._coo_doc = self._coo_term = self._coo_count = np.zeros(0, dtype=np.int64)
        self.add(documents)
        return self

    def add(self, documents: Sequence) -> np.ndarray:
        """Append ``documents``; returns their ids. Collection statistics (N, n(t), avgdl) are
        recomputed, so every score reflects the whole collection."""
        if isinstance(documents, str):
            raise TypeError("BM25.add: documents must be a sequence of documents, not one str")
        token_lists = [self._tokens(document) for document in documents]
        start = len(self)
        docs, terms, counts, lengths = [], [], [], []
        for offset, tokens in enumerate(token_lists):
            lengths.append(len(tokens))
            for term, count in Counter(tokens).items():
                column = self.vocabulary.setdefault(term, len(self.vocabulary))
                docs.append(start + offset)
                terms.append(column)
                counts.append(count)
        self._doc_len = np.concatenate([self._doc_len, np.array(lengths, dtype=np.int64)])
        self._coo_doc = np.concatenate([self._coo_doc, np.array(docs, dtype=np.int64)])
        self._coo_term = np.concatenate([self._coo_term, np.array(terms, dtype=np.int64)])
        self._coo_count = np.concatenate([self._coo_count, np.array(counts, dtype=np.int64)])
        self._dirty = True
        return np.arange(start, len(self), dtype=np.int64)

    def _refresh(self) -> None:
        """Rebuild the postings (CSC by term) and the IDF after documents were added."""
        if not self._dirty:
            return
        n_terms = len(self.vocabulary)
        order = np.argsort(self._coo_term, kind="stable")
        self._post_docs = self._coo_doc[order]
        self._post_counts = self._coo_count[order].astype(np.float64)
        self._indptr = np.zeros(n_terms + 1, dtype=np.int64)
        np.cumsum(np.bincount(self._coo_term, minlength=n_terms), out=self._indptr[1:])
        self.doc_freq = np.diff(self._indptr)
        self.idf = bm25_idf(len(self), self.doc_freq, self.idf_variant, self.epsilon)
        self.avgdl = float(self._doc_len.mean()) if len(self) else 0.0
        self._dirty = False

    def _query_weights(self, query: Query) -> dict[str, float]:
        if isinstance(query, Mapping):
            return {str(t): float(w) for t, w in query.items()}
        tokens = self.tokenizer(query) if isinstance(query, str) else list(query)
        return {t: float(c) for t, c in Counter(tokens).items()}

    def term_scores(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        """(document ids, BM25 contributions) of one term, over the documents containing it."""
        self._refresh()
        column = self.vocabulary.get(term)
        if column is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        lo, hi = self._indptr[column], self._indptr[column + 1]
        docs, f = self._post_docs[lo:hi], self._post_counts[lo:hi]
        norm = self.k1 * (1.0 - self.b + self.b * self._doc_len[docs] / self.avgdl)
        return docs, self.idf[column] * f * (self.k1 + 1.0) / (f + norm)

    def get_scores(self, query: Query) -> np.ndarray:
        """BM25 score of every document (N,) for a query string, token list, or
        ``{term: weight}`` mapping."""
        weights = self._query_weights(query)
        scores = np.zeros(len(self))
        for term, weight in weights.items():
            docs, contribution = self.term_scores(term)
            scores[docs] += weight * contribution  # docs are unique within one term
        return scores

    def search(self, query: Query, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best documents: ``(scores (k',), ids (k',))`` with k' = min(k, N)."""
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"BM25.search: k must be a positive integer, got {k!r}")
        scores = self.get_scores(query)
        if scores.size == 0:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        values, ids = top_k(scores, min(k, scores.size), largest=True)
        return values, ids.astype(np.int64)

    def document_vector(self, doc_id: int) -> dict[str, int]:
        """The term counts of one document, ``{term: f(t, d)}``."""
        if not 0 <= doc_id < len(self):
            raise IndexError(f"BM25.document_vector: doc_id {doc_id} out of range [0, {len(self)})")
        terms = self.terms
        mask = self._coo_doc == doc_id
        return {terms[t]: int(c) for t, c in zip(self._coo_term[mask], self._coo_count[mask])}

    @property
    def terms(self) -> list[str]:
        """The vocabulary in column order."""
        out = [""] * len(self.vocabulary)
        for term, column in self.vocabulary.items():
            out[column] = term
        return out

    def doc_lengths(self) -> np.ndarray:
        """|d| of every document (N,)."""
        return self._doc_len.copy()

    def save(self, path: str | Path) -> Path:
        """Write the index to ``path`` (``.npz``, atomically, no pickle). The tokenizer is not
        saved; pass the same one to :meth:`load` if it is not the default."""
        terms = self.terms
        arrays = {
            "terms": np.array(terms, dtype=str) if terms else np.zeros(0, dtype="<U1"),
            "doc_len": self._doc_len,
            "coo_doc": self._coo_doc,
            "coo_term": self._coo_term,
            "coo_count": self._coo_count,
        }
        meta = {
            "type": "BM25",
            "k1": self.k1,
            "b": self.b,
            "idf": self.idf_variant,
            "epsilon": self.epsilon,
            "default_tokenizer": self.tokenizer is tokenize,
        }
        return save_arrays(path, arrays, meta)

    @classmethod
    def load(cls, path: str | Path, tokenizer: Callable[[str], list[str]] | None = None) -> BM25:
        """Read an index written by :meth:`save`."""
        arrays, meta = load_arrays(path)
        if meta.get("type") != cls.__name__:
            raise ValueError(f"BM25.load: {path} holds a {meta.get('type')!r}, not a BM25")
        return cls._from_arrays(arrays, meta, tokenizer)

    @classmethod
    def _from_arrays(cls, arrays: dict, meta: dict, tokenizer=None) -> BM25:
        index = cls(meta["k1"], meta["b"], meta["idf"], meta["epsilon"], tokenizer or tokenize)
        index.vocabulary = {str(term): i for i, term in enumerate(arrays["terms"].tolist())}
        index._doc_len = arrays["doc_len"].astype(np.int64)
        index._coo_doc = arrays["coo_doc"].astype(np.int64)
        index._coo_term = arrays["coo_term"].astype(np.int64)
        index._coo_count = arrays["coo_count"].astype(np.int64)
        index._dirty = True
        return index
