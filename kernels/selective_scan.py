"""The selective scan of Mamba (S6), forward and backward, and its associative-scan form.

Shapes (mamba_ssm's names): u, delta, z, out [batch, dim, L]; A [dim, N]; B, C
[batch, G, N, L] (G groups of dim / G channels share one B_t and C_t); D, delta_bias [dim].
For one batch row b and channel d (of group g) the scan runs over t = 0 .. L-1, with
N states in parallel:

    Delta_t = softplus(delta_t + delta_bias)   (or delta_t + delta_bias without softplus)
    a_t     = exp(Delta_t A)                   ZOH discretization of A            [N]
    b_t     = Delta_t B_t u_t                  Euler discretization of B (mamba's)  [N]
    h_t     = a_t * h_{t-1} + b_t,  h_{-1} = 0                                       [N]
    y_t     = <C_t, h_t> + D u_t
    out_t   = y_t * silu(z_t)                  (when z is given)

The forward returns (out, last_state = h_{L-1} [batch, dim, N], states [batch, dim,
n_chunks, N]): the state entering each chunk of ``chunk`` steps (h_{k chunk - 1}, zeros for
chunk 0). Nothing of size L x N is kept: the backward recomputes h inside one chunk at a
time from those states, as mamba_ssm's CUDA kernel does.

Backward (the reverse scan), with dy_t = dout_t silu(z_t) and g_t = dLoss/dh_t:

    g_{L-1} = C_{L-1} dy_{L-1} + dlast;   g_t = C_t dy_t + a_{t+1} * g_{t+1}
    du_t     = D dy_t + Delta_t <g_t, B_t>          dD   = sum_{b,t} dy_t u_t
    dDelta_t = <g_t, B_t u_t + A * a_t * h_{t-1}>   dA   = sum_{b,t} g_t Delta_t a_t h_{t-1}
    dB_t     = sum_{d in g} g_t Delta_t u_t         dC_t = sum_{d in g} dy_t h_t
    dz_t     = dout_t (y_t + D u_t) silu'(z_t),     silu'(z) = s (1 + z (1 - s)), s = sigmoid(z)
    ddelta   = dDelta * sigmoid(delta + delta_bias) (softplus; 1 above 20, where softplus
               is the identity, as torch's threshold),   ddelta_bias = sum_{b,t} ddelta

The discretization step Delta and its chain rule are array code shared by the tiers (in the
public functions below); the tiers run the scan itself. dB and dC are sums over the
channels of a group: the Numba and CUDA bodies split each group's channels into S fixed
slices, each task (b, g, slice) sums into its own row of a [batch, G, S, L, N] scratch,
and the slices are added in order afterwards, so results do not depend on thread counts.

Tiers: reference (below, array code on xp; a Python loop over t), numba
(``selective_scan_numba.py``: tasks in ``prange``, sequential over t), cuda
(``selective_scan.cu``: one thread per (b, d) forward, per (b, g, slice) backward).
``selective_scan_associative`` is the parallel form: a Hillis-Steele scan over t of the
pairs (a_t, b_t) under (a1, b1) . (a2, b2) = (a1 a2, a2 b1 + b2), in log2(L) steps.
"""

from __future__ import annotations

import functools

import numpy as np

from tinyllm.backend import get_array_module
from tinyllm.kernels import dispatch
from tinyllm.kernels.arrays import Array, check_float, contiguous, upcast
from tinyllm.kernels.cuda_loader import function, with_cuda

__all__ = [
    "CHUNK",
    "discretization_step",
    "selective_scan_associative",
    "selective_scan_backward",
    "selective_scan_forward",
]

_CU = "selective_scan.cu"
CHUNK = 64  # steps between the states the forward saves for the backward
_THREADS = 128
SOFTPLUS_THRESHOLD = 20.0  # softplus(x) = x above it (torch's default threshold)


@functools.cache
def _numba():
    from tinyllm.kernels import selective_scan_numba

    return selective_scan_numba


