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

Complex gates (the paper's; ``theta`` given). The paper's recurrent mode is
h_n = h_{n-1} a_n + k_n^T v_n, y_n = q_n h_n with a complex, data-controlled transition
alpha_t = a_t e^{i theta_t} in C^D (the magnitude through a sigmoid, the phase as is: the
caller's choice here) and real projections q, k, v; the state is then complex and the
output taken is its real part (as the public reimplementations do; Re(h)^T q = Re(h^T q)
for a real q):

    h_t = alpha_t[:, None] * h_{t-1} + k_t v_t^T,   y_t = Re(h_t^T q_t) = Re(h_t)^T q_t.

tinyllm has no complex tensors: the op takes the phase theta [..., T, D] as a second real
input and holds h as two real arrays X = Re h, Y = Im h; with c_t = a_t cos theta_t,
s_t = a_t sin theta_t (a rotation by theta_t scaled by a_t, per d):

    X_t = c_t X_{t-1} - s_t Y_{t-1} + k_t v_t^T,   Y_t = s_t X_{t-1} + c_t Y_{t-1},
    y_t = X_t^T q_t

Attention form: P(t, s) = prod a_j e^{i theta_j} = M(t, s) e^{i (Phi_t - Phi_s)} with M the
product of the magnitudes and Phi_t = theta_0 + .. + theta_t the cumulative phase, so

    y_t = sum_{s<=t} ( sum_d q_t k_s M(t, s) cos(Phi_t - Phi_s) ) v_s,
    cos(Phi_t - Phi_s) = cos Phi_t cos Phi_s + sin Phi_t sin Phi_s    (a data-controlled RoPE).

theta = 0 is the real op exactly; theta = pi turns a into -a.

Backward (hand-written; dy_t the cotangent, G_t = dLoss/dh_t):

    G_{T-1} = q_{T-1} dy_{T-1}^T,   G_t = q_t dy_t^T + a_{t+1}[:, None] * G_{t+1}  (reverse scan)
    dq_t = h_t dy_t,   dk_t = G_t v_t,   dv_t = G_t^T k_t,   da_t = sum_e G_t[:, e] h_{t-1}[:, e]

Complex gates: with G_t = dLoss/dX_t and F_t = dLoss/dY_t, Lambda_t = G_t + i F_t follows the
conjugate-transposed recurrence, run in reverse (only X_t feeds the output, so only G gets
the direct term):

    Lambda_t = q_t dy_t^T + conj(alpha_{t+1})[:, None] * Lambda_{t+1}, i.e.
    G_t = q_t dy_t^T + c_{t+1} G_{t+1} + s_{t+1} F_{t+1},   F_t = c_{t+1} F_{t+1} - s_{t+1} G_{t+1}
    dq_t = X_t dy_t,   dk_t = G_t v_t,   dv_t = G_t^T k_t
    dc_t + i ds_t = sum_e Lambda_t conj(h_{t-1}):  dc_t = sum_e (G_t X_{t-1} + F_t Y_{t-1}),
                                                    ds_t = sum_e (F_t X_{t-1} - G_t Y_{t-1})
    da_t = cos theta_t dc_t + sin theta_t ds_t,   dtheta_t = c_t ds_t - s_t dc_t

The forward saves its inputs and the state entering each chunk of ``CHUNK`` steps ([rows,
n_chunks, D, Dv]; complex: [rows, n_chunks, 2, D, Dv], X and Y); the backward walks the chunks
from the last, recomputes the chunk's states from the saved one, then runs the reverse scan
over it (mamba_ssm's scheme): memory O(T/CHUNK D Dv + CHUNK D Dv), never O(T D Dv).
NumPy/CuPy array code, vectorized over the rows, sequential over T. float16/bfloat16 compute
in float32.
"""

from __future__ import annotations

import math

from tinyllm.backend import get_array_module
from tinyllm.function import Function
from tinyllm.functional._util import check_float
from tinyllm.functional.pointwise import cos, sin
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
    """The recurrence, real gates (``theta`` None) or complex a e^{i theta} (module docstring)."""

    @staticmethod
    def forward(ctx, q, k, v, a, theta=None):
        # q, k, a, theta: [..., T, D]; v: [..., T, Dv]
        ctx.complex = theta is not None
        if ctx.complex:
            return _forward_complex(ctx, q, k, v, a, theta)
        return _forward_real(ctx, q, k, v, a)

    @staticmethod
    def backward(ctx, dy):
        grads = _backward_complex(ctx, dy) if ctx.complex else _backward_real(ctx, dy)
        q_shape, v_shape, dtype = ctx.shapes
        shapes = (q_shape, q_shape, v_shape) + (q_shape,) * (len(grads) - 3)
        return tuple(
            g.reshape(shape).astype(dtype, copy=False) if need else None
            for g, shape, need in zip(grads, shapes, ctx.needs_input_grad)
        )


def _forward_real(ctx, q, k, v, a):
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


def _backward_real(ctx, dy):
    Q, K, V, A, states = ctx.saved_tensors
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
    return dQ, dK, dV, dA


def _forward_complex(ctx, q, k, v, a, theta):
    xp = get_array_module(q)
    dtype, work = q.dtype, compute_dtype(q.dtype)
    D, Dv, T = q.shape[-1], v.shape[-1], q.shape[-2]
    Q, K, V, A, TH = (_rows(x.astype(work, copy=False), x.shape[-1]) for x in (q, k, v, a, theta))
    COS, SIN = xp.cos(TH), xp.sin(TH)
    Cg, Sg = A * COS, A * SIN  # alpha = c + i s
    R = Q.shape[0]
    n_chunks = -(-T // CHUNK)
    states = xp.empty((R, n_chunks, 2, D, Dv), work)  # (X, Y) entering chunk c
    X, Y = xp.zeros((R, D, Dv), work), xp.zeros((R, D, Dv), work)
    y = xp.empty((R, T, Dv), work)
    for t in range(T):
        if t % CHUNK == 0:
            states[:, t // CHUNK, 0], states[:, t // CHUNK, 1] = X, Y
        X, Y = _step(Cg[:, t, :, None], Sg[:, t, :, None], X, Y, K[:, t], V[:, t])
        y[:, t] = xp.einsum("rd,rde->re", Q[:, t], X)  # Re(h)^T q
    ctx.save_for_backward(Q, K, V, A, COS, SIN, states)
    ctx.shapes = (q.shape, v.shape, dtype)
    return y.reshape(v.shape).astype(dtype, copy=False)


def _step(c, s, X, Y, k, v):
    """h <- (c + i s) h + k v^T on (X, Y) = (Re h, Im h)."""
    return c * X - s * Y + k[:, :, None] * v[:, None, :], s * X + c * Y


def _backward_complex(ctx, dy):
    Q, K, V, A, COS, SIN, states = ctx.saved_tensors
    xp = get_array_module(Q)
    R, T, D = Q.shape
    Dv = V.shape[-1]
    Cg, Sg = A * COS, A * SIN
    dY = _rows(dy.astype(Q.dtype, copy=False), Dv)
    dQ, dK, dV = xp.empty_like(Q), xp.empty_like(K), xp.empty_like(V)
    dA, dTH = xp.empty_like(A), xp.empty_like(A)
    carry_G = xp.zeros((R, D, Dv), Q.dtype)  # conj(alpha_{t+1}) Lambda_{t+1}: real part
    carry_F = xp.zeros((R, D, Dv), Q.dtype)  # and imaginary part
    for c in reversed(range(states.shape[1])):
        t0, t1 = c * CHUNK, min(T, (c + 1) * CHUNK)
        Xs = xp.empty((t1 - t0 + 1, R, D, Dv), Q.dtype)  # Xs[i] = X_{t0 + i - 1}
        Ys = xp.empty_like(Xs)
        Xs[0], Ys[0] = states[:, c, 0], states[:, c, 1]
        for t in range(t0, t1):  # the forward's steps, again
            i = t - t0
            Xs[i + 1], Ys[i + 1] = _step(
                Cg[:, t, :, None], Sg[:, t, :, None], Xs[i], Ys[i], K[:, t], V[:, t]
            )
        for t in reversed(range(t0, t1)):
            i = t - t0
            G = Q[:, t, :, None] * dY[:, t, None, :] + carry_G  # Re Lambda_t
            F = carry_F  # Im Lambda_t (Y_t does not reach y_t directly)
            dQ[:, t] = xp.einsum("rde,re->rd", Xs[i + 1], dY[:, t])  # X_t dy_t
            dK[:, t] = xp.einsum("rde,re->rd", G, V[:, t])  # G_t v_t
            dV[:, t] = xp.einsum("rde,rd->re", G, K[:, t])  # G_t^T k_t
            dc = (G * Xs[i] + F * Ys[i]).sum(-1)  # Re sum_e Lambda_t conj(h_{t-1})
            ds = (F * Xs[i] - G * Ys[i]).sum(-1)  # Im
            dA[:, t] = COS[:, t] * dc + SIN[:, t] * ds
            dTH[:, t] = Cg[:, t] * ds - Sg[:, t] * dc
            ct, st = Cg[:, t, :, None], Sg[:, t, :, None]
            carry_G, carry_F = ct * G + st * F, ct * F - st * G  # conj(alpha_t) Lambda_t
    return dQ, dK, dV, dA, dTH


def _check(q, k, v, a, theta=None) -> None:
    named = (("q", q), ("k", k), ("v", v), ("a", a)) + (
        (("theta", theta),) if theta is not None else ()
    )
    for name, t in named:
        check_float(f"{_OP}: {name}", t)
    if q.ndim < 2 or q.shape[-2] == 0:
        raise ValueError(f"{_OP}: q must be [..., T, D] with T >= 1, got {tuple(q.shape)}")
    for name, t in named[1:]:
        if name != "v" and tuple(t.shape) != tuple(q.shape):
            raise ValueError(
                f"{_OP}: {name} of shape {tuple(t.shape)} must match q {tuple(q.shape)}"
            )
    if v.ndim != q.ndim or tuple(v.shape[:-1]) != tuple(q.shape[:-1]):
        raise ValueError(
            f"{_OP}: v must be [..., T, Dv] with q's leading dims {tuple(q.shape[:-1])}, got "
            f"{tuple(v.shape)}"
        )
    if len({t.dtype for _, t in named}) > 1:
        names = ", ".join(n for n, _ in named[:-1]) + " and " + named[-1][0]
        raise TypeError(f"{_OP}: {names} must share one dtype")


def gateloop(q, k, v, a, theta=None):
    """GateLoop's data-controlled linear recurrence, as causal attention.

    q, k, a: [..., T, D]; v: [..., T, Dv]; theta (optional): [..., T, D]. Returns y
    [..., T, Dv]. With ``theta`` None (real gates, any sign):

        h_t = a_t[:, None] * h_{t-1} + k_t v_t^T   (h_{-1} = 0),   y_t = h_t^T q_t.

    With ``theta`` (the paper's complex gates): the transition is a_t e^{i theta_t} and the
    state complex, h_t = a_t e^{i theta_t}[:, None] * h_{t-1} + k_t v_t^T, y_t = Re(h_t)^T q_t
    (tinyllm has no complex tensors: the magnitude a and the phase theta are two real inputs,
    and the state is held as Re h, Im h). theta = 0 is the real op exactly.

    ``a`` is the gate: a = 1 everywhere (theta None) is unnormalized causal linear
    attention; a in (0, 1) (e.g. a sigmoid) is a data-controlled decay; theta rotates the
    state (a data-controlled relative position). The backward is hand-written (the reverse
    scan; for complex gates, of the conjugate-transposed recurrence: module docstring).

    >>> import tinyllm, tinyllm.functional as F
    >>> one = tinyllm.ones(1, 2, 1)
    >>> F.gateloop(one, one, tinyllm.tensor([[[1.0], [2.0]]]), 0.5 * one).numpy().ravel().tolist()
    [1.0, 2.5]
    >>> half_turn = tinyllm.full((1, 2, 1), 3.141592653589793)  # a e^{i pi} = -a
    >>> y = F.gateloop(one, one, tinyllm.tensor([[[1.0], [2.0]]]), 0.5 * one, half_turn)
    >>> y.numpy().ravel().tolist()
    [1.0, 1.5]
    """
    _check(q, k, v, a, theta)
    if theta is None:
        return GateLoop.apply(q, k, v, a)
    return GateLoop.apply(q, k, v, a, theta)


def gateloop_attention(q, k, v, a, theta=None):
    """The attention (materialized) form in tinyllm ops, O(T^2 D) memory; autograd backward.

    y_t = sum_{s<=t} (sum_d q_t[d] k_s[d] P(t, s)[d]) v_s with P(t, s) = prod_{j=s+1..t} a_j:
    P is built row by row (P(t, s) = a_t P(t-1, s), P(t, t) = 1), so gates of any sign work
    (no log). With ``theta``, the phase enters as cos(Phi_t - Phi_s) = cos Phi_t cos Phi_s +
    sin Phi_t sin Phi_s, Phi the running sum of theta (the real part of e^{i (Phi_t - Phi_s)}).
    The oracle ``gateloop`` is checked against (registry composite).
    """
    _check(q, k, v, a, theta)
    T = q.shape[-2]
    xp = get_array_module(a.data)
    if theta is not None:
        phis, phi = [], None  # Phi_t = theta_0 + .. + theta_t, [..., 1, D] each
        for t in range(T):
            th = theta[..., t : t + 1, :]
            phi = th if phi is None else phi + th
            phis.append(phi)
        Phi = cat(phis, dim=-2)
        cos_phi, sin_phi = cos(Phi), sin(Phi)  # [..., T, D]
    ones = Tensor(xp.ones(a.shape[:-2] + (1, a.shape[-1]), a.dtype))  # P(t, t) = 1
    rows, prev = [], None  # prev: P(t-1, s) for s < t as [..., t, D]
    for t in range(T):
        at = a[..., t : t + 1, :]  # [..., 1, D]
        # at t = 0: 0 * a_0 keeps a in the graph at T = 1 (a_0 multiplies h_{-1} = 0)
        P = ones + 0 * at if prev is None else cat([at * prev, ones], dim=-2)  # [..., t+1, D]
        prev = P
        if theta is not None:  # times Re e^{i (Phi_t - Phi_s)}
            P = P * (
                cos_phi[..., t : t + 1, :] * cos_phi[..., : t + 1, :]
                + sin_phi[..., t : t + 1, :] * sin_phi[..., : t + 1, :]
            )
        scores = (q[..., t : t + 1, :] * k[..., : t + 1, :] * P).sum(-1)  # [..., t + 1]
        rows.append((scores.unsqueeze(-1) * v[..., : t + 1, :]).sum(-2))  # [..., Dv]
    return stack(rows, dim=-2)


def gateloop_associative(q, k, v, a, theta=None):
    """(y, h_{T-1}) by the parallel form, on arrays (forward only): all states at once.

    h_t is the second component of (a_0, b_0) . ... . (a_t, b_t), b_t = k_t v_t^T, under
    (a1, b1) . (a2, b2) = (a1 a2, a2 b1 + b2) (step 1, then step 2). Hillis-Steele: after
    round r, element t holds the product of elements t - 2^r + 1 .. t; log2(T) rounds of
    elementwise work on [..., T, D, Dv]. Inputs: arrays (or Tensors, read as arrays). With
    ``theta``, the pairs are complex (alpha_t = a_t e^{i theta_t}, complex multiplication in
    the array module's complex dtype), y = Re(h)^T q, and h_{T-1} is returned complex.
    """
    q, k, v, a, theta = (x.data if isinstance(x, Tensor) else x for x in (q, k, v, a, theta))
    xp = get_array_module(q)
    T = q.shape[-2]
    if theta is not None:
        a = a * xp.exp(1j * theta)  # alpha_t, complex
    A = a[..., :, :, None] + xp.zeros(v.shape[:-2] + (1, 1, v.shape[-1]), a.dtype)
    Bm = (k[..., :, :, None] * v[..., :, None, :]).astype(a.dtype)  # [..., T, D, Dv]
    offset = 1
    while offset < T:  # (A, B)[t] <- (A, B)[t - offset] . (A, B)[t]
        A_prev, B_prev = A[..., :-offset, :, :], Bm[..., :-offset, :, :]
        Bm = xp.concatenate(
            [Bm[..., :offset, :, :], A[..., offset:, :, :] * B_prev + Bm[..., offset:, :, :]],
            axis=-3,
        )
        A = xp.concatenate([A[..., :offset, :, :], A[..., offset:, :, :] * A_prev], axis=-3)
        offset *= 2
    y = xp.einsum("...td,...tde->...te", q, Bm.real if theta is not None else Bm)
    return y, Bm[..., -1, :, :]
