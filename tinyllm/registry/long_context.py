"""Registry entries for the long-context ops: causal_linear_attention, wkv4 (RWKV-4), gateloop.

causal_linear_attention: samples with and without leading dims, Dv != D, T = 1, chunk sizes
1 (the pure recurrence), 3 (T not a multiple of it) and the default 64 with T > 64 (several
chunks). Reference: a NumPy loop of the running-sum recurrence step by step; composite: the
quadratic masked form in primitive ops (``causal_linear_attention_parallel``).

wkv4: samples with T = 1, a long T, a fast and a slow decay, and keys shifted by +30 (the
max trick at work). Reference: the O(T^2) sum of the definition in NumPy; composite: the same
sum in primitive tinyllm ops (exp, *, sum, stack), whose autograd must equal the hand-written
backward.

gateloop: samples with leading dims [B, H], none, Dv != D, T = 1, gates of both signs and
gates of 1 (linear attention), and T = 70 > CHUNK (the backward's chunked recomputation);
the same again with complex gates (a phase theta in (-pi, pi), the fifth argument, so the
gradcheck covers it). Reference: the recurrence step by step in NumPy (complex128 for complex
gates); composite: the attention (materialized) form in tinyllm ops (``gateloop_attention``).
"""

from __future__ import annotations

import numpy as np

import tinyllm.functional as F
from tinyllm.functional.gateloop import gateloop, gateloop_attention
from tinyllm.functional.linear_attention import (
    causal_linear_attention,
    causal_linear_attention_parallel,
)
from tinyllm.functional.rwkv import wkv4
from tinyllm.registry import OpInfo, SampleInput, register
from tinyllm.registry.samples import randn


# ---------------------------------------------------------------- causal_linear_attention
def _la_args(rng, dtype, lead, T, D, Dv):
    return (
        randn(rng, dtype, *lead, T, D),
        randn(rng, dtype, *lead, T, D),
        randn(rng, dtype, *lead, T, Dv),
    )


def _la_samples(rng, dtype):
    return [
        SampleInput(_la_args(rng, dtype, (2, 3), 6, 4, 4), name="[B, H, T, D]"),
        SampleInput(_la_args(rng, dtype, (), 5, 3, 2), name="[T, D], Dv != D"),
        SampleInput(_la_args(rng, dtype, (2,), 7, 3, 3), {"chunk_size": 1}, "recurrence"),
        SampleInput(_la_args(rng, dtype, (2,), 8, 2, 3), {"chunk_size": 3}, "ragged chunks"),
        SampleInput(_la_args(rng, dtype, (1,), 1, 2, 2), name="T = 1"),
        SampleInput(_la_args(rng, dtype, (1,), 70, 2, 2), {"eps": 0.5}, "two chunks, eps"),
    ]


def _la_ref(q, k, v, eps=1e-6, chunk_size=64):
    """Step by step: S += phi(k_t) v_t^T, z += phi(k_t), o_t = phi(q_t) S / (phi(q_t).z + eps)."""

    def phi(x):
        return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))

    Q, K = phi(q), phi(k)
    S = np.zeros(q.shape[:-2] + (q.shape[-1], v.shape[-1]))
    z = np.zeros(q.shape[:-2] + (q.shape[-1],))
    out = np.zeros(v.shape)
    for t in range(q.shape[-2]):
        S = S + K[..., t, :, None] * v[..., t, None, :]
        z = z + K[..., t, :]
        num = np.einsum("...d,...de->...e", Q[..., t, :], S)
        out[..., t, :] = num / ((Q[..., t, :] * z).sum(-1) + eps)[..., None]
    return out


def _la_composite(q, k, v, eps=1e-6, chunk_size=64):
    return causal_linear_attention_parallel(q, k, v, eps)


register(
    OpInfo(
        "causal_linear_attention",
        causal_linear_attention,
        _la_samples,
        _la_ref,
        composite=_la_composite,
        family="long_context",
    )
)


# ---------------------------------------------------------------- wkv4
def _wkv_args(rng, dtype, B, T, C, *, decay=0.0, shift=0.0):
    return (
        (decay + 0.5 * randn(rng, dtype, C)).astype(dtype),  # time_decay: w = -exp(.)
        (0.5 * randn(rng, dtype, C)).astype(dtype),  # time_first u
        (shift + randn(rng, dtype, B, T, C)).astype(dtype),  # k
        randn(rng, dtype, B, T, C),  # v
    )


def _wkv_samples(rng, dtype):
    return [
        SampleInput(_wkv_args(rng, dtype, 2, 5, 3), name="basic"),
        SampleInput(_wkv_args(rng, dtype, 1, 1, 2), name="T = 1"),
        SampleInput(_wkv_args(rng, dtype, 2, 12, 2, decay=1.5), name="fast decay"),
        SampleInput(_wkv_args(rng, dtype, 1, 9, 3, decay=-3.0), name="slow decay"),
        SampleInput(_wkv_args(rng, dtype, 2, 6, 2, shift=30.0), name="keys shifted by 30"),
    ]


