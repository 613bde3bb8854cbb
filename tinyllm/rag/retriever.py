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

``search_documents(query, k)`` answers at document (help topic) level, the default of
``tinyllm rag query`` on a store built with memberships and titles: the hybrid score fusion
of the top ``fetch_k`` (100) of both lists, collapsed by :func:`tinyllm.rag.collapse.
document_ranking` to one result per document (its best passage), plus ``title_weight`` (λ =
:data:`TITLE_WEIGHT`) times the cosine of the query and the document's title embedding, plus
``centroid_weight`` (μ = :data:`CENTROID_WEIGHT`) times the cosine of the query and the
document's centroid (the unit mean of its passages' dense vectors); a passage that several
documents share (the help topics repeat text word for word) is shown once, under the first of
them (``distinct_passages``, :data:`DISTINCT_PASSAGES`). On a store built with
``late_interaction`` (MiniLM's content-token states of every passage,
:class:`~tinyllm.rag.late_interaction.TokenIndex`, saved as ``late.npz``) the document score
is instead the learned weighted sum of :mod:`tinyllm.rag.topic_scoring`: with
:data:`TOPIC_WEIGHTS` (eleven features, fitted on 928 questions in round 11 of the
experiment) when the store also keeps template questions (:meth:`PassageRetriever.
add_template_questions`, ``templates.npz``; ``corpus_retriever`` builds them with late
interaction), else with :data:`ROUND7_TOPIC_WEIGHTS` (six features, round 7). The
indexes may be built over ``index_texts`` instead of the passage texts, e.g. the passages
with their title and section heading in front (:func:`tinyllm.rag.context.contextualize`).

The embedder is pluggable (any ``embed(texts) -> (n, D)``); only a
:class:`~tinyllm.rag.embedders.TfidfProjectionEmbedder` is saved with the store, any other
must be passed again to :meth:`PassageRetriever.load`.

Directory layout: ``passages.json``, ``bm25.npz`` and, with a dense index, ``dense.npz`` and
``embedder.npz`` (and ``late.npz`` with late interaction, ``templates.npz`` with template
questions); every file is written atomically.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from tinyllm.io.atomic import atomic_write
from tinyllm.rag.bm25 import BM25
from tinyllm.rag.collapse import document_ranking
from tinyllm.rag.embedders import TfidfProjectionEmbedder, describe_embedder
from tinyllm.rag.exact import ExactIndex
from tinyllm.rag.fusion import RRF_K, reciprocal_rank_fusion, score_fusion
from tinyllm.rag.hnsw import HNSWIndex
from tinyllm.rag.late_interaction import TokenIndex, encode_with_tokens
from tinyllm.rag.passages import Passage
from tinyllm.rag.persistence import load_index
from tinyllm.rag.similarity import normalize
from tinyllm.rag.text import operator_tokens
from tinyllm.rag.topic_scoring import TopicTable, check_topic_weights, rank_topics, topic_table

