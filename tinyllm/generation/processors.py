"""Logits processors: functions of (tokens so far, next-token scores) -> new scores.

Each is a callable ``processor(input_ids [B, T] int, scores [B, V] float) -> scores [B, V]``
(NumPy, float64 out), named as Hugging Face's ``LogitsProcessor`` classes and composable in a
``LogitsProcessorList``. Filters set removed tokens to ``-inf``; ``p = softmax(scores)``.

    temperature T              z / T
    top-k                      drop z_i < z_(k) (the k-th largest): ties at the k-th kept
    top-p                      by ascending p, drop the tokens whose cumulative mass <= 1 - top_p
                               (the token that crosses top_p is kept)
    typical (mass m)           H = -sum p log p; rank by |-log p_i - H| ascending; keep the
                               shortest prefix of that ranking whose mass reaches m
    min-p                      drop p_i < min_p * max_j p_j
    epsilon                    drop p_i < epsilon
    eta                        drop p_i < min(eta, sqrt(eta) exp(-H))
    repetition penalty r       for tokens already present: z > 0 -> z / r, z < 0 -> z * r
    frequency / presence       z_i - c_i * frequency - [c_i > 0] * presence (c_i: count of i in
                               the generated tokens; OpenAI's definition)
    no-repeat n-gram n         ban tokens that would complete an n-gram already in the sequence
    bad words                  ban the last token of each listed sequence when its prefix is the
                               sequence's suffix (a one-token entry is always banned)

``min_tokens_to_keep`` (filters) keeps at least that many of the highest-scoring tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _softmax(z: np.ndarray) -> np.ndarray:
    m = np.max(z, axis=-1, keepdims=True)
    e = np.exp(z - np.where(np.isfinite(m), m, 0.0))
    return e / e.sum(axis=-1, keepdims=True)


def _check(name: str, input_ids, scores) -> tuple[np.ndarray, np.ndarray]:
    scores = np.array(scores, dtype=np.float64)
    input_ids = np.asarray(input_ids, dtype=np.int64)
    if scores.ndim != 2:
        raise ValueError(f"{name}: scores must be [B, V], got shape {scores.shape}")
    if input_ids.ndim != 2 or input_ids.shape[0] != scores.shape[0]:
        raise ValueError(
            f"{name}: input_ids must be [B, T] with B = {scores.shape[0]}, got {input_ids.shape}"
        )
    return input_ids, scores


def _keep_top(scores: np.ndarray, remove: np.ndarray, min_keep: int) -> np.ndarray:
    """``remove`` with the ``min_keep`` highest-scoring tokens of each row never removed."""
    if min_keep <= 0:
        return remove
    order = np.argsort(-scores, axis=-1, kind="stable")[:, :min_keep]
    remove = remove.copy()
    np.put_along_axis(remove, order, False, axis=-1)
    return remove


class LogitsProcessor:
    """Base: ``__call__(input_ids [B, T], scores [B, V]) -> scores``."""

    def __call__(self, input_ids, scores) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


class LogitsProcessorList(list):
    """Processors applied in order."""

    def __call__(self, input_ids, scores) -> np.ndarray:
        for processor in self:
            scores = processor(input_ids, scores)
        return np.asarray(scores, dtype=np.float64)


class TemperatureLogitsWarper(LogitsProcessor):
    def __init__(self, temperature: float) -> None:
        if not temperature > 0:
            raise ValueError(
                f"TemperatureLogitsWarper: temperature must be > 0 (use greedy for 0), "
                f"got {temperature}"
            )
        self.temperature = float(temperature)

    def __call__(self, input_ids, scores):
        _, scores = _check("TemperatureLogitsWarper", input_ids, scores)
        return scores / self.temperature


class TopKLogitsWarper(LogitsProcessor):
    def __init__(self, top_k: int, min_tokens_to_keep: int = 1) -> None:
        if not isinstance(top_k, int) or top_k <= 0:
            raise ValueError(f"TopKLogitsWarper: top_k must be a positive int, got {top_k}")
        self.top_k = max(top_k, min_tokens_to_keep)

    def __call__(self, input_ids, scores):
        _, scores = _check("TopKLogitsWarper", input_ids, scores)
        k = min(self.top_k, scores.shape[-1])
        kth = -np.sort(-scores, axis=-1)[:, k - 1 : k]
        return np.where(scores < kth, -np.inf, scores)


class TopPLogitsWarper(LogitsProcessor):
    def __init__(self, top_p: float, min_tokens_to_keep: int = 1) -> None:
        if not 0.0 <= top_p <= 1.0:
            raise ValueError(f"TopPLogitsWarper: top_p must be in [0, 1], got {top_p}")
        self.top_p, self.min_keep = float(top_p), min_tokens_to_keep

    def __call__(self, input_ids, scores):
        _, scores = _check("TopPLogitsWarper", input_ids, scores)
        order = np.argsort(scores, axis=-1, kind="stable")  # ascending
        sorted_scores = np.take_along_axis(scores, order, axis=-1)
        cumulative = np.cumsum(_softmax(sorted_scores), axis=-1)
        remove_sorted = cumulative <= 1.0 - self.top_p
        remove_sorted[:, scores.shape[-1] - self.min_keep :] = False
        remove = np.empty_like(remove_sorted)
        np.put_along_axis(remove, order, remove_sorted, axis=-1)
        return np.where(remove, -np.inf, scores)


class TypicalLogitsWarper(LogitsProcessor):
    def __init__(self, mass: float = 0.9, min_tokens_to_keep: int = 1) -> None:
        if not 0.0 < mass < 1.0:
            raise ValueError(f"TypicalLogitsWarper: mass must be in (0, 1), got {mass}")
        self.mass, self.min_keep = float(mass), min_tokens_to_keep

    def __call__(self, input_ids, scores):
        _, scores = _check("TypicalLogitsWarper", input_ids, scores)
        p = _softmax(scores)
        with np.errstate(divide="ignore", invalid="ignore"):
            logp = np.log(p)
            entropy = -np.nansum(np.where(p > 0, p * logp, 0.0), axis=-1, keepdims=True)
            shifted = np.abs(-logp - entropy)
        order = np.argsort(shifted, axis=-1, kind="stable")
        sorted_shifted = np.take_along_axis(shifted, order, axis=-1)
        cumulative = np.cumsum(np.take_along_axis(p, order, axis=-1), axis=-1)
        last = np.minimum((cumulative < self.mass).sum(axis=-1), scores.shape[-1] - 1)
        remove_sorted = sorted_shifted > np.take_along_axis(sorted_shifted, last[:, None], -1)
        remove_sorted[:, : self.min_keep] = False
        remove = np.empty_like(remove_sorted)
        np.put_along_axis(remove, order, remove_sorted, axis=-1)
        return np.where(remove, -np.inf, scores)


class MinPLogitsWarper(LogitsProcessor):
    def __init__(self, min_p: float, min_tokens_to_keep: int = 1) -> None:
        if not 0.0 <= min_p <= 1.0:
            raise ValueError(f"MinPLogitsWarper: min_p must be in [0, 1], got {min_p}")
        self.min_p, self.min_keep = float(min_p), min_tokens_to_keep

    def __call__(self, input_ids, scores):
        _, scores = _check("MinPLogitsWarper", input_ids, scores)
        p = _softmax(scores)
        remove = p < self.min_p * p.max(axis=-1, keepdims=True)
        return np.where(_keep_top(scores, remove, self.min_keep), -np.inf, scores)


class EpsilonLogitsWarper(LogitsProcessor):
    def __init__(self, epsilon: float, min_tokens_to_keep: int = 1) -> None:
        if not 0.0 < epsilon < 1.0:
            raise ValueError(f"EpsilonLogitsWarper: epsilon must be in (0, 1), got {epsilon}")
        self.epsilon, self.min_keep = float(epsilon), min_tokens_to_keep

    def __call__(self, input_ids, scores):
        _, scores = _check("EpsilonLogitsWarper", input_ids, scores)
        remove = _softmax(scores) < self.epsilon
        return np.where(_keep_top(scores, remove, self.min_keep), -np.inf, scores)


class EtaLogitsWarper(LogitsProcessor):
    def __init__(self, epsilon: float, min_tokens_to_keep: int = 1) -> None:
        if not 0.0 < epsilon < 1.0:
            raise ValueError(f"EtaLogitsWarper: epsilon must be in (0, 1), got {epsilon}")
        self.epsilon, self.min_keep = float(epsilon), min_tokens_to_keep

    def __call__(self, input_ids, scores):
        _, scores = _check("EtaLogitsWarper", input_ids, scores)
        p = _softmax(scores)
        entropy = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)
        eta = np.minimum(self.epsilon, math.sqrt(self.epsilon) * np.exp(-entropy))[:, None]
        remove = p < eta
        return np.where(_keep_top(scores, remove, self.min_keep), -np.inf, scores)


class RepetitionPenaltyLogitsProcessor(LogitsProcessor):
    def __init__(self, penalty: float) -> None:
        if not penalty > 0:
            raise ValueError(
                f"RepetitionPenaltyLogitsProcessor: penalty must be > 0, got {penalty}"
            )
        self.penalty = float(penalty)

    def __call__(self, input_ids, scores):
        input_ids, scores = _check("RepetitionPenaltyLogitsProcessor", input_ids, scores)
        for b in range(scores.shape[0]):
            seen = np.unique(input_ids[b])
            z = scores[b, seen]
            scores[b, seen] = np.where(z < 0, z * self.penalty, z / self.penalty)
        return scores


class FrequencyPresencePenaltyLogitsProcessor(LogitsProcessor):
    """OpenAI's penalties over the tokens after the first ``prompt_length`` (the output)."""

    def __init__(
        self, frequency_penalty: float = 0.0, presence_penalty: float = 0.0, prompt_length: int = 0
    ) -> None:
        for name, value in (
            ("frequency_penalty", frequency_penalty),
            ("presence", presence_penalty),
        ):
            if not -2.0 <= value <= 2.0:
                raise ValueError(f"FrequencyPresencePenaltyLogitsProcessor: {name} must be in "
                                 f"[-2, 2], got {value}")  # fmt: skip
        self.frequency, self.presence = float(frequency_penalty), float(presence_penalty)
        self.prompt_length = int(prompt_length)

    def __call__(self, input_ids, scores):
        input_ids, scores = _check("FrequencyPresencePenaltyLogitsProcessor", input_ids, scores)
        V = scores.shape[-1]
        for b in range(scores.shape[0]):
            counts = np.bincount(input_ids[b, self.prompt_length :], minlength=V)[:V]
            scores[b] -= counts * self.frequency + (counts > 0) * self.presence
        return scores