def _wkv_ref(time_decay, time_first, k, v):
    """The definition, O(T^2), in float64 exps (no max trick: fine for |k| << 700):
    wkv_t = (sum_{i<t} e^{(t-1-i) w + k_i} v_i + e^{u + k_t} v_t) / (same with v = 1)."""
    w = -np.exp(time_decay)
    B, T, C = k.shape
    out = np.zeros((B, T, C))
    for t in range(T):
        num = np.exp(time_first + k[:, t]) * v[:, t]
        den = np.exp(time_first + k[:, t])
        for i in range(t):
            e = np.exp((t - 1 - i) * w + k[:, i])
            num, den = num + e * v[:, i], den + e
        out[:, t] = num / den
    return out


def _wkv_composite(time_decay, time_first, k, v):
    w = -time_decay.exp()
    T = k.shape[1]
    outs = []
    for t in range(T):
        e_now = (time_first + k[:, t]).exp()
        # + 0 w keeps time_decay in the graph at T = 1 (its gradient is then exactly 0)
        num, den = e_now * v[:, t], e_now + 0 * w
        for i in range(t):
            e = (w * (t - 1 - i) + k[:, i]).exp()
            num, den = num + e * v[:, i], den + e
        outs.append(num / den)
    return F.stack(outs, dim=1)


register(
    OpInfo(
        "wkv4",
        wkv4,
        _wkv_samples,
        _wkv_ref,
        composite=_wkv_composite,
        family="long_context",
        kernels=("wkv4_forward", "wkv4_backward"),
    )
)


# ---------------------------------------------------------------- gateloop
def _gl_args(rng, dtype, lead, T, D, Dv, gates="sigmoid", phase=False):
    q, k = randn(rng, dtype, *lead, T, D), randn(rng, dtype, *lead, T, D)
    v = randn(rng, dtype, *lead, T, Dv)
    if gates == "sigmoid":  # the usual data-controlled decay in (0, 1)
        a = 1.0 / (1.0 + np.exp(-randn(rng, dtype, *lead, T, D)))
    elif gates == "signed":  # real gates of both signs, |a| <= 1.2
        a = 1.2 * np.tanh(randn(rng, dtype, *lead, T, D))
    else:  # a = 1: causal linear attention without normalization
        a = np.ones((*lead, T, D))
    if not phase:
        return q, k, v, a.astype(dtype)
    theta = rng.uniform(-np.pi, np.pi, (*lead, T, D))  # complex gates a e^{i theta}
    return q, k, v, a.astype(dtype), theta.astype(dtype)


def _gl_samples(rng, dtype):
    return [
        SampleInput(_gl_args(rng, dtype, (2, 2), 5, 3, 3), name="[B, H, T, D]"),
        SampleInput(_gl_args(rng, dtype, (), 6, 2, 3), name="[T, D], Dv != D"),
        SampleInput(_gl_args(rng, dtype, (1,), 1, 2, 2), name="T = 1"),
        SampleInput(_gl_args(rng, dtype, (2,), 7, 2, 2, "signed"), name="signed gates"),
        SampleInput(_gl_args(rng, dtype, (1,), 4, 3, 2, "ones"), name="a = 1"),
        SampleInput(_gl_args(rng, dtype, (1,), 70, 2, 2), name="T = 70, two chunks"),
        SampleInput(_gl_args(rng, dtype, (2, 2), 5, 3, 3, phase=True), name="complex [B, H]"),
        SampleInput(_gl_args(rng, dtype, (), 6, 2, 3, phase=True), name="complex, Dv != D"),
        SampleInput(_gl_args(rng, dtype, (1,), 1, 2, 2, phase=True), name="complex, T = 1"),
        SampleInput(
            _gl_args(rng, dtype, (2,), 7, 2, 2, "signed", phase=True), name="complex, signed a"
        ),
        SampleInput(_gl_args(rng, dtype, (1,), 70, 2, 2, phase=True), name="complex, T = 70"),
    ]


def _gl_ref(q, k, v, a, theta=None):
    """Step by step: h = a[:, None] h + k v^T, y = h^T q (one row of the leading dims at once).

    With theta: a complex128 state, alpha = a e^{i theta} in place of a, y = Re(h^T q).
    """
    alpha = a if theta is None else a * np.exp(1j * theta)
    h = np.zeros(q.shape[:-2] + (q.shape[-1], v.shape[-1]), alpha.dtype)
    out = np.zeros(v.shape)
    for t in range(q.shape[-2]):
        h = alpha[..., t, :, None] * h + k[..., t, :, None] * v[..., t, None, :]
        out[..., t, :] = np.einsum("...d,...de->...e", q[..., t, :], h).real
    return out


register(
    OpInfo(
        "gateloop",
        gateloop,
        _gl_samples,
        _gl_ref,
        composite=gateloop_attention,
        family="long_context",
    )
)
