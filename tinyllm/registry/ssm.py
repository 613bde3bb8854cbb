"""Registry entries for the state-space ops: selective_scan and causal_conv1d.

selective_scan's samples switch each optional input on and off (D, z, delta_bias,
delta_softplus, return_last_state) and cover the three forms of B and C ([batch, N, L],
[batch, G, N, L], [dim, N]), L = 1, and a sequence longer than one chunk of the saved
states (64 steps). The NumPy references are transcriptions of mamba_ssm's
``selective_scan_ref`` and of a causal ``Conv1d(groups=dim, padding=W-1)``; the
composites are loops of primitive tinyllm ops (exp, *, +, sum, stack) whose autograd must
equal the hand-written backwards.
"""

from __future__ import annotations

import numpy as np

import tinyllm.functional as F
from tinyllm.functional.ssm import causal_conv1d, selective_scan
from tinyllm.registry import OpInfo, SampleInput, register
from tinyllm.registry.samples import positive, randn


# ---------------------------------------------------------------- selective_scan
def _negative(rng, dtype, *shape):
    """A [dim, N]: -exp of a normal, as Mamba's A = -exp(A_log)."""
    return (-np.exp(0.5 * rng.standard_normal(shape))).astype(dtype)


def _scan_args(rng, dtype, batch, dim, L, N, *, form=3, G=2, D=False, z=False, bias=False):
    B_shape = {2: (dim, N), 3: (batch, N, L), 4: (batch, G, N, L)}[form]
    return (
        randn(rng, dtype, batch, dim, L),  # u
        positive(rng, dtype, batch, dim, L) * 0.5,  # delta (a step size: positive)
        _negative(rng, dtype, dim, N),  # A
        randn(rng, dtype, *B_shape),  # B
        randn(rng, dtype, *B_shape),  # C
        randn(rng, dtype, dim) if D else None,
        randn(rng, dtype, batch, dim, L) if z else None,
        (0.3 * randn(rng, dtype, dim)) if bias else None,
    )


def _scan_samples(rng, dtype):
    sp = {"delta_softplus": True}
    last = {"return_last_state": True}
    return [
        SampleInput(_scan_args(rng, dtype, 2, 3, 5, 4), name="u delta A B C only"),
        SampleInput(_scan_args(rng, dtype, 2, 3, 5, 4, D=True), name="D"),
        SampleInput(_scan_args(rng, dtype, 2, 3, 5, 4, z=True), name="z"),
        SampleInput(_scan_args(rng, dtype, 2, 3, 5, 4, bias=True), name="delta_bias"),
        SampleInput(_scan_args(rng, dtype, 2, 3, 5, 4), sp, name="softplus"),
        SampleInput(_scan_args(rng, dtype, 1, 3, 4, 2, bias=True), sp, "bias and softplus"),
        SampleInput(_scan_args(rng, dtype, 2, 3, 4, 3), last, name="last state"),
        SampleInput(
            _scan_args(rng, dtype, 2, 4, 6, 3, D=True, z=True, bias=True),
            {**sp, **last},
            name="everything",
        ),  # fmt: skip
        SampleInput(_scan_args(rng, dtype, 2, 4, 5, 3, form=4, G=2, D=True), name="2 groups"),
        SampleInput(_scan_args(rng, dtype, 2, 3, 5, 2, form=2, z=True), name="constant B, C"),
        SampleInput(_scan_args(rng, dtype, 1, 1, 1, 1, D=True), last, name="size 1"),
        SampleInput(_scan_args(rng, dtype, 1, 2, 70, 2, D=True), last, name="two chunks"),
    ]


def _per_channel(X, batch, dim, L):
    """B or C as [batch, dim, N, L] (mamba's repeat of groups; broadcast of constants)."""
    if X.ndim == 2:
        return np.broadcast_to(X[None, :, :, None], (batch, dim, X.shape[1], L))
    if X.ndim == 3:
        X = X[:, None]
    return np.repeat(X, dim // X.shape[1], axis=1)


def _scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
              return_last_state=False):  # fmt: skip
    """mamba_ssm's selective_scan_ref, in NumPy."""
    batch, dim, L = u.shape
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = np.where(delta > 20, delta, np.log1p(np.exp(np.minimum(delta, 20))))
    Bc, Cc = _per_channel(B, batch, dim, L), _per_channel(C, batch, dim, L)
    x = np.zeros((batch, dim, A.shape[1]))
    deltaA = np.exp(np.einsum("bdl,dn->bdln", delta, A))
    deltaB_u = np.einsum("bdl,bdnl,bdl->bdln", delta, Bc, u)
    ys = []
    for i in range(L):
        x = deltaA[:, :, i] * x + deltaB_u[:, :, i]
        ys.append(np.einsum("bdn,bdn->bd", x, Cc[..., i]))
    out = np.stack(ys, axis=2)
    if D is not None:
        out = out + u * D[:, None]
    if z is not None:
        out = out * z / (1 + np.exp(-z))
    return (out, x) if return_last_state else out