MODES = ("bm25", "dense", "hybrid", "hybrid_score")
FUSION_WEIGHTS = (0.25, 1.0)  # (BM25, dense), chosen on the dev questions
TITLE_WEIGHT = 0.3  # λ of the title cosine in search_documents, chosen on the dev questions
CENTROID_WEIGHT = 0.75  # μ of the topic-centroid cosine in search_documents, chosen on dev
DOCUMENT_FETCH_K = 100
DISTINCT_PASSAGES = True  # search_documents shows each passage once (round 6, choosing set)
# the learned topic score of a store with late interaction and template questions (round 11,
# fitted on the 928-question choosing set; experiments/results/rag_round11_frozen.json)
TOPIC_WEIGHTS = {
    "fused": 1.3102,
    "title": -0.7248,
    "centroid": 3.1462,
    "dense_max": 3.1814,
    "bm25_max": 2.0548,
    "maxsim": 7.839,
    "log_size": -0.9435,
    "symbol_max": 2.166,
    "template_max": 2.4224,
    "fused_second": 1.2421,
    "fused_count": 0.26,
}
# ... and of a store with late interaction only (round 7, fitted on 448 questions;
# experiments/results/rag_round7_frozen.json)
ROUND7_TOPIC_WEIGHTS = {
    "fused": 2.1013,
    "title": 0.4877,
    "centroid": 8.1187,
    "dense_max": 2.4289,
    "bm25_max": 1.7684,
    "maxsim": 7.4995,
}
TEMPLATES_PER_TOPIC = 40  # template questions kept per topic (round 11's, seed 0)
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
        memberships: Sequence[Sequence[str]] | None = None,
        titles: dict[str, str] | None = None,
        token_index: TokenIndex | None = None,
    ) -> None:
        if len(bm25) != len(passages):
            raise ValueError(
                f"PassageRetriever: bm25 has {len(bm25)} documents for {len(passages)} passages"
            )
        if (embedder is None) != (dense_index is None):
            raise ValueError("PassageRetriever: give both embedder and dense_index, or neither")
        if memberships is not None and len(memberships) != len(passages):
            raise ValueError(
                f"PassageRetriever: {len(memberships)} memberships for {len(passages)} passages"
            )
        self.passages = list(passages)
        self.bm25 = bm25
        self.embedder = embedder
        self.dense_index = dense_index
        if token_index is not None and (dense_index is None or len(token_index) != len(passages)):
            raise ValueError(
                "PassageRetriever: a token_index needs a dense store and one entry per passage"
            )
        # the documents of every passage (default: its own topic) and the documents' titles
        self.memberships = [
            tuple(sorted(m)) for m in (memberships or [[p.topic] for p in self.passages])
        ]
        self.titles = dict(titles or {})
        self._title_vectors: tuple[list[str], np.ndarray] | None = None
        self._centroids: tuple[list[str], np.ndarray] | None = None
        self._last_query: tuple[str, object, np.ndarray] | None = None
        # late interaction (MaxSim over content-token states), None when not built
        self.token_index = token_index
        self._last_tokens: tuple[str, np.ndarray] | None = None
        # optional map on query vectors only (e.g. tinyllm.rag.query_adapter.QueryAdapter);
        # passages and titles keep the embedder's vectors
        self.query_adapter: Callable[[np.ndarray], np.ndarray] | None = None
        # template questions [(text, documents)] and their embeddings, None when not added
        self.template_questions: list[tuple[str, tuple[str, ...]]] | None = None
        self._template_vectors: np.ndarray | None = None
        self._template_pairs: tuple[list[str], np.ndarray, np.ndarray] | None = None
        self._symbol_index: BM25 | None = None  # BM25 over operator tokens, on first use

    @classmethod
    def build(
        cls,
        passages: Sequence[Passage],
        embedder: Embedder | None = None,
        index: str = "exact",
        bm25_options: dict | None = None,
        hnsw_options: dict | None = None,
        index_texts: Sequence[str] | None = None,
        memberships: Sequence[Sequence[str]] | None = None,
        titles: dict[str, str] | None = None,
        late_interaction: bool = False,
    ) -> PassageRetriever:
        """Index ``passages`` with BM25 and, when ``embedder`` is given, a dense ``index``
        (``"exact"`` or ``"hnsw"``, cosine metric). ``index_texts`` (one per passage, default
        the passage texts) are what the indexes see; ``memberships`` and ``titles`` serve
        :meth:`search_documents`. ``late_interaction``: also keep the content-token states
        of the passage texts (:class:`~tinyllm.rag.late_interaction.TokenIndex`; needs a
        token-level embedder such as ``MiniLMEmbedder``), which turns on the learned topic
        score of :meth:`search_documents`."""
        if index not in ("exact", "hnsw"):
            raise ValueError(
                f"PassageRetriever.build: index must be 'exact' or 'hnsw', got {index!r}"
            )
        texts = [p.text for p in passages] if index_texts is None else list(index_texts)
        if len(texts) != len(passages):
            raise ValueError(
                f"PassageRetriever.build: {len(texts)} index_texts for {len(passages)} passages"
            )
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
        tokens = None
        if late_interaction:
            if embedder is None:
                raise ValueError("PassageRetriever.build: late_interaction needs an embedder")
            tokens = TokenIndex.build(embedder, [p.text for p in passages])
        return cls(passages, bm25, embedder, dense, memberships, titles, tokens)

    @property
    def has_dense(self) -> bool:
        return self.dense_index is not None

    def add_template_questions(
        self,
        questions: Sequence[tuple[str, Sequence[str]]],
        vectors: np.ndarray | None = None,
    ) -> None:
        """Keep template questions [(text, documents it asks about)], e.g.
        :func:`tinyllm.rag.template_questions.template_questions`, and their embeddings
        (``vectors``, computed with the store's embedder when None), for the
        ``template_max`` feature of :meth:`topic_features`."""
        if not self.has_dense:
            raise RuntimeError(
                "PassageRetriever.add_template_questions: this store has no dense index"
            )
        questions = [(str(text), tuple(sorted(documents))) for text, documents in questions]
        known = {d for m in self.memberships for d in m}
        unknown = {d for _, documents in questions for d in documents} - known
        if not questions or unknown:
            raise ValueError(
                "PassageRetriever.add_template_questions: need questions about the store's "
                f"documents, got {len(questions)} questions, unknown documents "
                f"{sorted(unknown)[:3]}"
            )
        if vectors is None:
            vectors = self.embedder([text for text, _ in questions])
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(questions), self.dense_index.vectors.shape[1]):
            raise ValueError(
                f"PassageRetriever.add_template_questions: vectors {vectors.shape} for "
                f"{len(questions)} questions of dimension {self.dense_index.vectors.shape[1]}"
            )
        self.template_questions, self._template_vectors = questions, vectors
        names = sorted({d for _, documents in questions for d in documents})
        row = {d: j for j, d in enumerate(names)}
        pairs = [(i, row[d]) for i, (_, documents) in enumerate(questions) for d in documents]
        self._template_pairs = (names, *np.array(pairs, dtype=np.int64).T)

    def _template_cosines(self, query: str) -> dict[str, float]:
        """The best cosine of the query and each document's template questions."""
        names, questions, documents = self._template_pairs
        cosines = self._template_vectors @ self._query_vector(query)
        best = np.full(len(names), -np.inf)
        np.maximum.at(best, documents, cosines[questions].astype(np.float64))
        return dict(zip(names, best.tolist()))

    def _symbol_scores(self, query: str) -> np.ndarray:
        """BM25 scores [P] of the query's operator tokens over the passage texts (0 for a
        query without operators)."""
        if self._symbol_index is None:
            self._symbol_index = BM25(tokenizer=operator_tokens).fit(
                [p.text for p in self.passages]
            )
        return self._symbol_index.get_scores(query)

    def _bm25_ranking(self, query: str, k: int) -> list[tuple[int, float]]:
        scores, ids = self.bm25.search(query, k)
        return [(int(i), float(s)) for i, s in zip(ids, scores)]

    def _dense_ranking(self, query: str, k: int) -> list[tuple[int, float]]:
        if not self.has_dense:
            raise RuntimeError("PassageRetriever.search: this store has no dense index")
        vector = self._query_vector(query)[None, :]
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
        elif mode == "hybrid":
            depth = max(k, fetch_k)
            lexical = self._bm25_ranking(query, depth)
            dense = self._dense_ranking(query, depth)
            ranked = reciprocal_rank_fusion(
                [[i for i, _ in lexical], [i for i, _ in dense]], rrf_k, weights
            )[:k]
        else:
            ranked = self.first_stage(query, max(k, fetch_k), weights)[0][:k]
        return [(self.passages[i], float(s)) for i, s in ranked]

    def first_stage(
        self, query: str, depth: int, weights: Sequence[float] = FUSION_WEIGHTS
    ) -> tuple[list[tuple[int, float]], list[tuple[int, float]], list[tuple[int, float]]]:
        """(fused, lexical, dense) for ``query``: the BM25 and dense top ``depth`` lists
        [(passage id, score), ...] and their min-max score fusion with ``weights`` (BM25,
        dense), best first: the first stage of ``hybrid_score`` search and of the document
        pipeline."""
        if not isinstance(depth, (int, np.integer)) or depth < 1:
            raise ValueError(
                f"PassageRetriever.first_stage: depth must be a positive integer, got {depth!r}"
            )
        lexical = self._bm25_ranking(query, depth)
        dense = self._dense_ranking(query, depth)
        return score_fusion([dict(lexical), dict(dense)], weights), lexical, dense

    def _query_vector(self, query: str) -> np.ndarray:
        """The query's embedding (D,), mapped by ``query_adapter`` when one is set; kept for
        the last (query, adapter) so that one search embeds it once."""
        last = self._last_query
        if last is None or last[0] != query or last[1] is not self.query_adapter:
            vector = np.asarray(self.embedder([query]), dtype=np.float32)
            if self.query_adapter is not None:
                vector = np.asarray(self.query_adapter(vector), dtype=np.float32)
            self._last_query = (query, self.query_adapter, vector[0])
        return self._last_query[2]

    def _query_tokens(self, query: str) -> np.ndarray:
        """The query's content-token unit rows [m, D] (late interaction), kept for the last
        query; the same forward pass also gives :meth:`_query_vector` (without an adapter)."""
        if self._last_tokens is None or self._last_tokens[0] != query:
            vector, rows = encode_with_tokens(self.embedder, [query])[0]
            self._last_tokens = (query, rows)
            if self.query_adapter is None:
                self._last_query = (query, None, vector)
        return self._last_tokens[1]

    def _title_cosines(self, query: str) -> dict[str, float]:
        """Cosine of the query and every document title (embedded once, on first use)."""
        if self._title_vectors is None:
            names = sorted(self.titles)
            vectors = np.asarray(self.embedder([self.titles[n] for n in names]), np.float32)
            self._title_vectors = (names, vectors)
        names, vectors = self._title_vectors
        return dict(zip(names, (vectors @ self._query_vector(query)).tolist()))

    def topic_centroids(self) -> tuple[list[str], np.ndarray]:
        """(documents sorted, unit rows c_t): the normalised mean of the dense vectors of the
        passages of each document (a shared passage counts for each of its documents);
        computed once, on first use."""
        if not self.has_dense:
            raise RuntimeError("PassageRetriever.topic_centroids: this store has no dense index")
        if self._centroids is None:
            names = sorted({d for m in self.memberships for d in m})
            row = {name: i for i, name in enumerate(names)}
            vectors = np.asarray(self.dense_index.vectors, dtype=np.float64)
            sums = np.zeros((len(names), vectors.shape[1]))
            for pid, members in enumerate(self.memberships):
                for document in members:
                    sums[row[document]] += vectors[pid]
            self._centroids = (names, normalize(sums).astype(np.float32))
        return self._centroids

    def search_documents(
        self,
        query: str,
        k: int = 5,
        fetch_k: int = DOCUMENT_FETCH_K,
        weights: Sequence[float] = FUSION_WEIGHTS,
        title_weight: float = TITLE_WEIGHT,
        centroid_weight: float = CENTROID_WEIGHT,
        distinct_passages: bool = DISTINCT_PASSAGES,
        topic_weights: Mapping[str, float] | str | None = "auto",
    ) -> list[tuple[str, Passage, float]]:
        """The k best documents for ``query`` as ``[(document, best passage, score), ...]``,
        best first (see the module docstring).

        ``topic_weights``: a mapping scores S(t) = Σ_f w_f x_f(t) over the features of
        :mod:`tinyllm.rag.topic_scoring` (fused passage score, title and centroid cosines,
        dense and BM25 maxima, MaxSim; ``maxsim`` needs a store built with
        ``late_interaction``); None scores S(t) = max passage score + ``title_weight`` ·
        cos(q, title_t) + ``centroid_weight`` · cos(q, c_t), c_t from
        :meth:`topic_centroids`, which is the linear score with w = (fused 1, title λ,
        centroid μ) (without a dense index the passage scores are BM25's alone and neither
        term is added); ``"auto"`` (default) is :data:`TOPIC_WEIGHTS` on a store
        with late interaction and template questions, :data:`ROUND7_TOPIC_WEIGHTS` on one
        with late interaction only, else None. ``distinct_passages``: a document whose best
        passage already stands for a document ranked above it is left out (the passage's
        other documents are ``memberships[passage.id]``), so the k results show k distinct
        passages."""
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(
                f"PassageRetriever.search_documents: k must be a positive integer, got {k!r}"
            )
        if isinstance(topic_weights, str):
            if topic_weights != "auto":
                raise ValueError(
                    "PassageRetriever.search_documents: topic_weights must be 'auto', None or "
                    f"a mapping, got {topic_weights!r}"
                )
            topic_weights = self.default_topic_weights()
        if topic_weights is None and self.has_dense:  # round 6: w = (fused 1, title λ, centroid μ)
            title_weight = title_weight if self.titles else 0.0
            topic_weights = {"fused": 1.0, "title": title_weight, "centroid": centroid_weight}
        depth = max(k, fetch_k)
        if topic_weights is not None:
            check_topic_weights(topic_weights)
            table = self.topic_features(query, depth, weights, topic_weights)
            ranked = rank_topics(table, topic_weights, distinct_passages)[:k]
        else:  # no dense index: the documents of the BM25 list
            fused = score_fusion([dict(self._bm25_ranking(query, depth))])
            ranked = document_ranking(fused, self.memberships, None, 0.0, distinct_passages)[:k]
        return [(doc, self.passages[pid], score) for doc, pid, score in ranked]

    def default_topic_weights(self) -> dict[str, float] | None:
        """The weights ``topic_weights="auto"`` stands for on this store (see
        :meth:`search_documents`)."""
        if self.token_index is None:
            return None
        return TOPIC_WEIGHTS if self.template_questions is not None else ROUND7_TOPIC_WEIGHTS

    def topic_features(
        self,
        query: str,
        fetch_k: int = DOCUMENT_FETCH_K,
        weights: Sequence[float] = FUSION_WEIGHTS,
        topic_weights: Mapping[str, float] | None = None,
    ) -> TopicTable:
        """The documents present in the fused top ``fetch_k`` for ``query`` and their
        features (:func:`tinyllm.rag.topic_scoring.topic_table`); MaxSim and the template
        cosines are computed when the store has them and ``topic_weights`` does not leave
        them at 0, the operator scores unless it does."""
        if not self.has_dense:
            raise RuntimeError("PassageRetriever.topic_features: this store has no dense index")

        def used(feature: str) -> bool:
            return topic_weights is None or topic_weights.get(feature, 0.0) != 0.0

        use_maxsim = used("maxsim")
        if use_maxsim and self.token_index is None and topic_weights is not None:
            raise ValueError(
                "PassageRetriever: topic_weights use 'maxsim' but the store has no token index "
                "(build it with late_interaction=True)"
            )
        if topic_weights is not None and used("template_max") and self.template_questions is None:
            raise ValueError(
                "PassageRetriever: topic_weights use 'template_max' but the store has no "
                "template questions (add_template_questions)"
            )
        maxsim = None
        if use_maxsim and self.token_index is not None:  # first: one pass embeds the query
            maxsim = self.token_index.scores(self._query_tokens(query))
        fused, lexical, dense = self.first_stage(query, fetch_k, weights)
        names, centroids = self.topic_centroids()
        cosines = (centroids @ self._query_vector(query)).tolist()
        title = self._title_cosines(query) if self.titles else {}
        missing = set(names) - set(title) if title else set()
        if missing:
            raise ValueError(f"PassageRetriever: no title for {sorted(missing)[:3]}")
        symbols = self._symbol_scores(query) if used("symbol_max") else None
        templates = None
        if used("template_max") and self.template_questions is not None:
            templates = self._template_cosines(query)
        centroid = dict(zip(names, cosines))
        return topic_table(
            fused, self.memberships, lexical, dense, title, centroid, maxsim, symbols, templates
        )

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
                "memberships": [list(m) for m in self.memberships],
                "titles": self.titles,
                "dense": self.has_dense,
                "late_interaction": self.token_index is not None,
                "template_questions": None
                if self.template_questions is None
                else [[text, list(documents)] for text, documents in self.template_questions],
                "embedder": describe_embedder(self.embedder) if self.has_dense else None,
                "note": note,
            },
        )
        self.bm25.save(directory / "bm25.npz")
        if self.has_dense:
            self.dense_index.save(directory / "dense.npz")
            if isinstance(self.embedder, TfidfProjectionEmbedder):
                self.embedder.save(directory / "embedder.npz")
        if self.token_index is not None:
            self.token_index.save(directory / "late.npz")
        if self.template_questions is not None:
            with atomic_write(directory / "templates.npz", "wb") as handle:
                np.savez(handle, vectors=self._template_vectors)
        return directory

    @classmethod
    def load(cls, directory: str | Path, embedder: Embedder | None = None) -> PassageRetriever:
        """Read a store written by :meth:`save`. An ``embedder`` passed for a dense store
        must be the one the store was built with (compared by :func:`~tinyllm.rag.embedders.
        describe_embedder`; stores saved before the name was recorded are not checked):
        passage vectors of one model searched with query vectors of another rank nonsense."""
        directory = Path(directory)
        manifest = directory / "passages.json"
        if not manifest.is_file():
            raise FileNotFoundError(f"PassageRetriever.load: no passages.json in {directory}")
        payload = json.loads(manifest.read_text(encoding="utf-8"))
        recorded = payload.get("embedder")
        if payload.get("dense") and embedder is not None and recorded is not None:
            given = describe_embedder(embedder)
            if given != recorded:
                raise ValueError(
                    f"PassageRetriever.load: the store in {directory} was built with embedder "
                    f"{recorded!r}, but embedder {given!r} was given; rebuild the store with "
                    "that embedder or pass the one it was built with"
                )
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
        tokens = None
        if payload.get("late_interaction"):
            if not hasattr(embedder, "encode"):
                raise ValueError(
                    "PassageRetriever.load: the store keeps late-interaction token states; pass "
                    "the token-level embedder it was built with (embedder=MiniLMEmbedder())"
                )
            tokens = TokenIndex.load(directory / "late.npz")
        store = cls(
            passages,
            bm25,
            embedder,
            dense,
            payload.get("memberships"),
            payload.get("titles"),
            tokens,
        )
        if payload.get("template_questions"):
            with np.load(directory / "templates.npz", allow_pickle=False) as data:
                store.add_template_questions(payload["template_questions"], data["vectors"])
        return store


