"""GateLoop (Katsch 2023, "GateLoop: Fully Data-Controlled Linear Recurrence"), one Function.

For one row (all leading dims alike), q_t, k_t, a_t in R^D and v_t in R^Dv, t = 0 .. T-1,
the state h_t in R^{D x Dv} follows a data-controlled linear recurrence:

    h_t = a_t[:, None] * h_{t-1} + k_t v_t^T,   h_{-1} = 0          (recurrent form)
    y_t = h_t^T q_t                                                    [Dv]

Unrolled, with the gate products P(t, s) = prod_{j=s+1..t} a_j (elementwise over D; 1 at
s = t), it is causal attention whose "scores" carry a data-controlled relative decay:

    y_t = sum_{s<=t} ( sum_d q_t[d] k_s[d] P(t, s)[d] ) v_s          (attention form)

and since (a1, b1) . (a2, b2) = (a1 a2, a2 b1 + b2) is associative, every h_t is a prefix
"product" of the pairs (a_t, k_t v_t^T): a parallel scan (associative form). The three forms
are ``gateloop`` (the op), ``gateloop_attention`` (tinyllm ops, differentiable by autograd:
the composite) and ``gateloop_associative`` (arrays in, a Hillis-Steele scan, forward only).

The paper's gates are complex (magnitude in (0, 1) times a phase); this op takes real gates
(any sign), the real-valued GateLoop / gated linear attention (GLA) form. Complex gates are a
pair of real recurrences on (Re h, Im h); not implemented here.

Backward (hand-written; dy_t the cotangent, G_t = dLoss/dh_t):

    G_{T-1} = q_{T-1} dy_{T-1}^T,   G_t = q_t dy_t^T + a_{t+1}[:, None] * G_{t+1}  (reverse scan)
    dq_t = h_t dy_t,   dk_t = G_t v_t,   dv_t = G_t^T k_t,   da_t = sum_e G_t[:, e] h_{t-1}[:, e]

The forward saves its inputs and the state entering each chunk of ``CHUNK`` steps ([rows,
n_chunks, D, Dv]); the backward walks the chunks from the last, recomputes the chunk's states
from the saved one, then runs the reverse scan over it (mamba_ssm's scheme): memory
O(T/CHUNK D Dv + CHUNK D Dv), never O(T D Dv). NumPy/CuPy array code, vectorized over the
rows, sequential over T. float16/bfloat16 compute in float32.
"""

from __future__ import annotations

import math

from tinyllm.backend import get_array_module
from tinyllm.function import Function
from tinyllm.functional._util import check_float
from tinyllm.functional.shape import cat, stack
from tinyllm.kernels.arrays import compute_dtype
from tinyllm.tensor import Tensor

__all__ = ["gateloop"]

_OP = "gateloop"
CHUNK = 64  # steps between the states the forward saves for the backward


def _rows(x, last: int):
    """[..., T, last] -> [R, T, last] (R = prod of the leading dims)."""
    return x.reshape(math.prod(x.shape[:-2]) if x.ndim > 2 else 1, x.shape[-2], last)


