"""Language-model batches: random contiguous windows of a token array.

A batch is ``x = data[s : s + T]`` and ``y = data[s + 1 : s + T + 1]`` for B start offsets s
drawn uniformly from ``[0, len(data) - T - 1]`` by a seeded generator, so the same seed
gives the same batches (and a resumed run continues the same stream).
"""

from __future__ import annotations

import numpy as np


def random_windows(
    data: np.ndarray, batch_size: int, seq_len: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets), both int64 [batch_size, seq_len]; targets are inputs shifted by one."""
    if data.ndim != 1:
        raise ValueError(f"random_windows: data must be 1-D tokens, got shape {data.shape}")
    if len(data) < seq_len + 2:
        raise ValueError(
            f"random_windows: data has {len(data)} tokens, fewer than seq_len + 2 = {seq_len + 2}"
        )
    starts = rng.integers(0, len(data) - seq_len - 1, size=batch_size)
    offsets = np.arange(seq_len + 1)
    windows = data[starts[:, None] + offsets[None, :]].astype(np.int64)  # [B, T + 1]
    return windows[:, :-1], windows[:, 1:]


def sequential_windows(
    data: np.ndarray, batch_size: int, seq_len: int, max_batches: int | None = None
):
    """Non-overlapping windows covering ``data`` in order (for evaluation); yields (x, y)."""
    n = (len(data) - 1) // seq_len
    starts = np.arange(n) * seq_len
    offsets = np.arange(seq_len + 1)
    for k, i in enumerate(range(0, n, batch_size)):
        if max_batches is not None and k >= max_batches:
            return
        s = starts[i : i + batch_size]
        windows = data[s[:, None] + offsets[None, :]].astype(np.int64)
        yield windows[:, :-1], windows[:, 1:]
