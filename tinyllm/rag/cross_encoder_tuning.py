"""A MiniLM cross-encoder tuned to a corpus: LoRA on the top layers and a linear head.

The query q and a passage p are read as one sequence ``[CLS] q [SEP] p [SEP]`` (as in
:mod:`tinyllm.rag.cross_encoder`), and the pair scores

    s(q, p) = w · h̄(q, p),

h̄ the unit mean of the last hidden states over the joint sequence. Unlike the frozen
cross-encoder, the encoder learns here: LoRA (:mod:`tinyllm.nn.lora`) on the q, k, v, o and
both feed-forward maps of the top ``top_layers`` layers, trained with the head w (a bias
would cancel in the loss below, so there is none).

Training groups come from the corpus and a ranking, never from labelled questions: each
query (:func:`tinyllm.rag.template_questions.template_questions` — made from headings,
identifiers and exception names) is ranked by the store's document pipeline, and its group G
is the shown passages of the top ``size`` documents, P ⊂ G those that answer it (a group with
no answering passage in the top gets its best-fused answering passage in the last place;
groups with no negative or no positive are dropped). The loss is the listwise softmax of
each group,

    L_G = log Σ_{j∈G} e^{s_j} − log Σ_{j∈P} e^{s_j},

averaged over a batch of groups (:func:`~tinyllm.rag.embedder_tuning.listwise_rows`). The
frozen lower layers run once per pair (:func:`~tinyllm.rag.embedder_tuning.lower_states`);
each step runs only the top layers. The adapter and the head are saved as one ``.npz``
(:func:`~tinyllm.rag.embedder_tuning.save_adapter`, the head under ``head.weight``).

Measured in round 9 of ``experiments/rag_retrieval.py``, not a default: trained on the 769
template questions of the default corpus (about 8.5 minutes on 2 CPU cores), it reorders
round 7's top 10 documents no better than round 7 alone (MRR +0.003 to +0.004 over
cross-validated folds, within the folds' spread), and alone it ranks far below it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyllm.rag.cross_encoder import joint_embeddings
from tinyllm.rag.embedder_tuning import (
    apply_adapter,
    listwise_rows,
    load_adapter,
    lower_states,
    top_embeddings,
    train_top_layers,
)
from tinyllm.tensor import Tensor

HEAD = "head.weight"  # the head's key in a saved cross-encoder


@dataclass(frozen=True)
class PairGroup:
    """One training group: the query, the passages of its candidates (indices) and which
    of them answer it (bool, same length)."""

    query: str
    passages: np.ndarray
    positive: np.ndarray


def mine_groups(
    store,
    homes: Sequence[Collection[str]],
    rows: Sequence[tuple[str, Collection[str]]],
    size: int = 8,
    weights: Mapping[str, float] | None = None,
) -> list[PairGroup]:
    """A :class:`PairGroup` of ``size`` candidates for each ``(query, topics)`` of ``rows``
    that has both an answering and a non-answering candidate: the shown passages of the top
    documents of ``store.topic_features(query)`` ranked by ``weights`` (default: the
    store's :meth:`~tinyllm.rag.retriever.PassageRetriever.default_topic_weights`, round 7's
    on a store without late interaction); ``homes[p]``: the topics passage p answers for
    (:func:`~tinyllm.rag.evaluation.passage_homes`)."""
    from tinyllm.rag.retriever import ROUND7_TOPIC_WEIGHTS
    from tinyllm.rag.topic_scoring import rank_topics

    if size < 2:
        raise ValueError(f"mine_groups: size must be >= 2, got {size}")
    weights = weights or store.default_topic_weights() or ROUND7_TOPIC_WEIGHTS
    groups = []
    for query, topics in rows:
        topics = set(topics)
        table = store.topic_features(query)
        shown = [p for _, p, _ in rank_topics(table, weights)[:size]]
        positive = [bool(homes[p] & topics) for p in shown]
        if not any(positive):
            best = next((p for p, _ in table.fused if homes[p] & topics), None)
            if best is None:
                continue
            shown[-1], positive[-1] = best, True
        if len(shown) == size and not all(positive):
            groups.append(PairGroup(query, np.array(shown), np.array(positive)))
    return groups


def tune_cross_encoder(
    embedder,
    passage_texts: Sequence[str],
    groups: Sequence[PairGroup],
    top_layers: int = 2,
    rank: int = 16,
    alpha: float = 32.0,
    lr: float = 2e-4,
    head_lr: float = 1e-2,
    epochs: float = 2.0,
    batch_size: int = 8,
    max_length: int = 128,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Train LoRA on ``embedder.model``'s top layers and the head w (module docstring) on
    ``groups`` (:func:`mine_groups`; ``batch_size`` groups a step), merge LoRA into the
    weights, and return the adapter with the head under :data:`HEAD`, for
    :func:`~tinyllm.rag.embedder_tuning.save_adapter` and :func:`load_cross_encoder`."""
    if not groups:
        raise ValueError("tune_cross_encoder: no training groups")
    size = len(groups[0].passages)
    if any(len(g.passages) != size or g.positive.shape != (size,) for g in groups):
        raise ValueError(f"tune_cross_encoder: every group needs {size} passages and flags")
    model = embedder.model
    pairs = [(g.query, passage_texts[p]) for g in groups for p in g.passages]
    states = lower_states(model, embedder.tokenizer, pairs, top_layers, max_length)
    positive = np.stack([g.positive for g in groups])
    head = Tensor(np.zeros((model.config.hidden_size, 1), dtype=np.float32), requires_grad=True)

    def batch_loss(picked: np.ndarray) -> Tensor:
        rows = [states[i * size + k] for i in picked for k in range(size)]
        scores = (top_embeddings(model, top_layers, rows) @ head).reshape(len(picked), size)
        return listwise_rows(scores, positive[picked])

    adapter = train_top_layers(
        model, top_layers, rank, alpha, len(groups), batch_loss, lr, epochs, batch_size, seed,
        extra=[{"params": [head], "lr": head_lr}],
        progress="tune_cross_encoder" if progress else None,
    )  # fmt: skip
    adapter[HEAD] = np.asarray(head.data, dtype=np.float32)[:, 0]
    return adapter


