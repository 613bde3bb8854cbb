"""The RLHF data pipeline: prompts -> sampled completions -> padded batches -> log-probs.

Layout of a batch (TRL's convention): prompts are **left**-padded and completions
**right**-padded, so every prompt ends at the same column and every completion starts at the
next one:

    input_ids       [B, L]   pad pad p p p | c c c pad        (L = P + C)
    attention_mask  [B, L]   0   0   1 1 1 | 1 1 1 0
    response_mask   [B, L]   0   0   0 0 0 | 1 1 1 0

A causal LM's logits at column t predict the token at t + 1, so the per-token log-probs of
the response come from ``logits[:, :-1]`` against ``labels = input_ids[:, 1:]`` under
``mask = response_mask[:, 1:]``:

    log pi(y_t | x, y_<t) = log_softmax(logits_{t-1})[y_t]
    log pi(y | x)          = sum_t mask_t log pi(y_t | ...)

Padding is invisible to the real tokens: ``lm_forward`` masks padded keys out of attention
(each pad position attends only to itself, so no row of the softmax is empty) and gives each
sequence its own positions (learned positions for GPT start at the first real token; RoPE is
relative, so a constant shift of a Llama sequence changes nothing). The tests check that
padded and unpadded sequences get the same log-probs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

import tinyllm
import tinyllm.functional as F
from tinyllm.alignment.ops import as_tensor
from tinyllm.tensor import Tensor

__all__ = [
    "PAD_ID",
    "CompletionBatch",
    "build_batch",
    "generate_completions",
    "lm_forward",
    "pad_sequences",
    "policy_logprobs",
    "sequence_logprobs",
    "truncate_at_stop",
]

PAD_ID = 0  # any id inside the vocabulary: padded positions are masked, never read


def pad_sequences(
    seqs: Sequence[Sequence[int]], pad_id: int = PAD_ID, side: str = "right"
) -> tuple[np.ndarray, np.ndarray]:
    """(ids [B, Lmax] int64, mask [B, Lmax] int64) with padding on ``side`` ("left"/"right")."""
    if side not in ("left", "right"):
        raise ValueError(f"pad_sequences: side must be 'left' or 'right', got {side!r}")
    B = len(seqs)
    L = max((len(s) for s in seqs), default=0)
    ids = np.full((B, L), pad_id, dtype=np.int64)
    mask = np.zeros((B, L), dtype=np.int64)
    for i, s in enumerate(seqs):
        n = len(s)
        if n == 0:
            continue
        cols = slice(L - n, L) if side == "left" else slice(0, n)
        ids[i, cols] = np.asarray(s, dtype=np.int64)
        mask[i, cols] = 1
    return ids, mask


@dataclass
class CompletionBatch:
    """Prompts (left-padded) followed by completions (right-padded); see the module doc."""

    input_ids: np.ndarray  # [B, L] int64
    attention_mask: np.ndarray  # [B, L] int64
    response_mask: np.ndarray  # [B, L] int64
    prompt_length: int  # P: the column where completions start

    @property
    def labels(self) -> np.ndarray:
        return self.input_ids[:, 1:]

    @property
    def label_mask(self) -> np.ndarray:
        """[B, L-1]: 1 where the label (the next token) is a response token."""
        return self.response_mask[:, 1:]

    @property
    def response_lengths(self) -> np.ndarray:
        return self.response_mask.sum(axis=1)

    def response_slice(self, per_label: np.ndarray) -> np.ndarray:
        """Columns of a [B, L-1] per-label array that belong to responses: [B, C]."""
        return per_label[:, self.prompt_length - 1 :]

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def build_batch(
    prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int = PAD_ID
) -> CompletionBatch:
    """Left-pad the prompts, right-pad the completions, concatenate."""
    if len(prompts) != len(completions):
        raise ValueError(f"build_batch: {len(prompts)} prompts but {len(completions)} completions")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("build_batch: every prompt needs at least one token")
    p_ids, p_mask = pad_sequences(prompts, pad_id, "left")
    c_ids, c_mask = pad_sequences(completions, pad_id, "right")
    if c_ids.shape[1] == 0:
        c_ids = np.zeros((len(prompts), 0), np.int64)
        c_mask = np.zeros((len(prompts), 0), np.int64)
    input_ids = np.concatenate([p_ids, c_ids], axis=1)
    attention_mask = np.concatenate([p_mask, c_mask], axis=1)
    response_mask = np.concatenate([np.zeros_like(p_mask), c_mask], axis=1)
    return CompletionBatch(input_ids, attention_mask, response_mask, p_ids.shape[1])


def _padding_mask(attention_mask: np.ndarray) -> np.ndarray:
    """Bool [B, 1, T, T]: causal, keys that are real tokens, and every position to itself."""
    T = attention_mask.shape[1]
    causal = np.tril(np.ones((T, T), dtype=bool))
    real = attention_mask.astype(bool)[:, None, None, :]  # [B, 1, 1, T]
    return (causal[None, None] & real) | np.eye(T, dtype=bool)[None, None]


def lm_forward(model, input_ids, attention_mask=None, return_hidden: bool = False):
    """Logits [B, T, V] (and the final hidden states [B, T, C]) of a GPT or Llama.

    Without padding (``attention_mask`` None or all ones) this is ``model(idx)``'s computation;
    with padding, padded keys are masked and positions count real tokens only.
    """
    ids = input_ids if isinstance(input_ids, Tensor) else tinyllm.tensor(np.asarray(input_ids))
    am = None if attention_mask is None else np.asarray(attention_mask)
    padded = am is not None and not am.all()
    mask = tinyllm.tensor(_padding_mask(am)) if padded else None
    if model.config.arch == "llama":
        x = model.model["embed_tokens"](ids)
        for block in model.blocks:
            x = block(x, attn_mask=mask)
        hidden = model.model["norm"](x)
    else:
        B, T = ids.shape
        if padded:
            positions = np.clip(np.cumsum(am, axis=1) - 1, 0, None)  # [B, T]
        else:
            positions = np.arange(T)
        x = model.transformer["wte"](ids) + model.transformer["wpe"](tinyllm.tensor(positions))
        x = model.transformer["drop"](x)
        for block in model.blocks:
            x = block(x, attn_mask=mask)
        hidden = model.transformer["ln_f"](x)
    logits = model.lm_head(hidden)
    return (logits, hidden) if return_hidden else logits


def sequence_logprobs(logits: Tensor, labels, mask, reduction: str = "none") -> Tensor:
    """Log-probabilities of ``labels`` under ``logits``, kept where ``mask`` is 1.

    logits [B, T, V]; labels [B, T] (int: the token each position predicts, already shifted);
    mask [B, T] (1 on response tokens). ``reduction``: "none" -> per-token [B, T] (0 where
    masked), "sum" -> log pi(y|x) [B], "mean" -> per-token average over the mask [B].
    """
    if logits.ndim != 3:
        raise ValueError(f"sequence_logprobs: logits must be [B, T, V], got {tuple(logits.shape)}")
    lab = np.asarray(labels.data if isinstance(labels, Tensor) else labels, dtype=np.int64)
    m = np.asarray(mask.data if isinstance(mask, Tensor) else mask, dtype=np.float64)
    if lab.shape != tuple(logits.shape[:2]) or m.shape != lab.shape:
        raise ValueError(
            f"sequence_logprobs: labels {lab.shape} and mask {m.shape} must be logits' "
            f"[B, T] = {tuple(logits.shape[:2])}"
        )
    V = logits.shape[-1]
    if lab.size and (lab.min() < 0 or lab.max() >= V):
        raise ValueError(
            f"sequence_logprobs: labels must be in [0, {V}), got {lab.min()}..{lab.max()}"
        )
    logp = F.gather(F.log_softmax(logits, dim=-1), -1, as_tensor(lab[..., None])).squeeze(-1)
    per_token = logp * as_tensor(m, like=logp)
    if reduction == "none":
        return per_token
    if reduction == "sum":
        return per_token.sum(dim=-1)
    if reduction == "mean":
        return per_token.sum(dim=-1) / as_tensor(np.maximum(m.sum(axis=-1), 1.0), like=logp)
    raise ValueError(f"sequence_logprobs: reduction must be none, sum or mean, got {reduction!r}")


def policy_logprobs(model, batch: CompletionBatch, temperature: float = 1.0, with_hidden=False):
    """Per-label log-probs [B, L-1] of the batch's responses (and hidden states [B, L-1, C]).

    ``temperature`` divides the logits, so the log-probs match a sampler that used it.
    """
    logits, hidden = lm_forward(
        model, batch.input_ids[:, :-1], batch.attention_mask[:, :-1], return_hidden=True
    )
    if temperature != 1.0:
        logits = logits / temperature
    logp = sequence_logprobs(logits, batch.labels, batch.label_mask)
    return (logp, hidden, logits) if with_hidden else logp


def truncate_at_stop(
    ids: Sequence[int], stop: Callable[[list[int]], int | None] | None
) -> list[int]:
    """``ids`` cut after the end position ``stop(ids)`` returns (None: keep everything)."""
    ids = list(ids)
    if stop is None:
        return ids
    end = stop(ids)
    return ids if end is None else ids[:end]


def generate_completions(
    model,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    rng: np.random.Generator,
    temperature: float = 1.0,
    top_k: int | None = None,
    stop: Callable[[list[int]], int | None] | None = None,
) -> list[list[int]]:
    """Sample one completion per prompt with the model's KV-cache ``generate``.

    Prompts of equal length are sampled together in one batch (so no prompt ever sees
    padding); each completion is cut after its stop position (``stop(ids)`` returns the
    length to keep, or None).
    """
    out: list[list[int] | None] = [None] * len(prompts)
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_length.setdefault(len(p), []).append(i)
    for length, rows in by_length.items():
        idx = tinyllm.tensor(np.asarray([prompts[i] for i in rows], dtype=np.int64))
        tokens = model.generate(
            idx, max_new_tokens, temperature=temperature, top_k=top_k, generator=rng
        )
        new = np.asarray(tokens.data)[:, length:]
        for row, i in enumerate(rows):
            out[i] = truncate_at_stop(new[row].tolist(), stop)
    return out  # type: ignore[return-value]