class NoRepeatNGramLogitsProcessor(LogitsProcessor):
    def __init__(self, ngram_size: int) -> None:
        if not isinstance(ngram_size, int) or ngram_size <= 0:
            raise ValueError(
                f"NoRepeatNGramLogitsProcessor: ngram_size must be a positive int, got {ngram_size}"
            )
        self.n = ngram_size

    def __call__(self, input_ids, scores):
        input_ids, scores = _check("NoRepeatNGramLogitsProcessor", input_ids, scores)
        n, T = self.n, input_ids.shape[1]
        if T + 1 < n:
            return scores
        for b in range(scores.shape[0]):
            row = input_ids[b].tolist()
            prefix = tuple(row[T - n + 1 :]) if n > 1 else ()
            for start in range(T - n + 1):
                if tuple(row[start : start + n - 1]) == prefix:
                    scores[b, row[start + n - 1]] = -np.inf
        return scores


class NoBadWordsLogitsProcessor(LogitsProcessor):
    def __init__(self, bad_words_ids: Sequence[Sequence[int]]) -> None:
        if not bad_words_ids or any(len(w) == 0 for w in bad_words_ids):
            raise ValueError(
                "NoBadWordsLogitsProcessor: bad_words_ids must be a non-empty list of "
                "non-empty token lists"
            )
        self.words = [list(map(int, w)) for w in bad_words_ids]

    def __call__(self, input_ids, scores):
        input_ids, scores = _check("NoBadWordsLogitsProcessor", input_ids, scores)
        for b in range(scores.shape[0]):
            row = input_ids[b].tolist()
            for word in self.words:
                prefix = word[:-1]
                if not prefix or (
                    len(row) >= len(prefix) and row[len(row) - len(prefix) :] == prefix
                ):
                    scores[b, word[-1]] = -np.inf
        return scores


