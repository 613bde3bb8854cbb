"""State-space ops of Mamba: the selective scan (S6) and the causal depthwise conv1d.

selective_scan (mamba_ssm's ``selective_scan_fn``; one Function). For batch row b,
channel d and t = 0 .. L-1, with N states:

    Delta_t = softplus(delta_t + delta_bias)     (delta_softplus; else delta_t + delta_bias)
    h_t     = exp(Delta_t A) * h_{t-1} + Delta_t B_t u_t,     h_{-1} = 0     (ZOH for A)
    y_t     = <C_t, h_t> + D u_t,     out_t = y_t * silu(z_t)                (z optional)

Backward, the reverse scan (no autograd through the L steps), dy_t = dout_t silu(z_t):

    g_t      = C_t dy_t + exp(Delta_{t+1} A) * g_{t+1}      (g_{L-1} = C dy + dlast_state)
    du_t     = D dy_t + Delta_t <g_t, B_t>,        dD = sum dy_t u_t
    dDelta_t = <g_t, B_t u_t + A exp(Delta_t A) h_{t-1}>,    dA = sum g_t Delta_t a_t h_{t-1}
    dB_t     = g_t Delta_t u_t,  dC_t = dy_t h_t    (summed over the channels sharing them)
    ddelta   = dDelta sigmoid(delta + delta_bias) (with softplus),  ddelta_bias = sum ddelta
    dz_t     = dout_t (y_t + D u_t) silu'(z_t)

The forward saves the inputs and the states entering each chunk of 64 steps
([batch, dim, L/64, N]); the backward recomputes h inside one chunk at a time. The scan
runs ``tinyllm.kernels`` (``kernels/selective_scan.py``: reference, Numba and CUDA tiers).

causal_conv1d (``causal_conv1d_fn`` of Dao-AILab/causal-conv1d; array code, no kernel):
a depthwise convolution of x [batch, dim, L] with weight [dim, W], seeing only the past:

    pre_t = bias + sum_{k=0}^{W-1} weight[:, k] x_{t - (W-1) + k}    (x_s = 0 for s < 0)
    out_t = pre_t, or silu(pre_t) with activation="silu"

Backward, with dpre = dout (* silu'(pre)):  dx_s = sum_k weight[:, k] dpre_{s + (W-1) - k},
dweight[:, k] = sum_{b,t} dpre_t x_{t-(W-1)+k},  dbias = sum_{b,t} dpre_t.
"""

from __future__ import annotations

from tinyllm.backend import get_array_module
from tinyllm.function import Function
from tinyllm.functional._util import check_float
from tinyllm.kernels import selective_scan as scan_kernels
from tinyllm.kernels.arrays import compute_dtype

__all__ = ["causal_conv1d", "selective_scan"]


def _to_groups(X, batch: int, dim: int, L: int):
    """B or C as the kernels want it, [batch, G, N, L], from any of mamba's three forms."""
    xp = get_array_module(X)
    if X.ndim == 2:  # [dim, N]: constant over batch and time, one row per channel (G = dim)
        return xp.broadcast_to(X[None, :, :, None], (batch, dim, X.shape[1], L))
    if X.ndim == 3:  # [batch, N, L]: one group
        return X[:, None]
    return X  # [batch, G, N, L]


def _from_groups(dX, X):
    """The gradient of B or C in its own form (the inverse of ``_to_groups``)."""
    if X.ndim == 2:
        return dX.sum(axis=(0, 3))
    if X.ndim == 3:
        return dX[:, 0]
    return dX


