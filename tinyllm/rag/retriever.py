"""A passage store with lexical, dense and hybrid retrieval, saved as a directory.

``PassageRetriever`` holds the passages, a BM25 index over them and, optionally, an embedder
with a dense vector index (exact or HNSW, cosine). ``search(query, k, mode)`` answers with
``mode`` in:

- ``"bm25"``: BM25 scores (Lucene IDF, BM25's default: the textbook Robertson IDF, still
  selectable with ``bm25_options={"idf": "robertson"}``, is negative for words in more than
  half of the passages, e.g. "the" gets −5.3 on the help topics, which sinks long relevant
  passages for natural-language queries);
- ``"dense"``: cosine similarity of ``embed([query])`` to the passage embeddings;
- ``"hybrid"``: reciprocal rank fusion (k = ``rrf_k``, 60) of the top ``fetch_k`` of both
  lists;
- ``"hybrid_score"``: min-max normalised score fusion of the same lists.

Both hybrids weight the lists by ``weights`` = (BM25, dense), default
:data:`FUSION_WEIGHTS` = (0.25, 1.0): on the development half of the natural-language
question set (``tinyllm/data/rag_questions.json``, ``experiments/rag_retrieval.py``) with
150-300-word passages, score fusion with these weights had the best MRR of the methods tried
(0.807, hit@5 0.924; equal weights 0.761 / 0.924, dense alone 0.773 / 0.895).

The embedder is pluggable (any ``embed(texts) -> (n, D)``); only a
:class:`~tinyllm.rag.embedders.TfidfProjectionEmbedder` is saved with the store, any other
must be passed again to :meth:`PassageRetriever.load`.

Directory layout: ``passages.json``, ``bm25.npz`` and, with a dense index, ``dense.npz`` and
``embedder.npz``; every file is written atomically.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from tinyllm.io.atomic import atomic_write
from tinyllm.rag.bm25 import BM25
from tinyllm.rag.embedders import TfidfProjectionEmbedder
from tinyllm.rag.exact import ExactIndex
from tinyllm.rag.fusion import RRF_K, reciprocal_rank_fusion, score_fusion
from tinyllm.rag.hnsw import HNSWIndex
from tinyllm.rag.passages import Passage
from tinyllm.rag.persistence import load_index

MODES = ("bm25", "dense", "hybrid", "hybrid_score")
FUSION_WEIGHTS = (0.25, 1.0)  # (BM25, dense), chosen on the dev questions
Embedder = Callable[[list[str]], np.ndarray]


def _write_json_atomic(path: Path, payload) -> None:
    with atomic_write(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, ensure_ascii=False)


class PassageRetriever:
    """BM25 + optional dense retrieval over a list of :class:`Passage`."""

    def __init__(
        self,
        passages: Sequence[Passage],
        bm25: BM25,
        embedder: Embedder | None = None,
        dense_index=None,
    ) -> None:
        if len(bm25) != len(passages):
            raise ValueError(
                f"PassageRetriever: bm25 has {len(bm25)} documents for {len(passages)} passages"
            )
        if (embedder is None) != (dense_index is None):
            raise ValueError("PassageRetriever: give both embedder and dense_index, or neither")
        self.passages = list(passages)
        self.bm25 = bm25
        self.embedder = embedder
        self.dense_index = dense_index

    @classmethod
    def build(
        cls,
        passages: Sequence[Passage],
        embedder: Embedder | None = None,
        index: str = "exact",
        bm25_options: dict | None = None,
        hnsw_options: dict | None = None,
    ) -> PassageRetriever:
        """Index ``passages`` with BM25 and, when ``embedder`` is given, a dense ``index``
        (``"exact"`` or ``"hnsw"``, cosine metric)."""
        if index not in ("exact", "hnsw"):
            raise ValueError(
                f"PassageRetriever.build: index must be 'exact' or 'hnsw', got {index!r}"
            )
        texts = [p.text for p in passages]
        bm25 = BM25(**(bm25_options or {})).fit(texts)
        dense = None
        if embedder is not None:
            vectors = np.asarray(embedder(texts), dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[0] != len(texts):
                raise ValueError(
                    f"PassageRetriever.build: embedder returned shape {vectors.shape} "
                    f"for {len(texts)} passages"
                )
            if index == "exact":
                dense = ExactIndex(vectors.shape[1], metric="cosine")
            else:
                dense = HNSWIndex(vectors.shape[1], metric="cosine", **(hnsw_options or {}))
            dense.add(vectors)
        return cls(passages, bm25, embedder, dense)

    @property
    def has_dense(self) -> bool:
        return self.dense_index is not None

    def _bm25_ranking(self, query: str, k: int) -> list[tuple[int, float]]:
        scores, ids = self.bm25.search(query, k)
        return [(int(i), float(s)) for i, s in zip(ids, scores)]

    def _dense_ranking(self, query: str, k: int) -> list[tuple[int, float]]:
        if not self.has_dense:
            raise RuntimeError("PassageRetriever.search: this store has no dense index")
        vector = np.asarray(self.embedder([query]), dtype=np.float32)
        scores, ids = self.dense_index.search(vector, min(k, len(self.passages)))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def search(
        self,
        query: str,
        k: int = 5,
        mode: str = "bm25",
        fetch_k: int = 50,
        weights: Sequence[float] = FUSION_WEIGHTS,
        rrf_k: float = RRF_K,
    ) -> list[tuple[Passage, float]]:
        """The k best passages for ``query`` as ``[(passage, score), ...]``, best first.
        ``weights`` (BM25, dense) and ``rrf_k`` apply to the hybrid modes."""
        if mode not in MODES:
            raise ValueError(f"PassageRetriever.search: mode must be one of {MODES}, got {mode!r}")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"PassageRetriever.search: k must be a positive integer, got {k!r}")
        if mode == "bm25":
            ranked = self._bm25_ranking(query, k)
        elif mode == "dense":
            ranked = self._dense_ranking(query, k)
        else:
            depth = max(k, fetch_k)
            lexical = self._bm25_ranking(query, depth)
            dense = self._dense_ranking(query, depth)
            if mode == "hybrid":
                ranked = reciprocal_rank_fusion(
                    [[i for i, _ in lexical], [i for i, _ in dense]], rrf_k, weights
                )
            else:
                ranked = score_fusion([dict(lexical), dict(dense)], weights)
            ranked = ranked[:k]
        return [(self.passages[i], float(s)) for i, s in ranked]

    def save(self, directory: str | Path) -> Path:
        """Write the store into ``directory`` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.has_dense and not isinstance(self.embedder, TfidfProjectionEmbedder):
            note = "the embedder is not saved; pass it to PassageRetriever.load"
        else:
            note = ""
        _write_json_atomic(
            directory / "passages.json",
            {
                "passages": [p.to_dict() for p in self.passages],
                "dense": self.has_dense,
                "note": note,
            },
        )
        self.bm25.save(directory / "bm25.npz")
        if self.has_dense:
            self.dense_index.save(directory / "dense.npz")
            if isinstance(self.embedder, TfidfProjectionEmbedder):
                self.embedder.save(directory / "embedder.npz")
        return directory

    @classmethod
    def load(cls, directory: str | Path, embedder: Embedder | None = None) -> PassageRetriever:
        """Read a store written by :meth:`save`."""
        directory = Path(directory)
        manifest = directory / "passages.json"
        if not manifest.is_file():
            raise FileNotFoundError(f"PassageRetriever.load: no passages.json in {directory}")
        payload = json.loads(manifest.read_text(encoding="utf-8"))
        passages = [Passage(**item) for item in payload["passages"]]
        bm25 = BM25.load(directory / "bm25.npz")
        dense = None
        if payload.get("dense"):
            dense = load_index(directory / "dense.npz")
            if embedder is None:
                if not (directory / "embedder.npz").is_file():
                    raise ValueError(
                        "PassageRetriever.load: the store has a dense index but no saved "
                        "embedder; pass embedder="
                    )
                embedder = TfidfProjectionEmbedder.load(directory / "embedder.npz")
        else:
            embedder = None
        return cls(passages, bm25, embedder, dense)
