"""Causal linear attention (Katharopoulos et al. 2020, "Transformers are RNNs"), one Function.

With the feature map phi(x) = elu(x) + 1 (positive, so the normalizer never vanishes),
for one batch entry and head (q_i, k_i: [D], v_i: [Dv], i = 0 .. T-1):

    Q_i = phi(q_i),  K_j = phi(k_j)
    S_i = sum_{j<=i} K_j v_j^T   [D, Dv],      z_i = sum_{j<=i} K_j   [D]     (running sums)
    o_i = Q_i^T S_i / (Q_i . z_i + eps)

which is softmax attention with exp(q.k) replaced by phi(q).phi(k): O(T D Dv) time and
O(D Dv) state instead of O(T^2). The parallel (quadratic) form, used as the reference in
tests, is  o = (tril(Q K^T) V) / (tril(Q K^T) 1 + eps).

Forward and backward run over chunks of C steps (``chunk_size``): inside a chunk the masked
[C, C] product, across chunks the running sums (C = 1 is the pure recurrence). No [T, T]
array is ever formed. With num_i = Q_i^T S_i, den_i = Q_i . z_i + eps and the cotangent do_i:

    dnum_i = do_i / den_i,      dden_i = -(do_i . o_i) / den_i
    dQ_i   = S_i dnum_i + dden_i z_i
    R_j    = sum_{i>=j} Q_i dnum_i^T,   r_j = sum_{i>=j} dden_i Q_i       (reverse running sums)
    dK_j   = R_j v_j + r_j,             dV_j = R_j^T K_j
    dq     = dQ phi'(q),  dk = dK phi'(k),   phi'(x) = 1 (x > 0), exp(x) (x <= 0)

The forward saves q, k, v, the output, den and the states (S, z) entering each chunk
(O(T/C D Dv) memory); the backward recomputes phi and reverses the chunks.
"""

from __future__ import annotations

from tinyllm.backend import get_array_module
from tinyllm.function import Function
from tinyllm.functional._util import check_float
from tinyllm.kernels.arrays import compute_dtype

__all__ = ["causal_linear_attention"]

_OP = "causal_linear_attention"


def _phi(xp, x):
    """elu(x) + 1: x + 1 for x > 0, exp(x) otherwise (exp of min(x, 0): no overflow)."""
    return xp.where(x > 0, x + 1, xp.exp(xp.minimum(x, 0)))


def _dphi(xp, x):
    return xp.where(x > 0, 1, xp.exp(xp.minimum(x, 0))).astype(x.dtype, copy=False)


def _tril(xp, n: int, dtype):
    return xp.tril(xp.ones((n, n), dtype=dtype))


def _swap(x):
    """Transpose the last two axes."""
    return x.swapaxes(-1, -2)


class CausalLinearAttention(Function):
    @staticmethod
    def forward(ctx, q, k, v, eps, chunk_size):
        # q, k: [..., T, D]; v: [..., T, Dv]
        xp = get_array_module(q)
        ctx.dtype, work = q.dtype, compute_dtype(q.dtype)
        q, k, v = (a.astype(work, copy=False) for a in (q, k, v))
        Q, K = _phi(xp, q), _phi(xp, k)
        *lead, T, D = q.shape
        Dv = v.shape[-1]
        S = xp.zeros((*lead, D, Dv), work)
        z = xp.zeros((*lead, 1, D), work)
        out = xp.empty((*lead, T, Dv), work)
        den = xp.empty((*lead, T, 1), work)
        states = []
        for a in range(0, T, chunk_size):
            b = min(a + chunk_size, T)
            Qc, Kc, Vc = Q[..., a:b, :], K[..., a:b, :], v[..., a:b, :]
            states.append((S, z))
            A = (Qc @ _swap(Kc)) * _tril(xp, b - a, work)  # [.., C, C]: Q_i . K_j, j <= i
            num = Qc @ S + A @ Vc
            den[..., a:b, :] = (Qc * z).sum(-1, keepdims=True) + A.sum(-1, keepdims=True) + eps
            out[..., a:b, :] = num / den[..., a:b, :]
            S = S + _swap(Kc) @ Vc
            z = z + Kc.sum(-2, keepdims=True)
        ctx.save_for_backward(q, k, v, out, den)
        ctx.states = states
        ctx.chunk_size = chunk_size
        return out.astype(ctx.dtype, copy=False)

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, den = ctx.saved_tensors
        xp = get_array_module(q)
        work = q.dtype
        dout = dout.astype(work, copy=False)
        Q, K = _phi(xp, q), _phi(xp, k)
        T, C = q.shape[-2], ctx.chunk_size
        dnum = dout / den  # [.., T, Dv]
        dden = -(dout * out).sum(-1, keepdims=True) / den  # [.., T, 1]
        dQ, dK, dV = xp.empty_like(Q), xp.empty_like(K), xp.empty_like(v)
        R = xp.zeros(ctx.states[0][0].shape, work)  # sum over later chunks of Q_i dnum_i^T
        r = xp.zeros(ctx.states[0][1].shape, work)  # sum over later chunks of dden_i Q_i
        starts = list(range(0, T, C))
        for c in reversed(range(len(starts))):
            a = starts[c]
            b = min(a + C, T)
            S, z = ctx.states[c]
            Qc, Kc, Vc = Q[..., a:b, :], K[..., a:b, :], v[..., a:b, :]
            gn, gd = dnum[..., a:b, :], dden[..., a:b, :]
            mask = _tril(xp, b - a, work)
            A = (Qc @ _swap(Kc)) * mask
            # dA_ij = dnum_i . v_j + dden_i for j <= i (A_ij = Q_i . K_j)
            G = (gn @ _swap(Vc) + gd) * mask
            dQ[..., a:b, :] = G @ Kc + gn @ _swap(S) + gd * z
            dK[..., a:b, :] = _swap(G) @ Qc + Vc @ _swap(R) + r
            dV[..., a:b, :] = _swap(A) @ gn + Kc @ R
            R = R + _swap(Qc) @ gn
            r = r + (gd * Qc).sum(-2, keepdims=True)
        needs = ctx.needs_input_grad
        dtype = ctx.dtype
        dq = (dQ * _dphi(xp, q)).astype(dtype, copy=False) if needs[0] else None
        dk = (dK * _dphi(xp, k)).astype(dtype, copy=False) if needs[1] else None
        dv = dV.astype(dtype, copy=False) if needs[2] else None
        return dq, dk, dv, None, None