class TunedCrossEncoder:
    """``encoder(pairs) -> scores`` [n], s = w · h̄(q, p), with ``embedder``'s model already
    carrying the tuned layers (:func:`tune_cross_encoder` merges them;
    :func:`load_cross_encoder` reads a saved one)."""

    def __init__(self, embedder, head: np.ndarray, max_length: int = 128) -> None:
        head = np.asarray(head, dtype=np.float32)
        if head.shape != (embedder.model.config.hidden_size,):
            raise ValueError(
                f"TunedCrossEncoder: head {head.shape}, expected "
                f"({embedder.model.config.hidden_size},)"
            )
        self.embedder, self.head, self.max_length = embedder, head, max_length

    def __call__(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        if not pairs:
            return np.zeros(0)
        joint = joint_embeddings(self.embedder, pairs, self.max_length)
        return (joint @ self.head).astype(np.float64)


def load_cross_encoder(path: str | Path, **options) -> TunedCrossEncoder:
    """The cross-encoder saved at ``path``: a fresh
    :class:`~tinyllm.embeddings.MiniLMEmbedder` (``options`` passed on) with the adapter
    merged, and the head."""
    from tinyllm.embeddings import MiniLMEmbedder

    adapter, rank, alpha = load_adapter(path)
    if HEAD not in adapter:
        raise ValueError(f"load_cross_encoder: {path} has no {HEAD!r}")
    head = adapter.pop(HEAD)
    embedder = MiniLMEmbedder(**options)
    apply_adapter(embedder.model, adapter, rank, alpha)
    return TunedCrossEncoder(embedder, head)


def default_cross_encoder_path() -> Path:
    """Where an adopted tuned cross-encoder would ship,
    ``tinyllm/data/rag_cross_encoder_lora.npz`` (none ships: round 9 adopted none)."""
    return Path(__file__).resolve().parent.parent / "data" / "rag_cross_encoder_lora.npz"