PASSAGE_WORDS = (50, 100)  # (min, max) passage words of the corpus store, chosen on dev


def corpus_retriever(
    embedder: Embedder | None = None,
    min_words: int = PASSAGE_WORDS[0],
    max_words: int = PASSAGE_WORDS[1],
    context: bool = True,
    index: str = "exact",
    bm25_options: dict | None = None,
    topics: dict[str, str] | None = None,
    late_interaction: bool = False,
) -> PassageRetriever:
    """The store of the default corpus (or ``topics``) with the dev-chosen defaults: passages
    of ``min_words``-``max_words`` words indexed with their title and section heading in
    front (``context``), each passage a member of every topic containing its text
    (:func:`tinyllm.rag.evaluation.passage_homes`), and the topic titles for
    :meth:`PassageRetriever.search_documents`; ``late_interaction`` as in
    :meth:`PassageRetriever.build`, and with it the topics' template questions
    (:func:`tinyllm.rag.template_questions.template_questions`, ``TEMPLATES_PER_TOPIC`` per
    topic, seed 0), which turn on :data:`TOPIC_WEIGHTS`."""
    from tinyllm.rag.context import contextualize, topic_titles
    from tinyllm.rag.evaluation import passage_homes
    from tinyllm.rag.passages import corpus_passages

    if topics is None:
        from tinyllm.data.corpus import default_corpus_topics

        topics = default_corpus_topics()
    passages = corpus_passages(min_words, max_words, topics)
    store = PassageRetriever.build(
        passages,
        embedder=embedder,
        index=index,
        bm25_options=bm25_options,
        index_texts=contextualize(passages, topics) if context else None,
        memberships=passage_homes(passages, topics),
        titles=topic_titles(topics),
        late_interaction=late_interaction,
    )
    if late_interaction:
        from tinyllm.rag.template_questions import template_questions

        store.add_template_questions(template_questions(topics, TEMPLATES_PER_TOPIC, seed=0))
    return store
