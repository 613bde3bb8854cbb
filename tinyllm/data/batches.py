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
    data: np.ndarray,
    batch_size: int,
    seq_len: int,
    max_batches: int | None = None,
    drop_last: bool = True,
):
    """Non-overlapping windows covering ``data`` in order (for evaluation); yields (x, y).

    Window k is ``x = data[k T : (k + 1) T]``, ``y = data[k T + 1 : (k + 1) T + 1]``, with
    ``n = (len(data) - 1) // T`` full windows, ``batch_size`` per batch. The ``r = (len(data)
    - 1) - n T`` targets after the last full window are dropped (``drop_last=True``) or yielded
    as a final [1, r] batch (``drop_last=False``), so that every token after the first is a
    target exactly once. ``max_batches`` stops after that many batches.
    """
    if data.ndim != 1:
        raise ValueError(f"sequential_windows: data must be 1-D tokens, got shape {data.shape}")
    if batch_size <= 0 or seq_len <= 0:
        raise ValueError(
            f"sequential_windows: batch_size and seq_len must be positive, "
            f"got {batch_size} and {seq_len}"
        )
    n = (len(data) - 1) // seq_len
    starts = np.arange(n) * seq_len
    offsets = np.arange(seq_len + 1)
    k = 0
    for i in range(0, n, batch_size):
        if max_batches is not None and k >= max_batches:
            return
        s = starts[i : i + batch_size]
        windows = data[s[:, None] + offsets[None, :]].astype(np.int64)
        yield windows[:, :-1], windows[:, 1:]
        k += 1
    tail = data[n * seq_len :].astype(np.int64)  # r + 1 tokens
    if not drop_last and len(tail) > 1 and (max_batches is None or k < max_batches):
        yield tail[None, :-1], tail[None, 1:]
