"""Numba FlashAttention (forward and backward): tiled, online softmax, no T x T array.

One parallel work item per (batch, query head) pair bh. All scratch is per-tile and comes
from the caller, one slice per work item (so that ``tracemalloc`` sees every byte; the
kernels allocate nothing):

    s_buf   [BH, Bq, Bk]   scores / probabilities of one tile
    dp_buf  [BH, Bq, Bk]   dP, then dS, of one tile (backward)
    kt_buf  [BH, D, Bk]    the K tile transposed (so the score loop runs along keys)
    vt_buf  [BH, D, Bk]    the V tile transposed (backward: dP = dO V^T)
    acc_buf [BH, Bq, D]    the unnormalized output accumulator (forward)
    dk_buf, dv_buf [BH, Bk, D]  dK, dV accumulators of one key tile (backward)
    m_buf, l_buf [BH, Bq]  running max and running sum (forward)
    delta_buf [BH, Tq]     D_i = sum_d dO_id O_id (backward)

Every innermost loop runs along a contiguous axis with no reduction (an axpy), so LLVM
vectorizes it without fastmath; sums over a row use the eight-accumulator helpers.
Math, masks and shapes: ``attention.py``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from tinyllm.kernels.numba_math import fast_exp, like, row_dot, row_max, row_sum


@njit(cache=True, error_model="numpy")
def _scores(qh, q0, nq, kt, nk, scale, s):
    """s[i, j] = sum_d (scale q[q0 + i, d]) kt[d, j] for the tile (kt holds K^T: [D, Bk]).

    Four query rows share each load of kt[d] (26% faster than one row at a time, and the
    same sums in the same order, so bitwise the same result).
    """
    D = qh.shape[1]
    i = 0
    while i + 4 <= nq:
        s0, s1, s2, s3 = s[i], s[i + 1], s[i + 2], s[i + 3]
        r0, r1, r2, r3 = qh[q0 + i], qh[q0 + i + 1], qh[q0 + i + 2], qh[q0 + i + 3]
        for j in range(nk):
            s0[j] = 0
            s1[j] = 0
            s2[j] = 0
            s3[j] = 0
        for d in range(D):
            a0 = r0[d] * scale
            a1 = r1[d] * scale
            a2 = r2[d] * scale
            a3 = r3[d] * scale
            ktd = kt[d]
            for j in range(nk):
                kv = ktd[j]
                s0[j] += a0 * kv
                s1[j] += a1 * kv
                s2[j] += a2 * kv
                s3[j] += a3 * kv
        i += 4
    while i < nq:
        srow = s[i]
        for j in range(nk):
            srow[j] = 0
        qi = qh[q0 + i]
        for d in range(D):
            qd = qi[d] * scale
            ktd = kt[d]
            for j in range(nk):
                srow[j] += qd * ktd[j]
        i += 1


@njit(cache=True, error_model="numpy")
def _mask_tile(s, q0, nq, k0, nk, keep_b, has_mask, causal):
    """Set masked scores of the tile to -inf (key j visible to query i iff j <= i)."""
    for i in range(nq):
        srow = s[i]
        for j in range(nk):
            if (has_mask and not keep_b[k0 + j]) or (causal and k0 + j > q0 + i):
                srow[j] = -np.inf


@njit(cache=True, error_model="numpy")
def _transpose_tile(xh, k0, nk, xt):
    """xt[d, j] = x[k0 + j, d] for the tile."""
    D = xh.shape[1]
    for j in range(nk):
        xj = xh[k0 + j]
        for d in range(D):
            xt[d, j] = xj[d]


@njit(parallel=True, cache=True, error_model="numpy")
def flash_forward(
    q, k, v, keep, has_mask, causal, scale, block_q, block_k, o, lse,
    s_buf, kt_buf, acc_buf, m_buf, l_buf,
):  # fmt: skip
    """o [B, H, Tq, D] and lse [B, H, Tq] of softmax(scale q k^T + mask) v, tile by tile.

    q: [B, H, Tq, D]; k, v: [B, Hkv, Tk, D]; keep: [B, Tk] (read only when has_mask).
    """
    B, H, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    group = H // Hkv
    neg_inf = like(q, -np.inf)
    for bh in prange(B * H):
        b = bh // H
        h = bh % H
        kvh = h // group
        qh, kh, vh = q[b, h], k[b, kvh], v[b, kvh]  # [Tq, D], [Tk, D], [Tk, D]
        oh, lh = o[b, h], lse[b, h]  # [Tq, D], [Tq]
        keep_b = keep[b if has_mask else 0]
        s, kt, acc = s_buf[bh], kt_buf[bh], acc_buf[bh]  # [Bq, Bk], [D, Bk], [Bq, D]
        m, l = m_buf[bh], l_buf[bh]  # [Bq]
        for q0 in range(0, Tq, block_q):
            nq = min(block_q, Tq - q0)
            for i in range(nq):
                m[i] = neg_inf
                l[i] = 0
                for d in range(D):
                    acc[i, d] = 0
            # causal: keys beyond the tile's last query are invisible to all of it
            k_end = min(Tk, q0 + nq) if causal else Tk
            for k0 in range(0, k_end, block_k):
                nk = min(block_k, k_end - k0)
                _transpose_tile(kh, k0, nk, kt)
                _scores(qh, q0, nq, kt, nk, scale, s)
                if has_mask or (causal and k0 + nk - 1 > q0):
                    _mask_tile(s, q0, nq, k0, nk, keep_b, has_mask, causal)
                for i in range(nq):
                    srow = s[i]
                    m_new = max(m[i], row_max(srow[:nk]))
                    if m_new == neg_inf:  # all keys so far masked for this row
                        continue
                    alpha = fast_exp(m[i] - m_new)  # rescales the old sum and accumulator
                    for j in range(nk):
                        srow[j] = fast_exp(srow[j] - m_new)  # P~ = exp(S - m_new)
                    l[i] = alpha * l[i] + row_sum(srow[:nk])
                    ai = acc[i]
                    for d in range(D):
                        ai[d] *= alpha
                    for j in range(nk):
                        p = srow[j]
                        if p != 0:
                            vj = vh[k0 + j]
                            for d in range(D):
                                ai[d] += p * vj[d]  # acc += P~ V
                    m[i] = m_new
            for i in range(nq):
                oi = oh[q0 + i]
                if l[i] == 0:  # fully masked row: zero output, lse = -inf
                    for d in range(D):
                        oi[d] = 0
                    lh[q0 + i] = neg_inf
                else:
                    inv = like(q, 1.0) / l[i]
                    for d in range(D):
                        oi[d] = acc[i, d] * inv
                    lh[q0 + i] = m[i] + like(q, math.log(l[i]))


@njit(parallel=True, cache=True, error_model="numpy")
def flash_backward(
    q, k, v, o, do, lse, keep, has_mask, causal, scale, block_q, block_k, dq, dk_part,
    dv_part, s_buf, dp_buf, kt_buf, vt_buf, dk_buf, dv_buf, delta_buf,
):  # fmt: skip
    """dq [B, H, Tq, D] and per-query-head dk_part, dv_part [B, H, Tk, D].

    Recomputes P = exp(S - lse) tile by tile; D_i = rowsum(dO o O);
    dS = P o (dP - D_i) with dP = dO V^T; dV += P^T dO; dK += scale dS^T Q;
    dQ += scale dS K. Outer loop over key tiles (dK, dV stay in the tile accumulators),
    inner over query tiles (dQ rows accumulate in place: one work item owns head bh).
    """
    B, H, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    group = H // Hkv
    neg_inf = like(q, -np.inf)
    for bh in prange(B * H):
        b = bh // H
        h = bh % H
        kvh = h // group
        qh, kh, vh = q[b, h], k[b, kvh], v[b, kvh]  # [Tq, D], [Tk, D], [Tk, D]
        oh, doh, lh = o[b, h], do[b, h], lse[b, h]
        dqh, dkh, dvh = dq[b, h], dk_part[b, h], dv_part[b, h]  # [Tq, D], [Tk, D], [Tk, D]
        keep_b = keep[b if has_mask else 0]
        s, dp = s_buf[bh], dp_buf[bh]  # [Bq, Bk]
        kt, vt = kt_buf[bh], vt_buf[bh]  # [D, Bk]
        dka, dva = dk_buf[bh], dv_buf[bh]  # [Bk, D]
        delta = delta_buf[bh]  # [Tq]
        for i in range(Tq):
            delta[i] = row_dot(doh[i], oh[i])
            for d in range(D):
                dqh[i, d] = 0
        for k0 in range(0, Tk, block_k):
            nk = min(block_k, Tk - k0)
            _transpose_tile(kh, k0, nk, kt)
            _transpose_tile(vh, k0, nk, vt)
            for j in range(nk):
                for d in range(D):
                    dka[j, d] = 0
                    dva[j, d] = 0
            # causal: only queries i >= k0 see this tile's keys
            q_start = (k0 // block_q) * block_q if causal else 0
            for q0 in range(q_start, Tq, block_q):
                nq = min(block_q, Tq - q0)
                _scores(qh, q0, nq, kt, nk, scale, s)  # S
                _scores(doh, q0, nq, vt, nk, like(q, 1.0), dp)  # dP = dO V^T
                if has_mask or (causal and k0 + nk - 1 > q0):
                    _mask_tile(s, q0, nq, k0, nk, keep_b, has_mask, causal)
                for i in range(nq):
                    srow, dprow = s[i], dp[i]
                    li = lh[q0 + i]
                    di = delta[q0 + i]
                    if li == neg_inf:  # fully masked row: P = 0
                        for j in range(nk):
                            srow[j] = 0
                            dprow[j] = 0
                        continue
                    for j in range(nk):
                        p = fast_exp(srow[j] - li)  # P = exp(S - lse); masked: exp(-inf) = 0
                        srow[j] = p
                        dprow[j] = p * (dprow[j] - di)  # dS = P (dP - D)
                for i in range(nq):
                    qi, doi, dqi = qh[q0 + i], doh[q0 + i], dqh[q0 + i]
                    srow, dsrow = s[i], dp[i]
                    for j in range(nk):
                        p = srow[j]
                        if p == 0:
                            continue
                        ds = dsrow[j]
                        dvj, dkj = dva[j], dka[j]
                        for d in range(D):
                            dvj[d] += p * doi[d]  # dV += P^T dO
                        for d in range(D):
                            dkj[d] += ds * qi[d]  # dK += dS^T Q   (scale applied below)
                        dss = ds * scale
                        kj = kh[k0 + j]
                        for d in range(D):
                            dqi[d] += dss * kj[d]  # dQ += scale dS K
            for j in range(nk):
                for d in range(D):
                    dkh[k0 + j, d] = dka[j, d] * scale
                    dvh[k0 + j, d] = dva[j, d]
