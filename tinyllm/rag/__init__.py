"""Retrieval for retrieval-augmented generation, on NumPy and Numba.

Vector search: :mod:`~tinyllm.rag.similarity` (cosine, dot, L2), :mod:`~tinyllm.rag.exact`
(brute force with argpartition), :mod:`~tinyllm.rag.ivf` (k-means inverted lists),
:mod:`~tinyllm.rag.lsh` (random hyperplanes), :mod:`~tinyllm.rag.hnsw` (Malkov & Yashunin,
Numba kernels). Lexical: :mod:`~tinyllm.rag.bm25`. Hybrid: :mod:`~tinyllm.rag.fusion` (RRF,
min-max score fusion). Query side: :mod:`~tinyllm.rag.query` (RM3, HyDE),
:mod:`~tinyllm.rag.query_adapter` (a near-identity linear map on query vectors, InfoNCE;
measured, not a default) and :mod:`~tinyllm.rag.template_questions` (question-like pairs made
from a corpus). Context side:
:mod:`~tinyllm.rag.compress` (extractive, surprisal), :mod:`~tinyllm.rag.rerank` (MMR,
cross-encoder; :mod:`~tinyllm.rag.cross_encoder`, a MiniLM cross-encoder with a fitted head).
Judging: :mod:`~tinyllm.rag.evaluation` (the natural-language question set, hit@k, MRR).
Passages and the store: :mod:`~tinyllm.rag.passages`, :mod:`~tinyllm.rag.context` (title and
section heading in front of each passage), :mod:`~tinyllm.rag.collapse` (one result per
document, MaxP plus title and topic-centroid priors), :mod:`~tinyllm.rag.topic_scoring` (a
learned linear topic score) with :mod:`~tinyllm.rag.late_interaction` (ColBERT's MaxSim from
MiniLM's token states), :mod:`~tinyllm.rag.embedder_tuning` (LoRA on MiniLM's top layers,
trained as a bi-encoder on a corpus; measured, not a default),
:mod:`~tinyllm.rag.cross_encoder_tuning` (the same for a MiniLM cross-encoder with a linear
head; measured, not a default), :mod:`~tinyllm.rag.retriever`
(``corpus_retriever``, the dev-chosen store; ``search_documents``). Embedders:
:class:`TfidfProjectionEmbedder` (no model) and :class:`MiniLMEmbedder` (all-MiniLM-L6-v2,
from :mod:`tinyllm.embeddings`). Nothing is compiled at import; Numba kernels compile on first
use (and are cached beside the sources).
"""

from tinyllm.embeddings import MiniLMEmbedder
from tinyllm.rag.bm25 import BM25, bm25_idf
from tinyllm.rag.collapse import document_ranking
from tinyllm.rag.compress import extractive_compress, surprisal_compress
from tinyllm.rag.context import contextualize, passage_context, topic_titles
from tinyllm.rag.cross_encoder import LinearHead, MiniLMCrossEncoder, rerank_results
from tinyllm.rag.cross_encoder_tuning import (
    TunedCrossEncoder,
    load_cross_encoder,
    tune_cross_encoder,
)
from tinyllm.rag.embedder_tuning import mine_rows, tune_minilm, tuned_minilm
from tinyllm.rag.embedders import TfidfProjectionEmbedder
from tinyllm.rag.evaluation import load_questions, passage_homes, ranking_metrics
from tinyllm.rag.exact import ExactIndex, exact_search, top_k
from tinyllm.rag.fusion import min_max_normalize, reciprocal_rank_fusion, score_fusion
from tinyllm.rag.hnsw import HNSWIndex
from tinyllm.rag.ivf import IVFIndex
from tinyllm.rag.kmeans import kmeans
from tinyllm.rag.late_interaction import TokenIndex
from tinyllm.rag.lsh import LSHIndex
from tinyllm.rag.passages import Passage, corpus_passages, split_passages
from tinyllm.rag.persistence import load_index
from tinyllm.rag.query import hyde_search, hyde_vector, multi_query_fusion, rm3_expand, rm3_search
from tinyllm.rag.query_adapter import QueryAdapter, fit_query_adapter
from tinyllm.rag.rerank import cross_encoder_rerank, mmr
from tinyllm.rag.retriever import PassageRetriever, corpus_retriever
from tinyllm.rag.similarity import cosine_similarity, dot_similarity, l2_distance, normalize
from tinyllm.rag.text import tokenize
from tinyllm.rag.topic_scoring import fit_topic_weights, rank_topics, topic_objective, topic_table

__all__ = [
    "BM25",
    "ExactIndex",
    "HNSWIndex",
    "IVFIndex",
    "LSHIndex",
    "LinearHead",
    "MiniLMCrossEncoder",
    "MiniLMEmbedder",
    "Passage",
    "PassageRetriever",
    "QueryAdapter",
    "TfidfProjectionEmbedder",
    "TokenIndex",
    "TunedCrossEncoder",
    "bm25_idf",
    "contextualize",
    "corpus_passages",
    "corpus_retriever",
    "cosine_similarity",
    "cross_encoder_rerank",
    "document_ranking",
    "dot_similarity",
    "exact_search",
    "extractive_compress",
    "fit_topic_weights",
    "fit_query_adapter",
    "hyde_search",
    "hyde_vector",
    "kmeans",
    "load_cross_encoder",
    "l2_distance",
    "load_index",
    "load_questions",
    "mine_rows",
    "min_max_normalize",
    "mmr",
    "multi_query_fusion",
    "normalize",
    "passage_context",
    "passage_homes",
    "rank_topics",
    "ranking_metrics",
    "reciprocal_rank_fusion",
    "rerank_results",
    "rm3_expand",
    "rm3_search",
    "score_fusion",
    "split_passages",
    "surprisal_compress",
    "tokenize",
    "top_k",
    "topic_objective",
    "topic_table",
    "topic_titles",
    "tune_cross_encoder",
    "tune_minilm",
    "tuned_minilm",
]
