"""T5's span corruption (Raffel et al. 2020, section 3.3.4): drop random spans, name each drop
by a sentinel, and train an encoder-decoder to write the dropped spans.

For L raw tokens, noise density d and mean noise span length m:

    num_noise  = round(L d)            clipped to [1, L - 1]
    num_spans  = round(num_noise / m)  at least 1 (and at most num_noise, L - num_noise)
    inputs  = nonnoise_0 <X0> nonnoise_1 <X1> ... nonnoise_{n-1} <X(n-1)> </s>
    targets = <X0> noise_0 <X1> noise_1 ... <X(n-1)> noise_{n-1} </s>

    len(inputs)  = (L - num_noise) + num_spans + 1
    len(targets) = num_noise + num_spans + 1

The noise tokens are split into num_spans spans and the others into num_spans runs, each of
length >= 1, uniformly at random among such splits (T5's ``_random_segmentation``: n - 1
distinct cut points among the n - 1 gaps), and interleaved starting with a non-noise run,
so the text always starts with kept tokens and ends with a dropped span. ``round`` is
round-half-to-even, as T5's ``tf.round`` and ``np.round``.

``random_spans_helper(inputs_length)`` inverts the arithmetic: the largest raw length whose
inputs fit in ``inputs_length``, and the targets' length then. With T5's settings
(d = 0.15, m = 3): 568 raw tokens -> 512 inputs and 114 targets (85 noise tokens in 28
spans: 483 + 28 + 1 = 512, 85 + 28 + 1 = 114).

``reconstruct(inputs, targets)`` undoes it exactly: each sentinel of the inputs is replaced by
the tokens that follow the same sentinel in the targets.
"""

from __future__ import annotations

import numpy as np

from tinyllm.objectives.vocab import SpecialTokens

__all__ = [
    "noise_span_counts", "random_spans_helper", "random_spans_noise_mask", "reconstruct",
    "span_corrupt",
]  # fmt: skip


def _check(noise_density: float, mean_noise_span_length: float) -> None:
    if not 0.0 < noise_density < 1.0:
        raise ValueError(f"span corruption: noise_density must be in (0, 1), got {noise_density}")
    if mean_noise_span_length < 1.0:
        raise ValueError(
            f"span corruption: mean_noise_span_length must be >= 1, got {mean_noise_span_length}"
        )


