"""A cross-encoder reranker on the MiniLM encoder, with a linear scoring head.

The query q and a passage p are read as one sequence, ``[CLS] q [SEP] p [SEP]`` (token type
0 for q, 1 for p; the passage is cut to fit ``max_length`` tokens), through all-MiniLM-L6-v2
(frozen). The features of a pair are

    x(q, p) = [ h̄(q, p) ; cos(e(q), e(p)) ]      (385 values),

h̄ the unit-length mean of the encoder's last hidden states over the joint sequence and
cos the bi-encoder cosine of the separately embedded query and passage. The score is

    s(q, p) = w · (x − μ) / σ + b,

μ, σ the per-feature mean and standard deviation of the training features. Only the head
(w, b) is trained; the encoder stays frozen so that training takes CPU-minutes.

Training pairs come from the corpus itself, never from the question set: every heading of
the help topics (a topic's title, and each section title underlined with ``=``, ``-``, ``*``
or ``~``) is a query; its candidates are the passages a first stage returns for it; the
passages of the heading's topic are the positives. The loss is the listwise softmax
cross-entropy of each group G with positives P ⊂ G,

    L_G = −log Σ_{i∈P} exp(s_i) + log Σ_{j∈G} exp(s_j),   ∂L_G/∂s_j = π_j − ρ_j,

π = softmax of the scores over G and ρ the softmax over P (0 outside P), plus (λ/2)‖w‖².
The head is saved as a small ``.npz`` (w, b, μ, σ; no pickle).

Measured (``experiments/rag_retrieval.py``, ``experiments/results/rag_questions.md``): on the
natural-language questions this reranker *lowers* MRR of the fused top 20 (held-out 0.750 ->
0.619) and costs seconds per query on CPU. Heading queries are a poor proxy for questions and
the encoder is frozen, so the reranker is opt-in (``tinyllm rag query --rerank``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from tinyllm.rag.context import is_heading


def corpus_headings(topics: Mapping[str, str]) -> list[tuple[str, str]]:
    """``[(heading, topic), ...]``: every underlined title line of every topic, in topic
    order (a title repeated within a topic is kept once)."""
    out = []
    for topic in sorted(topics):
        lines = topics[topic].splitlines()
        seen = set()
        for above, line in zip(lines, lines[1:]):
            title = above.strip()
            if is_heading(above, line) and title not in seen:
                seen.add(title)
                out.append((title.replace('"', ""), topic))
    return out


def listwise_loss(scores: np.ndarray, positive: np.ndarray) -> tuple[float, np.ndarray]:
    """Softmax cross-entropy of one group, −log Σ_P e^s + log Σ_G e^s, and its gradient
    with respect to ``scores`` (π − ρ, see the module docstring)."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    if scores.shape != positive.shape or scores.ndim != 1:
        raise ValueError(
            f"listwise_loss: scores {scores.shape} and positive {positive.shape} must be one "
            "1-D shape"
        )
    if not positive.any():
        raise ValueError("listwise_loss: a group needs at least one positive")
    shift = scores.max()
    e = np.exp(scores - shift)
    pi = e / e.sum()
    ep = np.where(positive, e, 0.0)
    rho = ep / ep.sum()
    loss = float(np.log(e.sum()) - np.log(ep.sum()))
    return loss, pi - rho


