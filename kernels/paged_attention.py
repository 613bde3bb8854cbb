"""Attention that reads K and V through a block table (PagedAttention, Kwon et al. 2023).

The cache is split into fixed-size physical blocks:

    k_cache, v_cache   [num_blocks, Hkv, S, D]     (S = block_size tokens per block)
    block_table[n]     [max_blocks] int            logical block b of sequence n -> physical id
    token t of sequence n lives at k_cache[block_table[n, t // S], :, t % S]

Decode (one query per sequence), with G = H / Hkv query heads per K/V head (GQA):

    K_n = gather(k_cache, block_table[n])[:, :context_lens[n]]     [Hkv, L, D]
    o[n] = softmax(q[n] K_n^T * scale) V_n                          [H, D]

Prefill of a chunk of Tq new tokens that end a context of L tokens (queries at positions
L - Tq .. L - 1; bottom-right causal: query j sees keys 0 .. L - Tq + j).

The gather is a copy, so the reference computes exactly what contiguous attention computes
on the same keys (the tests check equality, not closeness, under a shuffled block table).
Tiers: this NumPy/CuPy reference; ``paged_attention_numba.py`` (decode, online softmax,
one work item per (sequence, query head), no gather), checked against it.
"""

from __future__ import annotations

import math


def _check(q, k_cache, v_cache, name):
    if k_cache.ndim != 4 or v_cache.shape != k_cache.shape:
        raise ValueError(
            f"{name}: k_cache and v_cache must both be [num_blocks, Hkv, block_size, D], got "
            f"{tuple(k_cache.shape)} and {tuple(v_cache.shape)}"
        )
    H, D = q.shape[-2:]
    Hkv = k_cache.shape[1]
    if D != k_cache.shape[3] or H % Hkv:
        raise ValueError(
            f"{name}: q [..., H, D] = {tuple(q.shape)} does not fit the cache "
            f"{tuple(k_cache.shape)} (need the same D and H divisible by Hkv)"
        )


def gather_kv(cache, block_table, length: int):
    """The first ``length`` tokens of one sequence, contiguous: [Hkv, length, D]."""
    S = cache.shape[2]
    nb = -(-length // S)
    blocks = cache[block_table[:nb]]  # [nb, Hkv, S, D]
    Hkv, D = cache.shape[1], cache.shape[3]
    return blocks.transpose(1, 0, 2, 3).reshape(Hkv, nb * S, D)[:, :length]


def paged_attention_forward(q, k_cache, v_cache, block_tables, context_lens, scale=None):
    """Decode attention: q [N, H, D] (one query per sequence, at its last position)."""
    _check(q, k_cache, v_cache, "paged_attention_forward")
    N, H, D = q.shape
    Hkv = k_cache.shape[1]
    G = H // Hkv
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    from tinyllm import backend

    xp = backend.get_array_module(q)
    out = xp.empty_like(q)
    for n in range(N):
        L = int(context_lens[n])
        keys = gather_kv(k_cache, block_tables[n], L)  # [Hkv, L, D]
        values = gather_kv(v_cache, block_tables[n], L)
        qg = q[n].reshape(Hkv, G, D)
        s = (qg @ keys.swapaxes(-1, -2)) * scale  # [Hkv, G, L]
        s -= s.max(axis=-1, keepdims=True)
        p = xp.exp(s)
        p /= p.sum(axis=-1, keepdims=True)
        out[n] = (p @ values).reshape(H, D)
    return out


def paged_prefill_attention(q, k_cache, v_cache, block_table, context_len: int, scale=None):
    """Chunk attention: q [Tq, H, D] for the last Tq of ``context_len`` positions, causal."""
    _check(q, k_cache, v_cache, "paged_prefill_attention")
    from tinyllm import backend

    xp = backend.get_array_module(q)
    Tq, H, D = q.shape
    Hkv = k_cache.shape[1]
    G, L = H // Hkv, int(context_len)
    if Tq > L:
        raise ValueError(f"paged_prefill_attention: {Tq} queries exceed the context of {L}")
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    keys = gather_kv(k_cache, block_table, L)[:, None]  # [Hkv, 1, L, D]
    values = gather_kv(v_cache, block_table, L)[:, None]
    qg = q.transpose(1, 0, 2).reshape(Hkv, G, Tq, D)
    s = (qg @ keys.swapaxes(-1, -2)) * scale  # [Hkv, G, Tq, L]
    q_pos = L - Tq + xp.arange(Tq)
    future = xp.arange(L)[None, :] > q_pos[:, None]
    s = xp.where(future, s.dtype.type(-math.inf), s)
    s -= s.max(axis=-1, keepdims=True)
    p = xp.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    return (p @ values).reshape(H, Tq, D).transpose(1, 0, 2)  # [Tq, H, D]