class GateLoop(Function):
    @staticmethod
    def forward(ctx, q, k, v, a):
        # q, k, a: [..., T, D]; v: [..., T, Dv]
        xp = get_array_module(q)
        dtype, work = q.dtype, compute_dtype(q.dtype)
        D, Dv, T = q.shape[-1], v.shape[-1], q.shape[-2]
        Q, K, V, A = (_rows(x.astype(work, copy=False), x.shape[-1]) for x in (q, k, v, a))
        R = Q.shape[0]
        n_chunks = -(-T // CHUNK)
        states = xp.empty((R, n_chunks, D, Dv), work)  # h_{c CHUNK - 1} entering chunk c
        h = xp.zeros((R, D, Dv), work)
        y = xp.empty((R, T, Dv), work)
        for t in range(T):
            if t % CHUNK == 0:
                states[:, t // CHUNK] = h
            h = A[:, t, :, None] * h + K[:, t, :, None] * V[:, t, None, :]  # a h + k v^T
            y[:, t] = xp.einsum("rd,rde->re", Q[:, t], h)  # h^T q
        ctx.save_for_backward(Q, K, V, A, states)
        ctx.shapes = (q.shape, v.shape, dtype)
        return y.reshape(v.shape).astype(dtype, copy=False)

    @staticmethod
    def backward(ctx, dy):
        Q, K, V, A, states = ctx.saved_tensors
        q_shape, v_shape, dtype = ctx.shapes
        xp = get_array_module(Q)
        R, T, D = Q.shape
        Dv = V.shape[-1]
        dY = _rows(dy.astype(Q.dtype, copy=False), Dv)
        dQ, dK, dV, dA = xp.empty_like(Q), xp.empty_like(K), xp.empty_like(V), xp.empty_like(A)
        carry = xp.zeros((R, D, Dv), Q.dtype)  # a_{t+1} * G_{t+1}
        for c in reversed(range(states.shape[1])):
            t0, t1 = c * CHUNK, min(T, (c + 1) * CHUNK)
            hs = xp.empty((t1 - t0 + 1, R, D, Dv), Q.dtype)  # hs[i] = h_{t0 + i - 1}
            hs[0] = states[:, c]
            for t in range(t0, t1):  # h_t = a_t h_{t-1} + k_t v_t^T, again
                i = t - t0
                hs[i + 1] = A[:, t, :, None] * hs[i] + K[:, t, :, None] * V[:, t, None, :]
            for t in reversed(range(t0, t1)):
                i = t - t0
                G = Q[:, t, :, None] * dY[:, t, None, :] + carry  # G_t = q dy^T + a_{t+1} G_{t+1}
                dQ[:, t] = xp.einsum("rde,re->rd", hs[i + 1], dY[:, t])  # h_t dy_t
                dK[:, t] = xp.einsum("rde,re->rd", G, V[:, t])  # G_t v_t
                dV[:, t] = xp.einsum("rde,rd->re", G, K[:, t])  # G_t^T k_t
                dA[:, t] = (G * hs[i]).sum(-1)  # <G_t, h_{t-1}> over e
                carry = A[:, t, :, None] * G
        needs = ctx.needs_input_grad
        return tuple(
            g.reshape(shape).astype(dtype, copy=False) if need else None
            for g, shape, need in zip((dQ, dK, dV, dA), (q_shape, q_shape, v_shape, q_shape), needs)
        )


def _check(q, k, v, a) -> None:
    for name, t in (("q", q), ("k", k), ("v", v), ("a", a)):
        check_float(f"{_OP}: {name}", t)
    if q.ndim < 2 or q.shape[-2] == 0:
        raise ValueError(f"{_OP}: q must be [..., T, D] with T >= 1, got {tuple(q.shape)}")
    for name, t in (("k", k), ("a", a)):
        if tuple(t.shape) != tuple(q.shape):
            raise ValueError(
                f"{_OP}: {name} of shape {tuple(t.shape)} must match q {tuple(q.shape)}"
            )
    if v.ndim != q.ndim or tuple(v.shape[:-1]) != tuple(q.shape[:-1]):
        raise ValueError(
            f"{_OP}: v must be [..., T, Dv] with q's leading dims {tuple(q.shape[:-1])}, got "
            f"{tuple(v.shape)}"
        )
    if len({q.dtype, k.dtype, v.dtype, a.dtype}) > 1:
        raise TypeError(f"{_OP}: q, k, v and a must share one dtype")


def gateloop(q, k, v, a):
    """GateLoop's data-controlled linear recurrence (real gates), as causal attention.

    q, k, a: [..., T, D]; v: [..., T, Dv]. Returns y [..., T, Dv] with

        h_t = a_t[:, None] * h_{t-1} + k_t v_t^T   (h_{-1} = 0),   y_t = h_t^T q_t.

    ``a`` is the state transition (the gate): a = 1 everywhere is unnormalized causal
    linear attention; a in (0, 1) (e.g. a sigmoid) is a data-controlled decay. The backward
    is hand-written (the reverse scan; module docstring).

    >>> import tinyllm, tinyllm.functional as F
    >>> one = tinyllm.ones(1, 2, 1)
    >>> F.gateloop(one, one, tinyllm.tensor([[[1.0], [2.0]]]), 0.5 * one).numpy().ravel().tolist()
    [1.0, 2.5]
    """
    _check(q, k, v, a)
    return GateLoop.apply(q, k, v, a)


def gateloop_attention(q, k, v, a):
    """The attention (materialized) form in tinyllm ops, O(T^2 D) memory; autograd backward.

    y_t = sum_{s<=t} (sum_d q_t[d] k_s[d] P(t, s)[d]) v_s with P(t, s) = prod_{j=s+1..t} a_j:
    P is built row by row (P(t, s) = a_t P(t-1, s), P(t, t) = 1), so gates of any sign work
    (no log). The oracle ``gateloop`` is checked against (registry composite).
    """
    _check(q, k, v, a)
    T = q.shape[-2]
    xp = get_array_module(a.data)
    ones = Tensor(xp.ones(a.shape[:-2] + (1, a.shape[-1]), a.dtype))  # P(t, t) = 1
    rows, prev = [], None  # prev: P(t-1, s) for s < t as [..., t, D]
    for t in range(T):
        at = a[..., t : t + 1, :]  # [..., 1, D]
        # at t = 0: 0 * a_0 keeps a in the graph at T = 1 (a_0 multiplies h_{-1} = 0)
        P = ones + 0 * at if prev is None else cat([at * prev, ones], dim=-2)  # [..., t+1, D]
        scores = (q[..., t : t + 1, :] * k[..., : t + 1, :] * P).sum(-1)  # [..., t + 1]
        rows.append((scores.unsqueeze(-1) * v[..., : t + 1, :]).sum(-2))  # [..., Dv]
        prev = P
    return stack(rows, dim=-2)


def gateloop_associative(q, k, v, a):
    """(y, h_{T-1}) by the parallel form, on arrays (forward only): all states at once.

    h_t is the second component of (a_0, b_0) . ... . (a_t, b_t), b_t = k_t v_t^T, under
    (a1, b1) . (a2, b2) = (a1 a2, a2 b1 + b2) (step 1, then step 2). Hillis-Steele: after
    round r, element t holds the product of elements t - 2^r + 1 .. t; log2(T) rounds of
    elementwise work on [..., T, D, Dv]. Inputs: arrays (or Tensors, read as arrays).
    """
    q, k, v, a = (x.data if isinstance(x, Tensor) else x for x in (q, k, v, a))
    xp = get_array_module(q)
    T = q.shape[-2]
    A = a[..., :, :, None] + xp.zeros(v.shape[:-2] + (1, 1, v.shape[-1]), a.dtype)
    Bm = k[..., :, :, None] * v[..., :, None, :]  # [..., T, D, Dv]
    offset = 1
    while offset < T:  # (A, B)[t] <- (A, B)[t - offset] . (A, B)[t]
        A_prev, B_prev = A[..., :-offset, :, :], Bm[..., :-offset, :, :]
        Bm = xp.concatenate(
            [Bm[..., :offset, :, :], A[..., offset:, :, :] * B_prev + Bm[..., offset:, :, :]],
            axis=-3,
        )
        A = xp.concatenate([A[..., :offset, :, :], A[..., offset:, :, :] * A_prev], axis=-3)
        offset *= 2
    y = xp.einsum("...td,...tde->...te", q, Bm)
    return y, Bm[..., -1, :, :]