class SelectiveScan(Function):
    """Runs ``tinyllm.kernels`` selective_scan_forward/backward (reference, Numba or CUDA)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
        # u, delta, z: [batch, dim, L]; A: [dim, N]; B, C: [dim, N] | [batch, (G,) N, L]
        batch, dim, L = u.shape
        Bg, Cg = _to_groups(B, batch, dim, L), _to_groups(C, batch, dim, L)
        out, last_state, states = scan_kernels.selective_scan_forward(
            u, delta, A, Bg, Cg, D, z, delta_bias, delta_softplus
        )
        # inputs, and states [batch, dim, n_chunks, N]: h entering each chunk of 64 steps
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, states)
        ctx.delta_softplus = delta_softplus
        if return_last_state:
            return out, last_state.astype(compute_dtype(u.dtype), copy=False)
        return out

    @staticmethod
    def backward(ctx, dout, dlast=None):
        u, delta, A, B, C, D, z, delta_bias, states = ctx.saved_tensors
        batch, dim, L = u.shape
        # h_t = exp(Delta_t A) h_{t-1} + Delta_t B_t u_t;  out_t = (<C_t, h_t> + D u_t) silu(z_t)
        #   =>  the reverse scan g_t = C_t dy_t + a_{t+1} g_{t+1} and its sums (module docstring)
        du, ddelta, dA, dB, dC, dD, dz, ddelta_bias = scan_kernels.selective_scan_backward(
            dout, u, delta, A, _to_groups(B, batch, dim, L), _to_groups(C, batch, dim, L),
            states, D, z, delta_bias, ctx.delta_softplus, dlast,
        )  # fmt: skip
        needs = ctx.needs_input_grad
        return (
            du if needs[0] else None,
            ddelta if needs[1] else None,
            dA if needs[2] else None,
            _from_groups(dB, B) if needs[3] else None,
            _from_groups(dC, C) if needs[4] else None,
            dD if D is not None and needs[5] else None,
            dz if z is not None and needs[6] else None,
            ddelta_bias if delta_bias is not None and needs[7] else None,
            None,
            None,
        )


class CausalConv1d(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, silu):
        # x: [batch, dim, L]; weight: [dim, W]; bias: [dim] or None
        xp = get_array_module(x)
        W, L = weight.shape[1], x.shape[2]
        xpad = xp.concatenate([xp.zeros(x.shape[:2] + (W - 1,), x.dtype), x], axis=2)
        pre = xp.zeros_like(x) if bias is None else xp.broadcast_to(bias[:, None], x.shape)
        for k in range(W):  # pre_t = bias + sum_k weight[:, k] x_{t-(W-1)+k}
            pre = pre + weight[:, k, None] * xpad[:, :, k : k + L]
        ctx.save_for_backward(x, weight, bias)  # pre is recomputed for silu's backward
        ctx.silu = silu
        return pre * (1 / (1 + xp.exp(-pre))) if silu else pre.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, dout):
        x, weight, bias = ctx.saved_tensors
        xp = get_array_module(x)
        W, L = weight.shape[1], x.shape[2]
        xpad = xp.concatenate([xp.zeros(x.shape[:2] + (W - 1,), x.dtype), x], axis=2)
        dpre = dout
        if ctx.silu:  # out = silu(pre)  =>  dpre = dout s (1 + pre (1 - s)), s = sigmoid(pre)
            pre = xp.zeros_like(x) if bias is None else xp.broadcast_to(bias[:, None], x.shape)
            for k in range(W):
                pre = pre + weight[:, k, None] * xpad[:, :, k : k + L]
            s = 1 / (1 + xp.exp(-pre))
            dpre = dout * s * (1 + pre * (1 - s))
        needs = ctx.needs_input_grad
        dx = dweight = dbias = None
        if needs[0]:  # pre_t += weight[:, k] xpad_{t+k}  =>  dxpad_{t+k} += weight[:, k] dpre_t
            dxpad = xp.zeros_like(xpad)
            for k in range(W):
                dxpad[:, :, k : k + L] += weight[:, k, None] * dpre
            dx = dxpad[:, :, W - 1 :]
        if needs[1]:  # dweight[:, k] = sum_{b,t} dpre_t xpad_{t+k}
            dweight = xp.stack(
                [(dpre * xpad[:, :, k : k + L]).sum(axis=(0, 2)) for k in range(W)], axis=1
            ).astype(weight.dtype, copy=False)
        if bias is not None and needs[2]:
            dbias = dpre.sum(axis=(0, 2)).astype(bias.dtype, copy=False)
        return dx, dweight, dbias, None


# ---------------------------------------------------------------- argument checks
def _shape(t) -> tuple:
    return tuple(t.shape)


def _check_scan(u, delta, A, B, C, D, z, delta_bias) -> None:
    op = "selective_scan"
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D),
                    ("z", z), ("delta_bias", delta_bias)):  # fmt: skip
        if t is not None:
            check_float(f"{op}: {name}", t)
    if u.ndim != 3 or u.shape[2] == 0:
        raise ValueError(f"{op}: u must be [batch, dim, L] with L >= 1, got {_shape(u)}")
    batch, dim, L = u.shape
    for name, t in (("delta", delta), ("z", z)):
        if t is not None and _shape(t) != _shape(u):
            raise ValueError(f"{op}: {name} of shape {_shape(t)} must match u {_shape(u)}")
    if A.ndim != 2 or A.shape[0] != dim:
        raise ValueError(f"{op}: A must be [dim, N] = [{dim}, N], got {_shape(A)}")
    N = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        ok = (
            (t.ndim == 2 and _shape(t) == (dim, N))
            or (t.ndim == 3 and _shape(t) == (batch, N, L))
            or (t.ndim == 4 and _shape(t)[::2] == (batch, N) and t.shape[3] == L
                and t.shape[1] > 0 and dim % t.shape[1] == 0)
        )  # fmt: skip
        if not ok:
            raise ValueError(
                f"{op}: {name} must be [dim, N] = [{dim}, {N}], [batch, N, L] = [{batch}, {N}, "
                f"{L}] or [batch, G, N, L] with G dividing dim {dim}; got {_shape(t)}"
            )
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and _shape(t) != (dim,):
            raise ValueError(f"{op}: {name} must have shape ({dim},), got {_shape(t)}")
    dtypes = {t.dtype for t in (u, delta, A, B, C, D, z, delta_bias) if t is not None}
    if len(dtypes) > 1:
        raise TypeError(f"{op}: all inputs must share one dtype, got {sorted(map(str, dtypes))}")


# ---------------------------------------------------------------- functional wrappers
def selective_scan(
    u,
    delta,
    A,
    B,
    C,
    D=None,
    z=None,
    delta_bias=None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
):
    """Mamba's selective scan (``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``).

    u, delta, z: [batch, dim, L]; A: [dim, N] (negative for a decaying state); B, C:
    [batch, N, L] (input-dependent), [batch, G, N, L] (G groups of channels) or [dim, N]
    (constant); D, delta_bias: [dim]. Returns out [batch, dim, L], and with
    ``return_last_state`` also h_{L-1} [batch, dim, N] (differentiable too). Real A only.

    With A = 0 nothing decays and (Delta = B = C = 1) the scan is a running sum of u:

    >>> import tinyllm, tinyllm.functional.ssm as S
    >>> u, ones = tinyllm.tensor([[[1.0, 2.0, 3.0]]]), tinyllm.ones(1, 1, 3)
    >>> S.selective_scan(u, ones, tinyllm.zeros(1, 1), ones, ones)
    tensor([[[1., 3., 6.]]])
    """
    _check_scan(u, delta, A, B, C, D, z, delta_bias)
    return SelectiveScan.apply(
        u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), bool(return_last_state)
    )


def causal_conv1d(x, weight, bias=None, activation: str | None = None):
    """Depthwise causal convolution (``causal_conv1d_fn``): x [batch, dim, L], weight
    [dim, W], bias [dim]; out_t sees x_{t-W+1} .. x_t only. ``activation``: None or
    "silu" (alias "swish"), fused.

    >>> import tinyllm, tinyllm.functional.ssm as S
    >>> x = tinyllm.tensor([[[1.0, 2.0, 3.0]]])
    >>> S.causal_conv1d(x, tinyllm.tensor([[1.0, 10.0]]))
    tensor([[[10., 21., 32.]]])
    """
    op = "causal_conv1d"
    check_float(f"{op}: x", x)
    if x.ndim != 3:
        raise ValueError(f"{op}: x must be [batch, dim, L], got {_shape(x)}")
    if weight.ndim != 2 or weight.shape[0] != x.shape[1] or weight.shape[1] < 1:
        raise ValueError(f"{op}: weight must be [dim, W] = [{x.shape[1]}, W], got {_shape(weight)}")
    if bias is not None and _shape(bias) != (x.shape[1],):
        raise ValueError(f"{op}: bias must have shape ({x.shape[1]},), got {_shape(bias)}")
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"{op}: activation must be None, 'silu' or 'swish', got {activation!r}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != x.dtype:
            raise TypeError(f"{op}: {name} has dtype {t.dtype} but x has {x.dtype}")
    return CausalConv1d.apply(x, weight, bias, activation is not None)
