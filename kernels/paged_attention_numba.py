"""Numba paged decode attention: the "numba" tier of ``paged_attention_forward`` (in
``paged_attention.py``, which checks the arguments and dispatches here), the reference's
math without the gather. One parallel work item per (sequence n, query head h): walk the
sequence's block table, read each key in place, and keep an online softmax (running max m,
running sum l, unnormalized accumulator acc):

    s_t = scale q . k_t;  m' = max(m, s_t);  acc = acc e^{m - m'} + e^{s_t - m'} v_t
    l = l e^{m - m'} + e^{s_t - m'};  o = acc / l
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from tinyllm.kernels import numba_math  # noqa: F401  (numba_cache.install() first)


@njit(parallel=True, cache=True)
def _decode(q, k_cache, v_cache, block_tables, context_lens, scale, out):
    N, H, D = q.shape
    Hkv, S = k_cache.shape[1], k_cache.shape[2]
    G = H // Hkv
    for work in prange(N * H):
        n, h = work // H, work % H
        kv = h // G
        L = context_lens[n]
        acc = np.zeros(D, dtype=np.float64)
        m, l = -np.inf, 0.0
        for t in range(L):
            blk, off = block_tables[n, t // S], t % S
            s = 0.0
            for d in range(D):
                s += q[n, h, d] * k_cache[blk, kv, off, d]
            s *= scale
            m_new = max(m, s)
            c = math.exp(m - m_new) if m > -np.inf else 0.0
            e = math.exp(s - m_new)
            l = l * c + e
            for d in range(D):
                acc[d] = acc[d] * c + e * v_cache[blk, kv, off, d]
            m = m_new
        for d in range(D):
            out[n, h, d] = acc[d] / l


def decode(q, k_cache, v_cache, block_tables, context_lens, scale: float):
    """The Numba tier of "paged_attention_forward" (arguments checked by the caller); the
    serial twin runs below ``dispatch.SERIAL_BELOW`` elements of work."""
    from tinyllm.kernels import dispatch

    out = np.empty_like(q)
    work = int(np.sum(context_lens)) * q.shape[1] * q.shape[2]
    dispatch.numba_for_work(_decode, work)(
        np.ascontiguousarray(q),
        np.ascontiguousarray(k_cache),
        np.ascontiguousarray(v_cache),
        np.ascontiguousarray(block_tables, dtype=np.int64),
        np.ascontiguousarray(context_lens, dtype=np.int64),
        float(scale),
        out,
    )
    return out
