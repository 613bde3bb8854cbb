"""Mixture-of-experts ops: dispatch and combine, the Switch balancing loss, the router z-loss.

Tokens x [N, C] are routed to experts; ``expert_permutation`` (integer, not differentiable)
lists the kept (token, slot) pairs sorted by expert, so that each expert sees contiguous rows:

    order  [M]: flat slot indices n * k + j, sorted by expert (stable: by token within one)
    counts [E]: rows per expert;  token_index = order // k

moe_dispatch (a gather of rows):  rows[m] = x[token_index[m]]                     [M, C]
    backward (a scatter-add):     dx[n]  = sum_{m : token_index[m] = n} drows[m]

moe_combine (scatter back weighted by the gates), with w [M] the gate of each row:
    out[n]  = sum_{m : token_index[m] = n} w[m] y[m]                               [N, C]
    backward:  dy[m] = w[m] dout[token_index[m]],   dw[m] = <y[m], dout[token_index[m]]>

switch_load_balancing_loss (Fedus et al. 2021, eq. 4), probs [N, E] the router softmax,
expert_index [N, k] the routed slots (-1: a dropped or empty slot, not counted):
    f_e = (# slots routed to e) / (# slots),   P_e = mean_n probs[n, e]
    loss = E * sum_e f_e P_e                    (1 when balanced, E when collapsed)
    backward (f is a count: constant):  dprobs[n, e] = dloss E f_e / N

router_z_loss (Zoph et al. 2022, ST-MoE eq. 5), logits [N, E]:
    loss = mean_n logsumexp(logits[n])^2
    backward:  dlogits[n] = dloss 2 lse_n softmax(logits[n]) / N
"""

from __future__ import annotations

import numpy as np

from tinyllm.backend import get_array_module
from tinyllm.function import Function
from tinyllm.functional._util import check_float

__all__ = ["moe_combine", "moe_dispatch", "router_z_loss", "switch_load_balancing_loss"]


def _shape(t) -> tuple:
    return tuple(t.shape)


def _raw(a):
    """The array behind a Tensor (or the array itself)."""
    from tinyllm.tensor import Tensor

    return a.data if isinstance(a, Tensor) else a


def _check_index(op: str, name: str, index, size: int, ndim: int = 1, low: int = 0) -> None:
    if index.dtype.kind not in "iu":
        raise TypeError(f"{op}: {name} must hold integers, got {index.dtype}")
    if index.ndim != ndim:
        raise ValueError(f"{op}: {name} must have {ndim} dimension(s), got shape {_shape(index)}")
    raw = _raw(index)
    if raw.size and (int(raw.min()) < low or int(raw.max()) >= size):
        raise IndexError(f"{op}: {name} values must lie in [{low}, {size}), got "
                         f"[{int(raw.min())}, {int(raw.max())}]")  # fmt: skip


def _scatter_add_rows(index, values, num_rows: int):
    """out[n] = sum_{m : index[m] = n} values[m] ([num_rows, C]); rows summed in m order.

    On NumPy: one stable argsort by row and ``add.reduceat`` over the runs (``np.add.at``
    with 2-d rows is several times slower); elsewhere (CuPy) ``add.at``."""
    xp = get_array_module(values)
    out = xp.zeros((num_rows,) + values.shape[1:], values.dtype)
    if index.size == 0:
        return out
    if xp is not np:
        xp.add.at(out, index, values)
        return out
    order = np.argsort(index, kind="stable")
    sorted_index = index[order]
    starts = np.flatnonzero(np.concatenate([[True], sorted_index[1:] != sorted_index[:-1]]))
    out[sorted_index[starts]] = np.add.reduceat(values[order], starts, axis=0)
    return out