def _scan_composite(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                    return_last_state=False):  # fmt: skip
    batch, dim, L = u.shape
    N = A.shape[1]
    if delta_bias is not None:
        delta = delta + delta_bias.reshape(dim, 1)
    if delta_softplus:
        delta = (delta.exp() + 1).log()
    # work in [batch, G, H, N, L]: B and C as 5-d views that broadcast over H channels
    if B.ndim == 2:
        G, to5 = dim, lambda X: X.reshape(1, dim, 1, N, 1)
    elif B.ndim == 3:
        G, to5 = 1, lambda X: X.reshape(batch, 1, 1, N, L)
    else:
        G, to5 = B.shape[1], lambda X: X.reshape(batch, B.shape[1], 1, N, L)
    H = dim // G
    dt5 = delta.reshape(batch, G, H, 1, L)
    a = (dt5 * A.reshape(1, G, H, N, 1)).exp()  # [batch, G, H, N, L]
    bu = dt5 * u.reshape(batch, G, H, 1, L) * to5(B)
    C5 = to5(C)
    h, ys = bu[..., 0] * 0, []  # h_{-1} = 0 (kept in the graph: A gets its zero gradient)
    for t in range(L):
        h = a[..., t] * h + bu[..., t]
        ys.append((h * (C5[..., t] if C5.shape[-1] > 1 else C5[..., 0])).sum(-1))
    out = F.stack(ys, dim=-1).reshape(batch, dim, L)
    if D is not None:
        out = out + u * D.reshape(dim, 1)
    if z is not None:
        out = out * F.silu(z)
    return (out, h.reshape(batch, dim, N)) if return_last_state else out


register(
    OpInfo(
        "selective_scan",
        selective_scan,
        _scan_samples,
        _scan_ref,
        composite=_scan_composite,
        family="ssm",
        forward_atol32=1e-4,
        kernels=("selective_scan_forward", "selective_scan_backward"),
    )
)


# ---------------------------------------------------------------- causal_conv1d
def _conv_samples(rng, dtype):
    silu = {"activation": "silu"}
    return [
        SampleInput((randn(rng, dtype, 2, 3, 7), randn(rng, dtype, 3, 4)), name="no bias"),
        SampleInput(
            (randn(rng, dtype, 2, 3, 7), randn(rng, dtype, 3, 4), randn(rng, dtype, 3)), name="bias"
        ),
        SampleInput(
            (randn(rng, dtype, 2, 3, 6), randn(rng, dtype, 3, 4), randn(rng, dtype, 3)),
            silu,
            "silu",
        ),
        SampleInput((randn(rng, dtype, 1, 2, 5), randn(rng, dtype, 2, 1)), silu, "width 1"),
        SampleInput((randn(rng, dtype, 2, 2, 2), randn(rng, dtype, 2, 4)), name="width > L"),
        SampleInput((randn(rng, dtype, 1, 1, 1), randn(rng, dtype, 1, 3)), name="size 1"),
    ]


def _conv_ref(x, weight, bias=None, activation=None):
    batch, dim, L = x.shape
    W = weight.shape[1]
    out = np.zeros_like(x) if bias is None else np.broadcast_to(bias[:, None], x.shape).copy()
    for t in range(L):
        for k in range(W):
            s = t - (W - 1) + k
            if s >= 0:
                out[:, :, t] += weight[:, k] * x[:, :, s]
    return out / (1 + np.exp(-out)) if activation else out


def _conv_composite(x, weight, bias=None, activation=None):
    batch, dim, L = x.shape
    W = weight.shape[1]
    zero = x[:, :, :1] * 0  # [batch, dim, 1] of zeros, in the graph
    xpad = F.cat([zero] * (W - 1) + [x], dim=2)  # W - 1 zeros on the left
    out = None
    for k in range(W):
        term = weight[:, k : k + 1] * xpad[:, :, k : k + L]
        out = term if out is None else out + term
    if bias is not None:
        out = out + bias.reshape(dim, 1)
    return F.silu(out) if activation else out


register(
    OpInfo(
        "causal_conv1d",
        causal_conv1d,
        _conv_samples,
        _conv_ref,
        composite=_conv_composite,
        family="ssm",
    )
)