def causal_linear_attention_parallel(q, k, v, eps: float = 1e-6):
    """The quadratic (masked) form of ``causal_linear_attention`` in primitive tinyllm ops,
    differentiated by the engine's autograd: the reference the tests hold the Function to.

        o = (tril(Q K^T) V) / (tril(Q K^T) 1 + eps),   Q = elu(q) + 1, K = elu(k) + 1

    Forms the [T, T] matrix: for checking, not for long inputs. Not exported from
    ``tinyllm.functional``.
    """
    from tinyllm.functional.indexing import tril
    from tinyllm.functional.pointwise import exp, minimum, where

    def phi(x):
        return where(x > 0, x + 1, exp(minimum(x, x * 0)))

    A = tril(phi(q) @ phi(k).transpose(-1, -2))
    return (A @ v) / (A.sum(-1, keepdim=True) + eps)


def causal_linear_attention(q, k, v, eps: float = 1e-6, chunk_size: int = 64):
    """Causal linear attention with phi = elu + 1 (Katharopoulos et al. 2020).

    q, k: [..., T, D]; v: [..., T, Dv] (same leading dims, e.g. [B, H, T, D], no
    broadcasting). Returns [..., T, Dv]:

        o_i = phi(q_i)^T (sum_{j<=i} phi(k_j) v_j^T) / (phi(q_i) . sum_{j<=i} phi(k_j) + eps)

    computed by running sums over chunks of ``chunk_size`` steps (no [T, T] array); the
    backward is hand-written (module docstring). float16/bfloat16 compute in float32.

    With one key the output is that key's value (eps = 0):

    >>> import tinyllm, tinyllm.functional as F
    >>> x = tinyllm.tensor([[1.0, -2.0]])
    >>> F.causal_linear_attention(x, x, tinyllm.tensor([[3.0]]), eps=0.0)
    tensor([[3.]])
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_float(f"{_OP}: {name}", t)
        if t.ndim < 2 or t.shape[-2] == 0:
            raise ValueError(f"{_OP}: {name} must be [..., T, D] with T >= 1, got {tuple(t.shape)}")
    if tuple(k.shape) != tuple(q.shape):
        raise ValueError(f"{_OP}: k of shape {tuple(k.shape)} must match q {tuple(q.shape)}")
    if tuple(v.shape[:-1]) != tuple(q.shape[:-1]):
        raise ValueError(
            f"{_OP}: v of shape {tuple(v.shape)} must be [..., T, Dv] with the leading dims "
            f"of q {tuple(q.shape)}"
        )
    if len({q.dtype, k.dtype, v.dtype}) > 1:
        raise TypeError(f"{_OP}: q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{_OP}: chunk_size must be a positive int, got {chunk_size!r}")
    if eps < 0:
        raise ValueError(f"{_OP}: eps must be >= 0, got {eps}")
    return CausalLinearAttention.apply(q, k, v, float(eps), chunk_size)