def expert_permutation(expert_index, num_experts: int):
    """(order [M], counts [E]) from expert_index [N, k] (integers; -1 marks a dropped slot).

    order lists the flat slot positions n * k + j of the kept slots sorted by expert, stably
    (token order within one expert): rows order[counts[:e].sum() : counts[:e+1].sum()] go to
    expert e. ``order // k`` is the token of each row. Not differentiable (integers).
    """
    idx = _raw(expert_index)
    xp = get_array_module(idx)
    flat = idx.reshape(-1)
    kept = xp.nonzero(flat >= 0)[0]
    order = kept[xp.argsort(flat[kept], kind="stable")]
    counts = xp.bincount(flat[kept], minlength=num_experts)[:num_experts]
    return order.astype(np.int64), counts.astype(np.int64)


class MoEDispatch(Function):
    @staticmethod
    def forward(ctx, x, token_index):
        ctx.save_for_backward(token_index)
        ctx.num_tokens = x.shape[0]
        return x[token_index]  # rows[m] = x[token_index[m]]: contiguous rows per expert

    @staticmethod
    def backward(ctx, drows):
        (token_index,) = ctx.saved_tensors
        # dx[n] = sum over the rows of token n
        return _scatter_add_rows(token_index, drows, ctx.num_tokens), None


class MoECombine(Function):
    @staticmethod
    def forward(ctx, y, weights, token_index, num_tokens):
        out = _scatter_add_rows(token_index, weights[:, None] * y, num_tokens)  # sum_m w[m] y[m]
        ctx.save_for_backward(y, weights, token_index)
        return out

    @staticmethod
    def backward(ctx, dout):
        y, weights, token_index = ctx.saved_tensors
        g = dout[token_index]  # dout of each row's token, [M, C]
        needs = ctx.needs_input_grad
        dy = weights[:, None] * g if needs[0] else None
        dw = (y * g).sum(axis=1).astype(weights.dtype, copy=False) if needs[1] else None
        return dy, dw, None, None


class SwitchLoss(Function):
    @staticmethod
    def forward(ctx, probs, expert_index):
        xp = get_array_module(probs)
        N, E = probs.shape
        flat = expert_index.reshape(-1)
        flat = flat[flat >= 0]
        f = xp.bincount(flat, minlength=E)[:E].astype(probs.dtype) / max(flat.size, 1)
        P = probs.mean(axis=0)
        ctx.f, ctx.N = f, N
        return xp.asarray(E * (f * P).sum(), dtype=probs.dtype)

    @staticmethod
    def backward(ctx, dloss):
        f, N = ctx.f, ctx.N
        E = f.shape[0]
        # loss = E sum_e f_e mean_n probs[n, e]  =>  dprobs[n, e] = dloss E f_e / N
        row = (dloss * E / N) * f
        return get_array_module(f).broadcast_to(row, (N, E)).copy(), None


class RouterZLoss(Function):
    @staticmethod
    def forward(ctx, logits):
        xp = get_array_module(logits)
        m = logits.max(axis=-1, keepdims=True)
        e = xp.exp(logits - m)
        s = e.sum(axis=-1, keepdims=True)
        lse = (m + xp.log(s))[:, 0]
        ctx.save_for_backward(e / s, lse)
        return xp.asarray((lse**2).mean(), dtype=logits.dtype)

    @staticmethod
    def backward(ctx, dloss):
        p, lse = ctx.saved_tensors
        # d/dlogits of mean_n lse_n^2 = 2 lse_n softmax_n / N
        return (dloss * 2 / p.shape[0]) * lse[:, None] * p


def moe_dispatch(x, token_index):
    """Gather the rows of ``x`` [N, C] at ``token_index`` [M] into [M, C] (expert-sorted rows).

    The hand-written backward scatter-adds the row gradients onto their tokens. With
    ``order, counts = expert_permutation(expert_index, E)`` use ``token_index = order // k``.

    >>> import numpy as np, tinyllm, tinyllm.functional as F
    >>> x = tinyllm.tensor([[1.0, 2.0], [3.0, 4.0]])
    >>> F.moe_dispatch(x, tinyllm.tensor(np.array([1, 0, 1])))
    tensor([[3., 4.],
            [1., 2.],
            [3., 4.]])
    """
    op = "moe_dispatch"
    check_float(f"{op}: x", x)
    if x.ndim != 2:
        raise ValueError(f"{op}: x must be [N, C], got {_shape(x)}")
    _check_index(op, "token_index", token_index, x.shape[0])
    return MoEDispatch.apply(x, token_index)