def _cast(x, dtype):
    return None if x is None else x.astype(dtype, copy=False)


def _silu(z):
    return z / (1 + get_array_module(z).exp(-z))


def discretization_step(delta: Array, delta_bias: Array | None, softplus: bool) -> Array:
    """Delta = softplus(delta + delta_bias[:, None]) (or without softplus), in compute dtype."""
    xp = get_array_module(delta)
    dt = upcast(delta)
    if delta_bias is not None:
        dt = dt + _cast(delta_bias, dt.dtype)[:, None]
    if softplus:
        dt = xp.where(dt > SOFTPLUS_THRESHOLD, dt, xp.log1p(xp.exp(xp.minimum(dt, 20.0))))
    return dt


def _groups(X, dim: int):
    """B or C [batch, G, N, L] repeated to one row per channel: [batch, dim, N, L]."""
    xp = get_array_module(X)
    return X[:, xp.arange(dim) // (dim // X.shape[1])]


def _n_chunks(L: int, chunk: int) -> int:
    return max(1, -(-L // chunk))


# ---------------------------------------------------------------- reference bodies
def _reference_forward(u, dt, A, B, C, D, z, chunk):
    xp = get_array_module(u)
    acc = dt.dtype
    batch, dim, L = u.shape
    N = A.shape[1]
    uu, AA = upcast(u), _cast(A, acc)
    Bd, Cd = _groups(_cast(B, acc), dim), _groups(_cast(C, acc), dim)  # [batch, dim, N, L]
    h = xp.zeros((batch, dim, N), acc)  # h_{-1} = 0
    y = xp.empty((batch, dim, L), acc)
    states = xp.empty((batch, dim, _n_chunks(L, chunk), N), acc)
    for t in range(L):
        if t % chunk == 0:
            states[:, :, t // chunk] = h
        a = xp.exp(dt[:, :, t, None] * AA)  # a_t = exp(Delta_t A)              [batch, dim, N]
        h = a * h + (dt[:, :, t] * uu[:, :, t])[..., None] * Bd[..., t]  # + Delta_t B_t u_t
        y[:, :, t] = (h * Cd[..., t]).sum(-1)  # y_t = <C_t, h_t>
    if D is not None:
        y = y + _cast(D, acc)[:, None] * uu
    if z is not None:
        y = y * _silu(upcast(z))
    return y, h, states


def _reference_backward(dout, dlast, u, dt, A, B, C, D, z, states, chunk):
    xp = get_array_module(u)
    acc = dt.dtype
    batch, dim, L = u.shape
    N, G = A.shape[1], B.shape[1]
    uu, AA, dy_all = upcast(u), _cast(A, acc), upcast(dout)
    Bd, Cd = _groups(_cast(B, acc), dim), _groups(_cast(C, acc), dim)  # [batch, dim, N, L]
    DD = xp.zeros(dim, acc) if D is None else _cast(D, acc)
    if z is not None:
        zz = upcast(z)
        sig = 1 / (1 + xp.exp(-zz))
        dy_all = dy_all * zz * sig  # out = y silu(z)  =>  dy = dout silu(z)
        dz = xp.empty((batch, dim, L), acc)
    du, ddt = xp.empty((batch, dim, L), acc), xp.empty((batch, dim, L), acc)
    dA = xp.zeros((batch, dim, N), acc)
    dBd, dCd = xp.empty((batch, dim, N, L), acc), xp.empty((batch, dim, N, L), acc)
    g = xp.zeros((batch, dim, N), acc) if dlast is None else upcast(dlast).copy()
    for k in reversed(range(states.shape[2])):
        t0, t1 = k * chunk, min(L, (k + 1) * chunk)
        hs = xp.empty((t1 - t0 + 1, batch, dim, N), acc)  # hs[i] = h_{t0 + i - 1}
        hs[0] = states[:, :, k]
        for t in range(t0, t1):  # recompute the chunk's states from the saved one
            a = xp.exp(dt[:, :, t, None] * AA)
            hs[t - t0 + 1] = a * hs[t - t0] + (dt[:, :, t] * uu[:, :, t])[..., None] * Bd[..., t]
        for t in reversed(range(t0, t1)):
            h_prev, h = hs[t - t0], hs[t - t0 + 1]
            a = xp.exp(dt[:, :, t, None] * AA)  # [batch, dim, N]
            dy = dy_all[:, :, t]  # [batch, dim]
            if z is not None:  # out = (y + D u) silu(z)  =>  dz = dout (y + D u) silu'(z)
                pre = (h * Cd[..., t]).sum(-1) + DD * uu[:, :, t]
                s = sig[:, :, t]
                dz[:, :, t] = upcast(dout)[:, :, t] * pre * s * (1 + zz[:, :, t] * (1 - s))
            # y_t = <C_t, h_t>  =>  dC_t = dy h_t and g_t = C_t dy_t + a_{t+1} g_{t+1}
            dCd[..., t] = dy[..., None] * h
            g = g + Cd[..., t] * dy[..., None]
            # h_t = a_t h_{t-1} + Delta_t B_t u_t, a_t = exp(Delta_t A)
            du[:, :, t] = dt[:, :, t] * (g * Bd[..., t]).sum(-1) + DD * dy  # + D u_t term
            dBd[..., t] = g * (dt[:, :, t] * uu[:, :, t])[..., None]
            dA += g * dt[:, :, t, None] * a * h_prev
            ddt[:, :, t] = (g * (Bd[..., t] * uu[:, :, t, None] + AA * a * h_prev)).sum(-1)
            g = a * g  # carried to step t - 1
    dB = dBd.reshape(batch, G, dim // G, N, L).sum(2)  # sum over the channels of a group
    dC = dCd.reshape(batch, G, dim // G, N, L).sum(2)
    dD = None if D is None else (dy_all * uu).sum((0, 2))
    return du, ddt, dA.sum(0), dB, dC, dD, dz if z is not None else None


# ---------------------------------------------------------------- numba and cuda bodies
def _slices(dim: int, G: int, cap: int) -> int:
    """S: how many fixed slices each group's channels are cut into in the backward."""
    return max(1, min(dim // G, cap))


def _kernel_inputs(xp, u, dt, A, B, C, D, z):
    """Everything in the compute dtype, C-contiguous; B and C as [batch, G, L, N]."""
    acc = dt.dtype
    dim = u.shape[1]
    uu, dtc, AA = contiguous(_cast(u, acc)), contiguous(dt), contiguous(_cast(A, acc))
    Bt = xp.ascontiguousarray(_cast(B, acc).transpose(0, 1, 3, 2))  # [batch, G, L, N]
    Ct = xp.ascontiguousarray(_cast(C, acc).transpose(0, 1, 3, 2))
    DD = xp.zeros(dim, acc) if D is None else contiguous(_cast(D, acc))
    zz = uu if z is None else contiguous(_cast(z, acc))  # uu stands in, unread
    return uu, dtc, AA, Bt, Ct, DD, zz


def _outputs_forward(xp, u, A, acc, chunk):
    batch, dim, L = u.shape
    N = A.shape[1]
    out = xp.empty((batch, dim, L), acc)
    last = xp.empty((batch, dim, N), acc)
    states = xp.empty((batch, dim, _n_chunks(L, chunk), N), acc)
    return out, last, states


def _outputs_backward(xp, u, A, B, acc, S):
    batch, dim, L = u.shape
    N, G = A.shape[1], B.shape[1]
    du, ddt, dz = (xp.empty((batch, dim, L), acc) for _ in range(3))
    dA_parts, dD_parts = xp.empty((batch, dim, N), acc), xp.empty((batch, dim), acc)
    dB_parts, dC_parts = (xp.empty((batch, G, S, L, N), acc) for _ in range(2))
    return du, ddt, dz, dA_parts, dD_parts, dB_parts, dC_parts


def _reduce_backward(du, ddt, dz, dA_parts, dD_parts, dB_parts, dC_parts, D, z):
    # the slices of each group, then the batch rows, added in a fixed order
    dB = dB_parts.sum(axis=2).transpose(0, 1, 3, 2)  # [batch, G, N, L]
    dC = dC_parts.sum(axis=2).transpose(0, 1, 3, 2)
    dD = None if D is None else dD_parts.sum(axis=0)
    return du, ddt, dA_parts.sum(axis=0), dB, dC, dD, dz if z is not None else None


def _dlast_array(xp, dlast, u, A, acc):
    if dlast is None:
        return xp.zeros((u.shape[0], u.shape[1], A.shape[1]), acc)
    return contiguous(_cast(dlast, acc))


def _numba_forward(u, dt, A, B, C, D, z, chunk):
    args = _kernel_inputs(np, u, dt, A, B, C, D, z)
    out, last, states = _outputs_forward(np, u, A, dt.dtype, chunk)
    batch, dim, L = u.shape
    kernel = dispatch.numba_for_work(_numba().scan_forward, batch * dim * L * A.shape[1])
    kernel(*args, z is not None, chunk, out, last, states)
    return out, last, states


def _numba_backward(dout, dlast, u, dt, A, B, C, D, z, states, chunk):
    acc = dt.dtype
    batch, dim, L = u.shape
    S = _slices(dim, B.shape[1], 4)
    uu, dtc, AA, Bt, Ct, DD, zz = _kernel_inputs(np, u, dt, A, B, C, D, z)
    grads = _outputs_backward(np, u, A, B, acc, S)
    kernel = dispatch.numba_for_work(_numba().scan_backward, batch * dim * L * A.shape[1])
    kernel(
        contiguous(_cast(dout, acc)), _dlast_array(np, dlast, u, A, acc), uu, dtc, AA, Bt, Ct,
        DD, zz, z is not None, chunk, contiguous(states), *grads,
    )  # fmt: skip
    return _reduce_backward(*grads, D, z)


def _cuda_forward(u, dt, A, B, C, D, z, chunk):
    import cupy

    acc = dt.dtype
    args = _kernel_inputs(cupy, u, dt, A, B, C, D, z)
    out, last, states = _outputs_forward(cupy, u, A, acc, chunk)
    batch, dim, L = u.shape
    N, G = A.shape[1], B.shape[1]
    tasks = batch * dim
    kernel = function(_CU, "scan_forward", acc)
    dims = (np.int32(batch), np.int32(dim), np.int32(L), np.int32(N), np.int32(G))
    kernel(
        ((tasks + _THREADS - 1) // _THREADS,), (_THREADS,),
        (*args, *dims, np.int32(z is not None), np.int32(chunk), out, last, states),
    )  # fmt: skip
    return out, last, states


def _cuda_backward(dout, dlast, u, dt, A, B, C, D, z, states, chunk):
    import cupy

    acc = dt.dtype
    batch, dim, L = u.shape
    N, G = A.shape[1], B.shape[1]
    S = _slices(dim, G, 64)  # more slices than on a CPU: one thread per (b, g, slice)
    uu, dtc, AA, Bt, Ct, DD, zz = _kernel_inputs(cupy, u, dt, A, B, C, D, z)
    grads = _outputs_backward(cupy, u, A, B, acc, S)
    tasks = batch * G * S
    hs = cupy.empty((tasks, chunk + 1, N), acc)  # per task: h of one chunk, recomputed
    decay = cupy.empty((tasks, chunk, N), acc)  # per task: a_t of one chunk
    carry = cupy.empty((tasks, N), acc)  # per task: the adjoint state g
    kernel = function(_CU, "scan_backward", acc)
    dims = (np.int32(batch), np.int32(dim), np.int32(L), np.int32(N), np.int32(G), np.int32(S))
    kernel(
        ((tasks + _THREADS - 1) // _THREADS,), (_THREADS,),
        (cupy.ascontiguousarray(_cast(dout, acc)), _dlast_array(cupy, dlast, u, A, acc), uu,
         dtc, AA, Bt, Ct, DD, zz, *dims, np.int32(z is not None), np.int32(chunk),
         cupy.ascontiguousarray(states), hs, decay, carry, *grads),
    )  # fmt: skip
    return _reduce_backward(*grads, D, z)


_FORWARD = dispatch.declare(
    with_cuda(
        {"reference": _reference_forward, "numba": _numba_forward, "cuda": _cuda_forward}, _CU
    ),
    "selective_scan_forward",
)
_BACKWARD = dispatch.declare(
    with_cuda(
        {"reference": _reference_backward, "numba": _numba_backward, "cuda": _cuda_backward},
        _CU,
    ),
    "selective_scan_backward",
)


# ---------------------------------------------------------------- public functions
def _check(op: str, u, delta, A, B, C, D, z, delta_bias) -> None:
    for name, x in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D),
                    ("z", z), ("delta_bias", delta_bias)):  # fmt: skip
        if x is not None:
            check_float(op, name, x)
    if u.ndim != 3:
        raise ValueError(f"{op}: u must be [batch, dim, L], got shape {tuple(u.shape)}")
    batch, dim, L = u.shape
    if L == 0:
        raise ValueError(f"{op}: u must have L >= 1 steps, got shape {tuple(u.shape)}")
    for name, x in (("delta", delta), ("z", z)):
        if x is not None and x.shape != u.shape:
            raise ValueError(f"{op}: {name} {tuple(x.shape)} must match u {tuple(u.shape)}")
    if A.ndim != 2 or A.shape[0] != dim:
        raise ValueError(f"{op}: A must be [dim, N] = [{dim}, N], got {tuple(A.shape)}")
    N = A.shape[1]
    for name, x in (("B", B), ("C", C)):
        if x.ndim != 4 or x.shape[0] != batch or x.shape[2:] != (N, L) or dim % x.shape[1]:
            raise ValueError(
                f"{op}: {name} must be [batch, G, N, L] = [{batch}, G, {N}, {L}] with G "
                f"dividing dim {dim}, got {tuple(x.shape)}"
            )
    for name, x in (("D", D), ("delta_bias", delta_bias)):
        if x is not None and tuple(x.shape) != (dim,):
            raise ValueError(f"{op}: {name} must have shape ({dim},), got {tuple(x.shape)}")


def selective_scan_forward(
    u: Array,
    delta: Array,
    A: Array,
    B: Array,
    C: Array,
    D: Array | None = None,
    z: Array | None = None,
    delta_bias: Array | None = None,
    delta_softplus: bool = False,
    chunk: int = CHUNK,
) -> tuple[Array, Array, Array]:
    """(out [batch, dim, L], last_state [batch, dim, N], states [batch, dim, n_chunks, N]).

    out is in u's dtype; last_state and states in the compute dtype (float32 or float64).
    B, C: [batch, G, N, L]. See the module docstring for the math.
    """
    _check("selective_scan_forward", u, delta, A, B, C, D, z, delta_bias)
    xp = get_array_module(u)
    dt = discretization_step(delta, delta_bias, delta_softplus)  # Delta [batch, dim, L]
    out, last, states = dispatch.run(
        "selective_scan_forward", xp, u.dtype, _FORWARD, u, dt, A, B, C, D, z, int(chunk)
    )
    return out.astype(u.dtype, copy=False), last, states


def selective_scan_backward(
    dout: Array,
    u: Array,
    delta: Array,
    A: Array,
    B: Array,
    C: Array,
    states: Array,
    D: Array | None = None,
    z: Array | None = None,
    delta_bias: Array | None = None,
    delta_softplus: bool = False,
    dlast: Array | None = None,
    chunk: int = CHUNK,
) -> tuple:
    """(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias), each in its input's dtype (None for an
    absent optional input), from dout [batch, dim, L], the optional gradient ``dlast``
    [batch, dim, N] of the last state, the forward's inputs and its saved ``states``."""
    _check("selective_scan_backward", u, delta, A, B, C, D, z, delta_bias)
    if dout.shape != u.shape:
        raise ValueError(f"selective_scan_backward: dout {dout.shape} must match u {u.shape}")
    xp = get_array_module(u)
    dt = discretization_step(delta, delta_bias, delta_softplus)
    du, ddt, dA, dB, dC, dD, dz = dispatch.run(
        "selective_scan_backward", xp, u.dtype, _BACKWARD, dout, dlast, u, dt, A, B, C, D, z,
        states, int(chunk),
    )  # fmt: skip
    if delta_softplus:  # Delta = softplus(x), x = delta + delta_bias  =>  dx = dDelta sigmoid(x)
        x = upcast(delta)
        if delta_bias is not None:
            x = x + _cast(delta_bias, x.dtype)[:, None]
        ddt = xp.where(x > SOFTPLUS_THRESHOLD, ddt, ddt / (1 + xp.exp(-x)))
    ddelta_bias = None if delta_bias is None else ddt.sum(axis=(0, 2)).astype(delta_bias.dtype)
    return (
        du.astype(u.dtype, copy=False),
        ddt.astype(delta.dtype, copy=False),
        dA.astype(A.dtype, copy=False),
        dB.astype(B.dtype, copy=False),
        dC.astype(C.dtype, copy=False),
        None if D is None else dD.astype(D.dtype, copy=False),
        None if z is None else dz.astype(z.dtype, copy=False),
        ddelta_bias,
    )


def selective_scan_associative(
    u: Array,
    delta: Array,
    A: Array,
    B: Array,
    C: Array,
    D: Array | None = None,
    z: Array | None = None,
    delta_bias: Array | None = None,
    delta_softplus: bool = False,
) -> tuple[Array, Array]:
    """(out, last_state) of the selective scan by its parallel form: all h_t at once.

    h_t = a_t h_{t-1} + b_t is the second component of the prefix "product"
    (a_0, b_0) . (a_1, b_1) . ... . (a_t, b_t) under the associative operator
    (a1, b1) . (a2, b2) = (a1 a2, a2 b1 + b2) (apply step 1, then step 2). Hillis-Steele:
    after round r, element t holds the product of elements t - 2^r + 1 .. t; log2(L)
    rounds of elementwise work on [batch, dim, L, N] (what a GPU runs in parallel over t).
    Forward only: the oracle the sequential scan is checked against.
    """
    _check("selective_scan_associative", u, delta, A, B, C, D, z, delta_bias)
    xp = get_array_module(u)
    dt = discretization_step(delta, delta_bias, delta_softplus)  # [batch, dim, L]
    acc = dt.dtype
    dim, L = u.shape[1], u.shape[2]
    uu = upcast(u)
    Bd = _groups(_cast(B, acc), dim).transpose(0, 1, 3, 2)  # [batch, dim, L, N]
    Cd = _groups(_cast(C, acc), dim).transpose(0, 1, 3, 2)
    a = xp.exp(dt[..., None] * _cast(A, acc)[:, None, :])  # a_t = exp(Delta_t A)
    b = (dt * uu)[..., None] * Bd  # b_t = Delta_t B_t u_t
    offset = 1
    while offset < L:  # (a, b)[t] <- (a, b)[t - offset] . (a, b)[t]
        a_prev, b_prev = a[:, :, :-offset], b[:, :, :-offset]
        b = xp.concatenate([b[:, :, :offset], a[:, :, offset:] * b_prev + b[:, :, offset:]], 2)
        a = xp.concatenate([a[:, :, :offset], a[:, :, offset:] * a_prev], 2)
        offset *= 2
    h = b  # [batch, dim, L, N]: every state
    y = (h * Cd).sum(-1)
    if D is not None:
        y = y + _cast(D, acc)[:, None] * uu
    if z is not None:
        y = y * _silu(upcast(z))
    return y.astype(u.dtype, copy=False), h[:, :, -1]
