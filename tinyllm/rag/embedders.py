"""Pluggable text embedders for dense retrieval.

An embedder is any callable ``embed(texts: list[str]) -> np.ndarray`` of shape (len(texts), D)
(float32, ideally L2-normalised). The retrieval code depends only on that contract, so a
transformer encoder (e.g. MiniLM mean-pooled and normalised) plugs in unchanged.

:class:`TfidfProjectionEmbedder` is the dependency-free baseline used until such a model is
available. A text becomes a sparse TF-IDF vector over word unigrams and, optionally,
character n-grams of each word (with ``<`` and ``>`` marking word boundaries, as fastText),
which gives some robustness to inflections ("function" ~ "functions"):

    tf(f, x) = 1 + ln(count(f, x))  (sublinear),   idf(f) = ln((1 + N) / (1 + n(f))) + 1,

the vector is L2-normalised, then multiplied by a fixed Gaussian random matrix
R ∈ R^{F×D} / √D and normalised again. By Johnson–Lindenstrauss, cosines between projected
vectors approximate the TF-IDF cosines (error ~ 1/√D), so this is a lexical model in dense
form: it finds passages that share words with the query, not paraphrases. R is regenerated
from ``seed`` on load (NumPy's Generator streams are stable), so saving it costs nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tinyllm.rag.persistence import load_arrays, save_arrays
from tinyllm.rag.similarity import normalize
from tinyllm.rag.text import STOPWORDS, tokenize


def _features(text: str, char_ngram: int) -> list[str]:
    words = tokenize(text, STOPWORDS)
    features = list(words)
    if char_ngram > 0:
        for word in words:
            padded = f"<{word}>"
            for i in range(len(padded) - char_ngram + 1):
                features.append("#" + padded[i : i + char_ngram])
    return features


class TfidfProjectionEmbedder:
    """TF-IDF (words + character n-grams) followed by a random Gaussian projection to ``dim``.

    >>> embed = TfidfProjectionEmbedder(dim=64).fit(["a cat sat", "a dog ran"])
    >>> embed(["the cat"]).shape
    (1, 64)
    """

    def __init__(self, dim: int = 256, char_ngram: int = 3, seed: int = 0) -> None:
        if not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(
                f"TfidfProjectionEmbedder: dim must be a positive integer, got {dim!r}"
            )
        if not isinstance(char_ngram, (int, np.integer)) or char_ngram < 0:
            raise ValueError(
                f"TfidfProjectionEmbedder: char_ngram must be an integer >= 0, got {char_ngram!r}"
            )
        self.dim = int(dim)
        self.char_ngram = int(char_ngram)
        self.seed = int(seed)
        self.vocabulary: dict[str, int] = {}
        self.idf = np.zeros(0)
        self.projection = np.zeros((0, self.dim), dtype=np.float32)

    def fit(self, texts: Sequence[str]) -> TfidfProjectionEmbedder:
        """Learn the feature vocabulary and IDF from ``texts``; draw the projection."""
        if isinstance(texts, str) or len(texts) == 0:
            raise ValueError("TfidfProjectionEmbedder.fit: texts must be a non-empty list of str")
        doc_freq: Counter = Counter()
        for text in texts:
            doc_freq.update(set(_features(text, self.char_ngram)))
        self.vocabulary = {f: i for i, f in enumerate(sorted(doc_freq))}
        counts = np.array([doc_freq[f] for f in sorted(doc_freq)], dtype=np.float64)
        self.idf = np.log((1.0 + len(texts)) / (1.0 + counts)) + 1.0
        self._draw_projection()
        return self

    def _draw_projection(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.projection = rng.standard_normal(
            (len(self.vocabulary), self.dim), dtype=np.float32
        ) / np.float32(np.sqrt(self.dim))

    def tfidf(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Sparse L2-normalised TF-IDF vectors: one (feature ids, values) pair per text."""
        out = []
        for text in texts:
            counts = Counter(
                self.vocabulary[f] for f in _features(text, self.char_ngram) if f in self.vocabulary
            )
            ids = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
            tf = 1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))
            values = tf * self.idf[ids]
            norm = np.linalg.norm(values)
            out.append((ids, values / norm if norm > 0 else values))
        return out

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` -> (len(texts), dim) float32, unit rows (zero rows for texts with no
        known feature)."""
        if not self.vocabulary:
            raise RuntimeError("TfidfProjectionEmbedder: call fit() before embedding")
        if isinstance(texts, str):
            raise TypeError("TfidfProjectionEmbedder: pass a list of texts, not one str")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, (ids, values) in enumerate(self.tfidf(texts)):
            if ids.size:
                out[row] = values.astype(np.float32) @ self.projection[ids]
        return normalize(out).astype(np.float32)

    def save(self, path: str | Path) -> Path:
        """Write the vocabulary and IDF (the projection is regenerated from the seed)."""
        terms = sorted(self.vocabulary, key=self.vocabulary.get)
        arrays = {"terms": np.array(terms, dtype=str), "idf": self.idf}
        meta = {
            "type": "TfidfProjectionEmbedder",
            "dim": self.dim,
            "char_ngram": self.char_ngram,
            "seed": self.seed,
        }
        return save_arrays(path, arrays, meta)

    @classmethod
    def load(cls, path: str | Path) -> TfidfProjectionEmbedder:
        arrays, meta = load_arrays(path)
        if meta.get("type") != cls.__name__:
            raise ValueError(f"TfidfProjectionEmbedder.load: {path} holds a {meta.get('type')!r}")
        embedder = cls(meta["dim"], meta["char_ngram"], meta["seed"])
        embedder.vocabulary = {str(t): i for i, t in enumerate(arrays["terms"].tolist())}
        embedder.idf = arrays["idf"].astype(np.float64)
        embedder._draw_projection()
        return embedder


def describe_embedder(embedder) -> str:
    """A name for ``embedder`` that a store records and checks on load: its ``name``
    attribute when it has one, the settings of a :class:`TfidfProjectionEmbedder`, else the
    module and qualified name of the callable (of its class for an instance)."""
    if isinstance(embedder, TfidfProjectionEmbedder):
        return (
            f"TfidfProjectionEmbedder(dim={embedder.dim}, char_ngram={embedder.char_ngram}, "
            f"seed={embedder.seed})"
        )
    name = getattr(embedder, "name", None)
    if isinstance(name, str) and name:
        return name
    owner = embedder if hasattr(embedder, "__qualname__") else type(embedder)
    return f"{owner.__module__}.{owner.__qualname__}"