def greedy(scores) -> np.ndarray:
    """argmax per row (the first of tied maxima), int64 [B]."""
    return np.asarray(scores).argmax(axis=-1).astype(np.int64)


def sample_from_uniforms(scores, uniforms) -> np.ndarray:
    """Inverse-CDF sampling: for each row, the first token i with cumsum(p)_i > u * sum(p).

    ``uniforms`` [B] in [0, 1) are injected (``seeded_uniforms``), so the draw is a pure
    function of (scores, u): the same tokens wherever the scores were computed.
    """
    scores = np.asarray(scores, dtype=np.float64)
    u = np.asarray(uniforms, dtype=np.float64).reshape(-1)
    if scores.ndim != 2 or u.shape[0] != scores.shape[0]:
        raise ValueError(
            f"sample_from_uniforms: scores must be [B, V] and uniforms [B], got {scores.shape} "
            f"and {u.shape}"
        )
    cdf = np.cumsum(_softmax(scores), axis=-1)
    idx = (cdf <= u[:, None] * cdf[:, -1:]).sum(axis=-1)
    # never land on a zero-probability token past the end
    return np.minimum(idx, scores.shape[-1] - 1).astype(np.int64)


def seeded_uniforms(seed: int, step: int, n: int = 1) -> np.ndarray:
    """n uniforms in [0, 1) for decoding step ``step`` of a seeded request: a counter-based
    stream (NumPy's Philox keyed by the seed), drawn on the host whatever the device."""
    bit = np.random.Philox(key=int(seed) & (2**64 - 1), counter=int(step))
    return np.random.Generator(bit).random(n)


