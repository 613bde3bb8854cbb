"""Registry entries for the mixture-of-experts ops: dispatch, combine and the router losses.

Samples route random tokens to random experts (several slots per token, tokens that no row
points to, dropped slots marked -1); the integer routing is an input, so the gradcheck
perturbs floats only and never crosses a routing decision (no ties to avoid). The NumPy
references are explicit loops over rows and experts, written apart from the vectorized ops.
"""

from __future__ import annotations

import numpy as np

from tinyllm.functional.moe import (
    moe_combine,
    moe_dispatch,
    router_z_loss,
    switch_load_balancing_loss,
)
from tinyllm.registry import OpInfo, SampleInput, register
from tinyllm.registry.samples import positive, randn


def _routing(rng, N: int, E: int, k: int, drop: float = 0.0) -> np.ndarray:
    """expert_index [N, k]: k distinct experts per token, a fraction ``drop`` set to -1."""
    idx = np.stack([rng.permutation(E)[:k] for _ in range(N)])
    idx[rng.random(idx.shape) < drop] = -1
    return idx.astype(np.int64)


def _token_index(rng, N: int, E: int, k: int, drop: float = 0.0) -> np.ndarray:
    """The token of each expert-sorted row (by a loop, not expert_permutation)."""
    idx = _routing(rng, N, E, k, drop)
    return np.array([n for e in range(E) for n in range(N) for j in range(k) if idx[n, j] == e],
                    dtype=np.int64)  # fmt: skip


# ---------------------------------------------------------------- moe_dispatch
def _dispatch_samples(rng, dtype):
    return [
        SampleInput((randn(rng, dtype, 5, 3), _token_index(rng, 5, 4, 2)), name="top-2 of 4"),
        SampleInput((randn(rng, dtype, 6, 2), _token_index(rng, 6, 3, 1, 0.3)), name="dropped"),
        SampleInput((randn(rng, dtype, 4, 3), np.array([3, 3, 0, 3])), name="repeats, unused"),
        SampleInput((randn(rng, dtype, 1, 1), np.array([0])), name="size 1"),
    ]


def _dispatch_ref(x, token_index):
    out = np.zeros((len(token_index), x.shape[1]))
    for m, n in enumerate(token_index):
        out[m] = x[n]
    return out


register(OpInfo("moe_dispatch", moe_dispatch, _dispatch_samples, _dispatch_ref, family="moe"))


# ---------------------------------------------------------------- moe_combine
def _combine_args(rng, dtype, N, E, k, C, drop=0.0):
    ti = _token_index(rng, N, E, k, drop)
    return (randn(rng, dtype, len(ti), C), positive(rng, dtype, len(ti)) / 2, ti, N)


def _combine_samples(rng, dtype):
    return [
        SampleInput(_combine_args(rng, dtype, 5, 4, 2, 3), name="top-2 of 4"),
        SampleInput(_combine_args(rng, dtype, 6, 3, 2, 2, 0.4), name="dropped"),
        SampleInput(
            (randn(rng, dtype, 3, 2), randn(rng, dtype, 3), np.array([2, 0, 2]), 4),
            name="negative weights, unused tokens",
        ),
        SampleInput((randn(rng, dtype, 1, 1), positive(rng, dtype, 1), np.array([0]), 1), name="1"),
    ]


def _combine_ref(y, weights, token_index, num_tokens):
    out = np.zeros((num_tokens, y.shape[1]))
    for m, n in enumerate(token_index):
        out[n] += weights[m] * y[m]
    return out


register(OpInfo("moe_combine", moe_combine, _combine_samples, _combine_ref, family="moe"))


# ---------------------------------------------------------------- router losses
def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _switch_samples(rng, dtype):
    def args(N, E, k, drop=0.0):
        return (_softmax(randn(rng, np.float64, N, E)).astype(dtype), _routing(rng, N, E, k, drop))

    return [
        SampleInput(args(8, 4, 1), name="top-1"),
        SampleInput(args(6, 4, 2), name="top-2"),
        SampleInput(args(7, 3, 2, 0.3), name="dropped slots"),
        SampleInput(args(1, 2, 1), name="one token"),
    ]


def _switch_ref(probs, expert_index):
    N, E = probs.shape
    counts = np.zeros(E)
    total = 0
    for n in range(N):
        for e in expert_index[n]:
            if e >= 0:
                counts[e] += 1
                total += 1
    f = counts / max(total, 1)
    P = np.array([sum(probs[n, e] for n in range(N)) / N for e in range(E)])
    return np.asarray(E * float(np.dot(f, P)))


register(
    OpInfo(
        "switch_load_balancing_loss",
        switch_load_balancing_loss,
        _switch_samples,
        _switch_ref,
        family="moe",
    )
)


def _z_samples(rng, dtype):
    return [
        SampleInput((randn(rng, dtype, 5, 4),), name="5 x 4"),
        SampleInput((3 * randn(rng, dtype, 3, 8),), name="large logits"),
        SampleInput((randn(rng, dtype, 1, 1),), name="size 1"),
    ]


def _z_ref(logits):
    lse = [np.log(np.sum(np.exp(row))) for row in logits.astype(np.float64)]
    return np.asarray(np.mean(np.square(lse)))


register(OpInfo("router_z_loss", router_z_loss, _z_samples, _z_ref, family="moe"))
