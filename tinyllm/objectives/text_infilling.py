"""BART's text infilling (Lewis et al. 2020, section 2.2): replace spans of text by one <mask>
each, with span lengths drawn from Poisson(lambda = 3), and train a decoder to write the
whole original text.

For L tokens and mask ratio r (BART: 0.3):

    num_to_mask = round(L r)
    lengths     l_1, l_2, ... ~ Poisson(lambda), drawn until their sum reaches num_to_mask;
                the last one is cut so that the sum is exactly num_to_mask
    placement   the k spans in random order, separated by the L - num_to_mask kept tokens
                split into k + 1 gaps (each >= 0) uniformly at random (stars and bars), so
                spans never overlap
    inputs      the kept tokens, with one <mask> where each span was; a span of length 0
                inserts a <mask> (BART: "0-length spans correspond to the insertion of
                <mask> tokens"); the decoder must learn how many tokens each <mask> hides
    targets     the original L tokens

So len(inputs) = L - num_to_mask + k, and the inputs differ in length from one row to the
next (a batch pads them). fairseq draws span starts among word starts and lets spans
overlap; here spans are placed on tokens without overlap, so the masked-token count is exact.
"""

from __future__ import annotations

import numpy as np

__all__ = ["poisson_span_lengths", "text_infill"]


def poisson_span_lengths(
    num_to_mask: int, rng: np.random.Generator, poisson_lambda: float = 3.0
) -> np.ndarray:
    """Span lengths ~ Poisson(lambda), drawn until they cover ``num_to_mask`` tokens; the last
    is cut so that they sum to exactly ``num_to_mask`` (no spans when it is 0)."""
    if poisson_lambda <= 0:
        raise ValueError(f"text_infill: poisson_lambda must be > 0, got {poisson_lambda}")
    lengths: list[int] = []
    total = 0
    while total < num_to_mask:
        draw = rng.poisson(poisson_lambda, size=max(8, num_to_mask))
        for length in draw.tolist():
            lengths.append(min(length, num_to_mask - total))
            total += lengths[-1]
            if total >= num_to_mask:
                break
    return np.asarray(lengths, dtype=np.int64)


def text_infill(
    tokens: np.ndarray,
    rng: np.random.Generator,
    *,
    mask_id: int,
    mask_ratio: float = 0.3,
    poisson_lambda: float = 3.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, span_starts, span_lengths) for one row of ``tokens`` [L] (module docstring).

    ``span_starts[k]`` is the position in ``tokens`` where span k begins (spans in text
    order); the inputs hold one ``mask_id`` per span. The target is ``tokens`` itself."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or tokens.dtype.kind not in "iu":
        raise ValueError(
            f"text_infill: tokens must be integers [L], got {tokens.dtype} {tokens.shape}"
        )
    if not 0.0 <= mask_ratio <= 1.0:
        raise ValueError(f"text_infill: mask_ratio must be in [0, 1], got {mask_ratio}")
    L = len(tokens)
    num_to_mask = int(np.round(L * mask_ratio))
    lengths = poisson_span_lengths(num_to_mask, rng, poisson_lambda)
    lengths = lengths[rng.permutation(len(lengths))]  # spans in text order, shuffled
    k, kept = len(lengths), L - num_to_mask
    # stars and bars: k bars among kept + k slots; gap g_i = kept tokens before span i
    bars = np.sort(rng.choice(kept + k, size=k, replace=False))
    gaps_before = bars - np.arange(k)  # kept tokens before span i (non-decreasing)
    starts = gaps_before + np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    pieces: list[np.ndarray] = []
    pos = 0
    for start, length in zip(starts.tolist(), lengths.tolist()):
        pieces.extend([tokens[pos:start], np.asarray([mask_id])])
        pos = start + length
    pieces.append(tokens[pos:])
    inputs = np.concatenate(pieces).astype(np.int64) if pieces else tokens.astype(np.int64)
    return inputs, starts.astype(np.int64), lengths
