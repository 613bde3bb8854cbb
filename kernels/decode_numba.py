"""Numba body of one cached decoding step through every layer of a dense GPT or Llama
(the math is ``models/decoder.py``'s ``Decoder.step``; this is its CPU fast path).

At batch 1 a token costs ~17 small matrix-vector products plus ~60 small array ops between
them, and in Python those ops, not the arithmetic, decide the time. Here the whole token is
one call: the matrix products are ``np.dot`` (Numba calls BLAS through SciPy), the norms,
the activations and RoPE are the serial twins of the kernels the module path runs (the same
code, so the same results), and the attention over the cache is a loop per head:

    per layer l, row b:  h = norm_1(x);  [q | k | v] = h W_qkv^T + b_qkv;  q, k = rope(q, k)
                         K[l, b, :, pos] = k;  V[l, b, :, pos] = v
                         a_i = softmax(K[l, b, i // G, :pos+1] q_i / sqrt(D)) V[...]  (head i)
                         x = x + a W_o^T + b_o;  x = x + down(act(norm_2(x) W_up^T + b_up))
    logits = norm_f(x) W_head^T + b_head

Absent biases are zero vectors (adding 0 changes no value); an absent norm weight is ones.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  (the BLAS that np.dot calls inside Numba)
from numba import njit

from tinyllm.kernels import glu_numba, norms_numba, rope_numba
from tinyllm.kernels.dispatch import serial_twin
from tinyllm.kernels.numba_math import like

_norm_rows = serial_twin(norms_numba.norm_rows)
_act_rows = serial_twin(glu_numba.act_rows)
_glu_rows = serial_twin(glu_numba.glu_rows)
_rope_rows = serial_twin(rope_numba.rope_rows)


@njit(cache=True, error_model="numpy")
def _norm(x, weight, bias, eps, center):
    """LayerNorm (center) or RMSNorm of the rows of x [B, C], by the norm kernel."""
    y = np.empty_like(x)
    stats = np.empty((2, x.shape[0]), x.dtype)  # mean, rstd: not needed here
    _norm_rows(x, x, weight, bias, eps, center, False, y, y, stats[0], stats[1])
    return y


@njit(cache=True, error_model="numpy")
def decode_step(
    x, pos, norm_w, norm_b, eps, center, w_qkv, b_qkv, w_o, b_o, w_up, b_up, w_down, b_down,
    cos, sin, rotary, interleaved, gated, act, n_head, K, V, w_head, b_head,
):  # fmt: skip
    """Feed rows x [B, C] (the embedded tokens; overwritten with the residual stream) at
    position ``pos``; returns the logits [B, vocab].

    norm_w, norm_b, eps: [2L + 1, C], [2L + 1] (norm_1, norm_2 of each layer, then the final
    norm); w_qkv [L, C, (H + 2 Hkv) D], w_o [L, C, C], w_up [L, C, U], w_down [L, F, C] (the
    weights transposed, so row h @ w); biases [L, N]; cos, sin [L, P, D/2] (rotary: rows at
    ``pos``); gated: act(gate) * up of [gate | up] (U = 2F) else act(u) (U = F); act: the
    activation code (0 silu, 1 gelu-tanh, 2 gelu); K, V [L, B, Hkv, T_max, D];
    w_head [C, vocab], b_head [vocab].
    """
    B, C = x.shape
    L, Hkv, D = K.shape[0], K.shape[2], K.shape[4]
    G = n_head // Hkv
    n_qk = (n_head + Hkv) * D
    t = pos + 1
    scale = like(x, 1.0 / math.sqrt(D))  # as the array path's float scale
    sign = like(x, 1.0)
    for layer in range(L):
        h = _norm(x, norm_w[2 * layer], norm_b[2 * layer], eps[2 * layer], center)
        qkv = np.dot(h, w_qkv[layer]) + b_qkv[layer]  # [B, (H + 2 Hkv) D]
        att = np.empty((B, n_head * D), x.dtype)
        for b in range(B):
            qk = qkv[b, :n_qk].copy().reshape((n_head + Hkv, D))
            if rotary:
                rotated = np.empty_like(qk)
                _rope_rows(
                    qk, cos[layer, pos : pos + 1], sin[layer, pos : pos + 1], sign, interleaved,
                    rotated,
                )  # fmt: skip
                qk = rotated
            for j in range(Hkv):
                K[layer, b, j, pos] = qk[n_head + j]
                V[layer, b, j, pos] = qkv[b, n_qk + j * D : n_qk + (j + 1) * D]
            for i in range(n_head):
                keys = K[layer, b, i // G, :t]  # [t, D]
                s = np.dot(keys, qk[i]) * scale  # [t]
                s -= s.max()
                p = np.exp(s)
                p /= p.sum()
                att[b, i * D : (i + 1) * D] = np.dot(p, V[layer, b, i // G, :t])
        x += np.dot(att, w_o[layer]) + b_o[layer]
        h = _norm(x, norm_w[2 * layer + 1], norm_b[2 * layer + 1], eps[2 * layer + 1], center)
        u = np.dot(h, w_up[layer]) + b_up[layer]  # [B, U]
        if gated:
            hidden = np.empty((B, u.shape[1] // 2), x.dtype)
            _glu_rows(u, act, hidden, hidden, u, False)
        else:
            hidden = np.empty_like(u)
            _act_rows(u, act, u, hidden, False)
        x += np.dot(hidden, w_down[layer]) + b_down[layer]
    h = _norm(x, norm_w[2 * L], norm_b[2 * L], eps[2 * L], center)
    return np.dot(h, w_head) + b_head