def noise_span_counts(
    length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> tuple[int, int]:
    """(num_noise_tokens, num_noise_spans) for ``length`` raw tokens (module docstring)."""
    _check(noise_density, mean_noise_span_length)
    if length < 2:
        raise ValueError(f"span corruption: need at least 2 tokens, got length {length}")
    num_noise = int(np.round(length * noise_density))
    num_noise = min(max(num_noise, 1), length - 1)
    num_spans = int(np.round(num_noise / mean_noise_span_length))
    num_spans = max(1, min(num_spans, num_noise, length - num_noise))
    return num_noise, num_spans


def _segment_lengths(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Lengths (each >= 1, sum num_items) of a uniformly random split into num_segments runs."""
    cuts = np.sort(rng.choice(np.arange(1, num_items), size=num_segments - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [num_items]]))


def random_spans_noise_mask(
    length: int,
    rng: np.random.Generator,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
) -> np.ndarray:
    """Bool [length]: True on the tokens to drop (module docstring)."""
    num_noise, num_spans = noise_span_counts(length, noise_density, mean_noise_span_length)
    noise_lengths = _segment_lengths(num_noise, num_spans, rng)
    keep_lengths = _segment_lengths(length - num_noise, num_spans, rng)
    runs = np.stack([keep_lengths, noise_lengths], axis=1).ravel()  # keep, noise, keep, ...
    is_noise = np.tile([False, True], num_spans)
    return np.repeat(is_noise, runs)


def random_spans_helper(
    inputs_length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> tuple[int, int]:
    """(raw tokens_length, targets_length): the longest raw text whose corrupted inputs (one
    sentinel per span, one </s>) fit in ``inputs_length`` tokens, and its targets' length."""

    def lengths(n: int) -> tuple[int, int]:
        num_noise, num_spans = noise_span_counts(n, noise_density, mean_noise_span_length)
        return n - num_noise + num_spans + 1, num_noise + num_spans + 1

    if inputs_length < 3:
        raise ValueError(f"random_spans_helper: inputs_length must be >= 3, got {inputs_length}")
    n = max(inputs_length - 1, 2)
    while lengths(n + 1)[0] <= inputs_length:
        n += 1
    return n, lengths(n)[1]


def _corrupt_row(tokens: np.ndarray, noise: np.ndarray, specials: SpecialTokens):
    prev = np.concatenate([[False], noise[:-1]])
    starts = noise & ~prev  # first token of each noise span
    span = np.cumsum(starts) - 1  # span index of each noise token
    n_spans = int(starts.sum())
    if n_spans > specials.num_sentinels:
        raise ValueError(
            f"span_corrupt: {n_spans} noise spans but only {specials.num_sentinels} sentinels"
        )
    sentinels = specials.base + 3 + span  # <extra_id_k> where span == k
    inputs = np.where(starts, sentinels, tokens)[~noise | starts]
    # targets: <X_k> before noise span k, then its tokens
    positions = np.flatnonzero(noise)
    out = np.empty(len(positions) + n_spans, dtype=np.int64)
    where_sentinel = np.flatnonzero(starts[positions]) + np.arange(n_spans)
    is_sentinel = np.zeros(len(out), dtype=bool)
    is_sentinel[where_sentinel] = True
    out[is_sentinel] = specials.base + 3 + np.arange(n_spans)
    out[~is_sentinel] = tokens[positions]
    eos = [specials.eos]
    return np.concatenate([inputs, eos]), np.concatenate([out, eos])


def span_corrupt(
    tokens: np.ndarray,
    rng: np.random.Generator,
    specials: SpecialTokens,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
    noise_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets), int64, for raw ``tokens`` [L] or [B, L] (module docstring).

    Every row gets its own random mask; the counts depend on L only, so all rows have the
    same input and target lengths. ``noise_mask`` (bool, tokens' shape) replaces the random
    masks (a mask that starts with noise works too: spans are numbered left to right)."""
    tokens = np.asarray(tokens)
    if tokens.dtype.kind not in "iu" or tokens.ndim not in (1, 2):
        raise ValueError(
            f"span_corrupt: tokens must be integers [L] or [B, L], got {tokens.dtype} "
            f"{tokens.shape}"
        )
    if np.any(specials.is_special(tokens)):
        raise ValueError("span_corrupt: tokens must be data tokens (ids below specials.base)")
    rows = tokens[None] if tokens.ndim == 1 else tokens
    if noise_mask is None:
        masks = [
            random_spans_noise_mask(rows.shape[1], rng, noise_density, mean_noise_span_length)
            for _ in range(rows.shape[0])
        ]
    else:
        masks = np.asarray(noise_mask, dtype=bool).reshape(rows.shape)
    pairs = [_corrupt_row(row, mask, specials) for row, mask in zip(rows, masks)]
    if len({(len(a), len(b)) for a, b in pairs}) > 1:
        raise ValueError("span_corrupt: the given noise masks give rows of different lengths")
    inputs = np.stack([a for a, _ in pairs])
    targets = np.stack([b for _, b in pairs])
    return (inputs[0], targets[0]) if tokens.ndim == 1 else (inputs, targets)


def reconstruct(inputs: np.ndarray, targets: np.ndarray, specials: SpecialTokens) -> np.ndarray:
    """The raw tokens [L] that ``span_corrupt`` turned into this (inputs, targets) row."""
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    spans: dict[int, list[int]] = {}
    current = None
    for t in targets.tolist():
        if t == specials.eos:
            break
        if specials.is_sentinel(t):
            current = spans.setdefault(t, [])
        elif current is None:
            raise ValueError("reconstruct: targets must start with a sentinel")
        else:
            current.append(t)
    out: list[int] = []
    for t in inputs.tolist():
        if t == specials.eos:
            break
        if specials.is_sentinel(t):
            if t not in spans:
                raise ValueError(f"reconstruct: sentinel {t} of the inputs is not in the targets")
            out.extend(spans[t])
        else:
            out.append(t)
    return np.asarray(out, dtype=np.int64)