class LinearHead:
    """s = w · (x − μ) / σ + b over pair features x (n, F)."""

    def __init__(self, w: np.ndarray, b: float, mean: np.ndarray, std: np.ndarray) -> None:
        self.w = np.asarray(w, dtype=np.float64)
        self.b = float(b)
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        if not self.w.shape == self.mean.shape == self.std.shape or self.w.ndim != 1:
            raise ValueError(
                f"LinearHead: w {self.w.shape}, mean {self.mean.shape}, std {self.std.shape} "
                "must be one 1-D shape"
            )

    def __call__(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.w.shape[0]:
            raise ValueError(f"LinearHead: features must be (n, {self.w.shape[0]}), got {x.shape}")
        return ((x - self.mean) / self.std) @ self.w + self.b

    def save(self, path: str | Path) -> None:
        np.savez(path, w=self.w, b=np.array(self.b), mean=self.mean, std=self.std)

    @classmethod
    def load(cls, path: str | Path) -> LinearHead:
        with np.load(path, allow_pickle=False) as data:
            return cls(data["w"], float(data["b"]), data["mean"], data["std"])


def fit_head(
    groups: Sequence[tuple[np.ndarray, np.ndarray]],
    l2: float = 1e-2,
    steps: int = 400,
    lr: float = 0.1,
) -> LinearHead:
    """Fit a :class:`LinearHead` by full-batch gradient descent on the mean listwise loss of
    ``groups`` ([(features (n_g, F), positive mask (n_g,)), ...]) plus (l2/2)‖w‖²."""
    if not groups:
        raise ValueError("fit_head: no training groups")
    stacked = np.concatenate([f for f, _ in groups])
    mean = stacked.mean(0)
    std = stacked.std(0) + 1e-6
    xs = [(np.asarray(f, np.float64) - mean) / std for f, _ in groups]
    w = np.zeros(stacked.shape[1])
    b = 0.0  # the softmax loss is invariant to b; kept for a calibrated score
    for _ in range(steps):
        grad = l2 * w
        for x, (_, positive) in zip(xs, groups):
            _, g = listwise_loss(x @ w + b, positive)
            grad = grad + x.T @ g / len(groups)
        w -= lr * grad
    return LinearHead(w, b, mean, std)


def head_objective(head: LinearHead, groups, l2: float = 1e-2) -> float:
    """The objective :func:`fit_head` minimises, at ``head``."""
    total = 0.5 * l2 * float(head.w @ head.w)
    for features, positive in groups:
        total += listwise_loss(head(features), positive)[0] / len(groups)
    return total


def joint_embeddings(
    embedder, pairs: Sequence[tuple[str, str]], max_length: int = 128, batch_size: int = 16
) -> np.ndarray:
    """Unit mean-pooled last hidden states [n, C] (float32) of ``[CLS] q [SEP] p [SEP]`` for
    each (q, p) of ``pairs`` (token types 0 and 1, the passage cut to ``max_length``
    tokens), read by ``embedder``'s model and tokenizer in eval mode."""
    from tinyllm.embeddings import embed_batch, padded_batches
    from tinyllm.grad_mode import no_grad
    from tinyllm.nn.module import eval_mode

    model, tokenizer = embedder.model, embedder.tokenizer
    encoded = [
        tokenizer.encode_with_types(q, p, max_length=max_length, truncation="only_second")
        for q, p in pairs
    ]
    out = np.zeros((len(pairs), model.config.hidden_size), dtype=np.float32)
    with eval_mode(model), no_grad():
        for rows, ids, types, mask in padded_batches(encoded, batch_size):
            out[rows] = embed_batch(model, ids, mask, types, normalize=True)
    return out


class MiniLMCrossEncoder:
    """Score (query, passage) pairs: ``encoder(pairs) -> scores`` (see the module docstring).

    ``embedder``: a :class:`~tinyllm.embeddings.MiniLMEmbedder` (its model and tokenizer read
    the joint sequence; its sentence embeddings give the cosine feature). ``head``: a
    :class:`LinearHead`, or None to use only :meth:`features`."""

    def __init__(self, embedder, head: LinearHead | None = None, max_length: int = 128) -> None:
        self.embedder = embedder
        self.head = head
        self.max_length = max_length

    def joint_embeddings(self, pairs: Sequence[tuple[str, str]], batch_size: int = 16):
        """Unit mean-pooled last hidden states of ``[CLS] q [SEP] p [SEP]``, (n, 384)."""
        return joint_embeddings(self.embedder, pairs, self.max_length, batch_size)

    def features(
        self, pairs: Sequence[tuple[str, str]], passage_vectors: np.ndarray | None = None
    ) -> np.ndarray:
        """(n, 385) pair features; ``passage_vectors`` (n, D), when given, are the stored
        unit embeddings of the passages (else they are embedded here)."""
        if not pairs:
            return np.zeros((0, 385))
        joint = self.joint_embeddings(pairs)
        queries = sorted({q for q, _ in pairs})
        q_vec = dict(zip(queries, np.asarray(self.embedder(queries), dtype=np.float64)))
        if passage_vectors is None:
            passage_vectors = self.embedder([p for _, p in pairs])
        p_vec = np.asarray(passage_vectors, dtype=np.float64)
        cos = np.array([q_vec[q] @ v for (q, _), v in zip(pairs, p_vec)])
        return np.concatenate([joint.astype(np.float64), cos[:, None]], axis=1)

    def __call__(
        self, pairs: Sequence[tuple[str, str]], passage_vectors: np.ndarray | None = None
    ) -> np.ndarray:
        if self.head is None:
            raise ValueError("MiniLMCrossEncoder: no head; fit or load one first")
        return self.head(self.features(pairs, passage_vectors))


def default_head_path() -> Path:
    """Where the shipped head lives: ``tinyllm/data/rag_cross_encoder_head.npz``."""
    return Path(__file__).resolve().parent.parent / "data" / "rag_cross_encoder_head.npz"


def rerank_results(store, query: str, k: int, mode: str = "hybrid_score", top: int = 20):
    """``store.search(query, top, mode)`` reordered by the shipped cross-encoder head, cut to
    k: ``[(passage, head score), ...]``. ``store.embedder`` must be a MiniLM embedder."""
    head_path = default_head_path()
    if not head_path.is_file():
        raise FileNotFoundError(
            f"rerank_results: no head at {head_path}; run experiments/rag_retrieval.py"
        )
    encoder = MiniLMCrossEncoder(store.embedder, LinearHead.load(head_path))
    first = store.search(query, max(top, k), mode)
    scores = encoder([(query, passage.text) for passage, _ in first])
    order = np.argsort(-scores, kind="stable")[:k]
    return [(first[i][0], float(scores[i])) for i in order]