def moe_combine(y, weights, token_index, num_tokens: int):
    """out[n] = sum over rows m of token n of weights[m] * y[m]: y [M, C], weights [M],
    token_index [M] -> out [num_tokens, C]. Tokens no row points to get zeros.

    >>> import numpy as np, tinyllm, tinyllm.functional as F
    >>> y = tinyllm.tensor([[1.0, 1.0], [2.0, 4.0]])
    >>> F.moe_combine(y, tinyllm.tensor([0.5, 0.25]), tinyllm.tensor(np.array([0, 0])), 2)
    tensor([[1. , 1.5],
            [0. , 0. ]])
    """
    op = "moe_combine"
    check_float(f"{op}: y", y)
    check_float(f"{op}: weights", weights)
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, (int, np.integer)):
        raise TypeError(f"{op}: num_tokens must be an int, got {num_tokens!r}")
    if y.ndim != 2 or weights.ndim != 1 or weights.shape[0] != y.shape[0]:
        raise ValueError(
            f"{op}: y must be [M, C] and weights [M]; got y {_shape(y)}, weights {_shape(weights)}"
        )
    if weights.dtype != y.dtype:
        raise TypeError(f"{op}: weights has dtype {weights.dtype} but y has {y.dtype}")
    _check_index(op, "token_index", token_index, int(num_tokens))
    if token_index.shape[0] != y.shape[0]:
        raise ValueError(
            f"{op}: token_index {_shape(token_index)} must have one entry per row of y {_shape(y)}"
        )
    return MoECombine.apply(y, weights, token_index, int(num_tokens))


def switch_load_balancing_loss(router_probs, expert_index):
    """Switch Transformer's auxiliary loss E * sum_e f_e P_e (module docstring).

    router_probs [N, E] (softmax over all experts), expert_index [N, k] the routed experts
    (-1 entries are not counted). Differentiable in router_probs only (f is a count).

    >>> import numpy as np, tinyllm, tinyllm.functional as F
    >>> probs = tinyllm.tensor(np.full((4, 2), 0.5))
    >>> F.switch_load_balancing_loss(probs, tinyllm.tensor(np.array([[0], [1], [0], [1]])))
    tensor(1.)
    """
    op = "switch_load_balancing_loss"
    check_float(f"{op}: router_probs", router_probs)
    if router_probs.ndim != 2 or router_probs.shape[0] == 0:
        raise ValueError(f"{op}: router_probs must be [N, E] with N >= 1, got "
                         f"{_shape(router_probs)}")  # fmt: skip
    _check_index(op, "expert_index", expert_index, router_probs.shape[1], ndim=2, low=-1)
    if expert_index.shape[0] != router_probs.shape[0]:
        raise ValueError(f"{op}: expert_index {_shape(expert_index)} must have one row per token "
                         f"of router_probs {_shape(router_probs)}")  # fmt: skip
    return SwitchLoss.apply(router_probs, expert_index)


def router_z_loss(router_logits):
    """ST-MoE's router z-loss mean_n logsumexp(logits[n])^2; router_logits [N, E].

    >>> import tinyllm, tinyllm.functional as F
    >>> F.router_z_loss(tinyllm.zeros(3, 4))  # log(4)^2
    tensor(1.9218)
    """
    op = "router_z_loss"
    check_float(f"{op}: router_logits", router_logits)
    if router_logits.ndim != 2 or 0 in _shape(router_logits):
        raise ValueError(f"{op}: router_logits must be a non-empty [N, E], got "
                         f"{_shape(router_logits)}")  # fmt: skip
    return RouterZLoss.apply(router_logits)
