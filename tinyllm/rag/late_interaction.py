"""Late interaction: ColBERT's MaxSim score from a sentence encoder's token states.

A passage p is kept as the unit vectors p_1 ... p_n of the final hidden states of its
*content* tokens (WordPiece pieces that are letters or digits and not a stop word of
:data:`tinyllm.rag.text.STOPWORDS`; [CLS], [SEP] and punctuation are dropped; a text with no
content token keeps its other tokens). A query q, encoded the same way to q_1 ... q_m, scores

    MaxSim(q, p) = (1 / m) Σ_i max_j <q_i, p_j>

(Khattab & Zaharia, 2020): every query token is matched to its best counterpart in the
passage, so a rare identifier of the question ("setdefault", "nonlocal") counts on its own
instead of being averaged into one sentence vector. The encoder is used as trained, for mean
pooling (all-MiniLM-L6-v2), not fine-tuned for this score; the retrieval experiment uses it
as one term of the learned topic score (:mod:`tinyllm.rag.topic_scoring`; README, round 7),
where five of the six fitted rows with it gained clearly over both cross-validation splits
and none without it.

Storage: one float16 row per content token (the 837 passages of the default corpus: 39,369
rows, 30 MB at D = 384), with ``offsets`` marking each passage's rows; scoring a query
is one [m, D] x [D, N] product and a segmented max (``np.maximum.reduceat``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tinyllm.io.atomic import atomic_write
from tinyllm.rag.text import STOPWORDS


def is_content_piece(piece: str) -> bool:
    """True for a WordPiece piece that is letters/digits (a leading ``##`` aside) and not a
    stop word: the tokens MaxSim matches."""
    word = piece[2:] if piece.startswith("##") else piece
    return word.isalnum() and word.lower() not in STOPWORDS


def content_rows(token_states: np.ndarray, input_ids, tokenizer) -> np.ndarray:
    """The unit rows [n, D] float32 of the content tokens of one text, from its final hidden
    states [T, D] and ``input_ids`` [T] ([CLS] first, [SEP] last, both dropped)."""
    token_states = np.asarray(token_states, dtype=np.float32)
    if token_states.ndim != 2 or len(token_states) != len(input_ids):
        raise ValueError(
            f"content_rows: {len(input_ids)} token ids for hidden states {token_states.shape}"
        )
    inner, ids = token_states[1:-1], list(input_ids)[1:-1]
    keep = np.array([is_content_piece(tokenizer.id_to_token(int(i))) for i in ids], dtype=bool)
    if keep.any():
        rows = inner[keep]
    else:  # no content token: every token ([CLS] and [SEP] too for an empty text)
        rows = inner if len(inner) else token_states
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def encode_with_tokens(embedder, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per text, (its unit sentence embedding [D], its :func:`content_rows` [n, D]) from one
    forward pass: ``embedder`` needs ``encode(texts, output_value=None,
    normalize_embeddings=True)`` (dicts with ``sentence_embedding``, ``token_embeddings`` and
    ``input_ids``, as sentence-transformers and :class:`tinyllm.embeddings.MiniLMEmbedder`
    give) and ``tokenizer``."""
    if isinstance(texts, str):
        raise TypeError("encode_with_tokens: pass a list of texts, not one str")
    for name in ("encode", "tokenizer"):
        if not hasattr(embedder, name):
            raise TypeError(
                f"encode_with_tokens: the embedder {type(embedder).__name__} has no {name!r}; "
                "late interaction needs a token-level encoder such as MiniLMEmbedder"
            )
    texts = list(texts)
    if not texts:
        return []
    outputs = embedder.encode(texts, output_value=None, normalize_embeddings=True)
    return [
        (
            np.asarray(o["sentence_embedding"], dtype=np.float32),
            content_rows(o["token_embeddings"], o["input_ids"], embedder.tokenizer),
        )
        for o in outputs
    ]


class TokenIndex:
    """The content-token vectors of a list of passages, scored against a query by MaxSim.

    ``vectors``: [N, D] (stored as float16, scored in float32); ``offsets``: [P + 1] with
    passage i's rows ``vectors[offsets[i]:offsets[i + 1]]`` (each passage has at least one)."""

    def __init__(self, vectors: np.ndarray, offsets: np.ndarray) -> None:
        vectors = np.asarray(vectors)
        offsets = np.asarray(offsets, dtype=np.int64)
        if vectors.ndim != 2 or offsets.ndim != 1 or len(offsets) < 2:
            raise ValueError(
                f"TokenIndex: vectors must be [N, D] and offsets [P + 1], got {vectors.shape} "
                f"and {offsets.shape}"
            )
        if offsets[0] != 0 or offsets[-1] != len(vectors) or np.any(np.diff(offsets) < 1):
            raise ValueError(
                "TokenIndex: offsets must start at 0, end at len(vectors) and give every passage "
                "at least one row"
            )
        self.offsets = offsets
        # the one copy kept: the float16 values, in float32 and transposed, [D, N] contiguous
        # (the product reads it row by row: about 35 % faster than multiplying by the
        # transpose of [N, D] here)
        self._scoring = np.ascontiguousarray(vectors.astype(np.float16).astype(np.float32).T)

    @classmethod
    def build(cls, embedder, texts: Sequence[str]) -> TokenIndex:
        """Encode ``texts`` (the passages) with :func:`encode_with_tokens`."""
        states = [rows for _, rows in encode_with_tokens(embedder, texts)]
        if not states:
            raise ValueError("TokenIndex.build: no texts")
        offsets = np.cumsum([0] + [len(s) for s in states])
        return cls(np.concatenate(states), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def vectors(self) -> np.ndarray:
        """The token rows [N, D] float16 (as saved)."""
        return self._scoring.T.astype(np.float16, order="C")

    @property
    def rows(self) -> int:
        return int(self.offsets[-1])

    @property
    def dim(self) -> int:
        return self._scoring.shape[0]

    def scores(self, query_states: np.ndarray) -> np.ndarray:
        """MaxSim of the query's unit token rows [m, D] against every passage: [P] float32."""
        query_states = np.asarray(query_states, dtype=np.float32)
        if query_states.ndim != 2 or query_states.shape[1] != self.dim or not len(query_states):
            raise ValueError(
                f"TokenIndex.scores: query_states must be [m >= 1, {self.dim}], got "
                f"{query_states.shape}"
            )
        sims = query_states @ self._scoring  # [m, N]
        best = np.maximum.reduceat(sims, self.offsets[:-1], axis=1)  # [m, P]
        return best.mean(axis=0)

    def save(self, path: str | Path) -> None:
        """Write ``vectors`` (float16) and ``offsets`` as one .npz, atomically."""
        with atomic_write(path, "wb") as handle:
            np.savez(handle, vectors=self.vectors, offsets=self.offsets)

    @classmethod
    def load(cls, path: str | Path) -> TokenIndex:
        with np.load(path, allow_pickle=False) as data:
            return cls(data["vectors"], data["offsets"])