def build_processors(
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    typical_p: float | None = None,
    epsilon_cutoff: float | None = None,
    eta_cutoff: float | None = None,
    repetition_penalty: float | None = None,
    frequency_penalty: float = 0.0,
    presence_penalty: float = 0.0,
    prompt_length: int = 0,
    no_repeat_ngram_size: int | None = None,
    bad_words_ids: Sequence[Sequence[int]] | None = None,
) -> LogitsProcessorList:
    """The list Hugging Face's ``generate`` builds, in its order: penalties and bans, then
    temperature, then the truncation warpers. ``temperature=0`` leaves the temperature out
    (the caller decodes greedily)."""
    procs = LogitsProcessorList()
    if repetition_penalty is not None and repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(repetition_penalty))
    if frequency_penalty or presence_penalty:
        procs.append(
            FrequencyPresencePenaltyLogitsProcessor(
                frequency_penalty, presence_penalty, prompt_length
            )
        )
    if no_repeat_ngram_size:
        procs.append(NoRepeatNGramLogitsProcessor(no_repeat_ngram_size))
    if bad_words_ids:
        procs.append(NoBadWordsLogitsProcessor(bad_words_ids))
    if temperature not in (0, 1.0):
        procs.append(TemperatureLogitsWarper(temperature))
    if top_k is not None:
        procs.append(TopKLogitsWarper(top_k))
    if top_p is not None and top_p < 1.0:
        procs.append(TopPLogitsWarper(top_p))
    if min_p:
        procs.append(MinPLogitsWarper(min_p))
    if typical_p is not None and typical_p < 1.0:
        procs.append(TypicalLogitsWarper(typical_p))
    if epsilon_cutoff:
        procs.append(EpsilonLogitsWarper(epsilon_cutoff))
    if eta_cutoff:
        procs.append(EtaLogitsWarper(eta_cutoff))
    return procs
