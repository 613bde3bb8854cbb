"""PrefixLM (Raffel et al. 2020, section 3.2.1; UniLM): a decoder-only model whose attention is
bidirectional over a prefix and causal after it, trained on the continuation only.

For a window of T + 1 tokens w, inputs x = w[:T], targets y = w[1:] (y_t = w_{t+1}), and a
prefix of P tokens (1 <= P <= T), query position i may attend to key position j iff

    j < P          (every position sees the whole prefix)
    or j <= i      (and, causally, what came before it)

so the prefix block is full and the rest is lower-triangular. Position t predicts w_{t+1};
it counts in the loss iff t >= P - 1, i.e. iff the token it predicts is not in the prefix.
No position sees the token it predicts: position t sees keys j < P (which holds w_{t+1}
only when t + 1 < P, a position outside the loss) and keys j <= t.

The mask is a boolean [B, 1, T, T] (True = attend), given to a non-causal model as
``attn_mask`` and so to ``F.scaled_dot_product_attention`` like any boolean mask.
"""

from __future__ import annotations

import numpy as np

from tinyllm.objectives.masked_lm import IGNORE_INDEX

__all__ = ["prefix_lm_labels", "prefix_lm_mask", "sample_prefix_lengths"]


def _lengths(prefix_lengths, T: int) -> np.ndarray:
    p = np.asarray(prefix_lengths)
    if p.ndim != 1 or p.dtype.kind not in "iu":
        raise ValueError(f"prefix_lm: prefix_lengths must be integers [B], got {p.dtype} {p.shape}")
    if p.size and (p.min() < 0 or p.max() > T):
        raise ValueError(f"prefix_lm: prefix lengths must lie in [0, T={T}], got {p.tolist()}")
    return p.astype(np.int64)


def prefix_lm_mask(prefix_lengths, T: int) -> np.ndarray:
    """Bool [B, 1, T, T]: entry [b, 0, i, j] is True iff j < prefix_lengths[b] or j <= i."""
    p = _lengths(prefix_lengths, T)
    i = np.arange(T)[:, None]
    j = np.arange(T)[None, :]
    allowed = (j[None] < p[:, None, None]) | (j <= i)[None]  # [B, T, T]
    return allowed[:, None]


def prefix_lm_labels(targets: np.ndarray, prefix_lengths, ignore_index: int = IGNORE_INDEX):
    """``targets`` [B, T] with positions t < P - 1 (predicting prefix tokens) set to
    ``ignore_index``: the loss covers the continuation only."""
    targets = np.asarray(targets)
    if targets.ndim != 2:
        raise ValueError(f"prefix_lm_labels: targets must be [B, T], got {targets.shape}")
    p = _lengths(prefix_lengths, targets.shape[1])
    if len(p) != targets.shape[0]:
        raise ValueError(
            f"prefix_lm_labels: {len(p)} prefix lengths for {targets.shape[0]} rows of targets"
        )
    t = np.arange(targets.shape[1])[None, :]
    return np.where(t >= p[:, None] - 1, targets, ignore_index).astype(np.int64)


def sample_prefix_lengths(rng: np.random.Generator, batch: int, T: int) -> np.ndarray:
    """Prefix lengths uniform on {1, ..., T} (T5's random split point; at least one target)."""
    if T < 1:
        raise ValueError(f"sample_prefix_lengths: T must be >= 1, got {T}")
    return rng.integers(1, T + 1, size=batch)
