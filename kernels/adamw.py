"""AdamW: one fused, in-place update of a parameter and its two moment buffers.

PyTorch's exact update (``torch.optim.AdamW``, single-tensor path), in its order, with
step t >= 1 counted after this step:

    p = p * (1 - lr wd)                                 (decoupled weight decay)
    m = m + (1 - b1) (g - m)                            (= b1 m + (1 - b1) g; torch's lerp,
                                                         g - (g - m) b1 when 1 - b1 >= 0.5)
    v = b2 v + (1 - b2) g^2
    p = p - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)

The per-step scalars are computed once in Python (float64) and rounded to the arrays'
dtype, as PyTorch does for its scalar arguments; the elementwise work is one pass over
the four arrays. The reference is the same arithmetic as array ops (its temporaries are
the reason a fused kernel is faster). Tiers: reference, numba (``adamw_numba.py``), cuda
(``adamw.cu``). Arrays of mixed dtypes run the reference.

``adamw_step_multi`` updates every parameter of a step: on the GPU in one launch (a table
of device pointers and size offsets, ``adamw_multi_*`` in ``adamw.cu``), on the CPU one
fused pass per parameter.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tinyllm.backend import get_array_module
from tinyllm.kernels import dispatch
from tinyllm.kernels.arrays import Array, check_float
from tinyllm.kernels.cuda_loader import function, with_cuda

__all__ = ["adamw_step", "adamw_step_multi"]

_CU = "adamw.cu"


@functools.cache
def _numba():
    from tinyllm.kernels import adamw_numba

    return adamw_numba


def _scalars(dtype, step, lr, beta1, beta2, eps, weight_decay):
    """(decay, w1, b2, w2, neg_step, bc2_sqrt, eps) in ``dtype``."""
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    values = (
        1 - lr * weight_decay,
        1 - beta1,
        beta2,
        1 - beta2,
        -lr / bias_correction1,
        math.sqrt(bias_correction2),
        eps,
    )
    t = np.dtype(dtype).type
    return tuple(t(value) for value in values)


def _reference(p, g, m, v, scalars):
    xp = get_array_module(p)
    decay, w1, b2, w2, neg_step, bc2_sqrt, eps = scalars
    p *= decay
    if w1 < 0.5:  # torch's lerp(m, g, w1), whose formula switches at weight 0.5
        m += w1 * (g - m)
    else:
        m[...] = g - (g - m) * (1 - w1)
    v *= b2
    v += w2 * g * g
    p += neg_step * m / (xp.sqrt(v) / bc2_sqrt + eps)


def _flat_views(arrays):
    """1-D contiguous views (or copies, with a note to write back) of each array."""
    views = []
    for a in arrays:
        if not getattr(a.flags, "writeable", True):  # a read-only grad: copy (never written)
            views.append((get_array_module(a).array(a, order="C").reshape(-1), None))
        elif a.flags.c_contiguous:
            views.append((a.reshape(-1), None))
        else:
            views.append((get_array_module(a).ascontiguousarray(a).reshape(-1), a))
    return views


def _numba_body(p, g, m, v, scalars):
    views = _flat_views((p, g, m, v))
    dispatch.numba_for_work(_numba().adamw_flat, p.size)(*(view for view, _ in views), *scalars)
    for view, original in views:
        if original is not None:
            original[...] = view.reshape(original.shape)


def _cuda_body(p, g, m, v, scalars):
    views = _flat_views((p, g, m, v))
    n = p.size
    if n:
        kernel = function(_CU, "adamw", p.dtype)
        args = tuple(view for view, _ in views) + (np.int64(n),) + scalars
        kernel(((n + 255) // 256,), (256,), args)
    for view, original in views:
        if original is not None:
            original[...] = view.reshape(original.shape)


_BODIES = dispatch.declare(
    with_cuda({"reference": _reference, "numba": _numba_body, "cuda": _cuda_body}, _CU),
    "adamw_step",
)


def _check_hyper(op: str, step, lr, betas, eps, weight_decay) -> tuple[float, float]:
    if int(step) != step or step < 1:
        raise ValueError(f"{op}: step must be an integer >= 1, got {step!r}")
    beta1, beta2 = betas
    if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
        raise ValueError(f"{op}: betas must lie in [0, 1), got {betas!r}")
    if lr < 0 or eps < 0 or weight_decay < 0:
        raise ValueError(
            f"{op}: lr, eps and weight_decay must be >= 0, got {lr}, {eps}, {weight_decay}"
        )
    return beta1, beta2


def adamw_step(
    param: Array,
    grad: Array,
    exp_avg: Array,
    exp_avg_sq: Array,
    *,
    step: int,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
) -> None:
    """Update ``param``, ``exp_avg`` and ``exp_avg_sq`` in place (one AdamW step).

    All four arrays have one shape; ``step`` is the step number t >= 1 (after this step).
    """
    op = "adamw_step"
    arrays = {"param": param, "grad": grad, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
    for name, a in arrays.items():
        check_float(op, name, a)
        if a.shape != param.shape:
            raise ValueError(f"{op}: {name} {tuple(a.shape)} must match param {tuple(param.shape)}")
    beta1, beta2 = _check_hyper(op, step, lr, betas, eps, weight_decay)
    same = len({np.dtype(a.dtype) for a in arrays.values()}) == 1
    # mixed dtypes: no kernel signature exists, so ask for one that no kernel accepts
    dtype = param.dtype if same else np.dtype(object)
    scalars = _scalars(param.dtype, int(step), lr, beta1, beta2, eps, weight_decay)
    xp = get_array_module(param)
    dispatch.run(op, xp, dtype, _BODIES, param, grad, exp_avg, exp_avg_sq, scalars)


# ---------------------------------------------------------------- multi-tensor AdamW

_THREADS = 256
_TABLE_CACHE_SIZE = 8
_tables: dict[tuple, Any] = {}  # (pointers, sizes) -> the device table (no H2D when reused)


def _device_table(xp, pointers: tuple[int, ...], sizes: tuple[int, ...]):
    """The int64 device array [pointers..., offsets...] for one launch, cached by content."""
    key = (pointers, sizes)
    table = _tables.get(key)
    if table is None:
        offsets = np.concatenate(([0], np.cumsum(sizes, dtype=np.int64)))
        host = np.concatenate((np.asarray(pointers, dtype=np.int64), offsets.astype(np.int64)))
        table = xp.asarray(host)  # one small host-to-device copy, no sync
        if len(_tables) >= _TABLE_CACHE_SIZE:
            _tables.pop(next(iter(_tables)))
        _tables[key] = table
    return table


def _cuda_multi(params, grads, exp_avgs, exp_avg_sqs, scalars) -> None:
    """Every tensor in one ``adamw_multi`` launch (contiguous copies written back)."""
    import cupy

    groups = [_flat_views(arrays) for arrays in (params, grads, exp_avgs, exp_avg_sqs)]
    sizes = tuple(int(a.size) for a in params)
    total = sum(sizes)
    if total:
        pointers = tuple(int(view.data.ptr) for group in groups for view, _ in group)
        table = _device_table(cupy, pointers, sizes)
        kernel = function(_CU, "adamw_multi", params[0].dtype)
        grid = ((total + _THREADS - 1) // _THREADS,)
        kernel(grid, (_THREADS,), (table, np.int64(len(params))) + scalars)
    for group in groups:
        for view, original in group:
            if original is not None:
                original[...] = view.reshape(original.shape)


def adamw_step_multi(
    params: Sequence[Array],
    grads: Sequence[Array],
    exp_avgs: Sequence[Array],
    exp_avg_sqs: Sequence[Array],
    *,
    step: int,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
) -> None:
    """One AdamW step of many parameters, in place; the same math as ``adamw_step``.

    The four sequences are parallel (one entry per parameter, each four of one shape). The
    CUDA tier (all arrays of one float dtype on the GPU) is one kernel launch for the whole
    step; the numba and reference tiers make one fused pass per parameter. Records
    ``adamw_step_multi`` in ``tinyllm.kernels.last_tier``.
    """
    op = "adamw_step_multi"
    lists = {"grads": grads, "exp_avgs": exp_avgs, "exp_avg_sqs": exp_avg_sqs}
    for name, seq in lists.items():
        if len(seq) != len(params):
            raise ValueError(f"{op}: {len(params)} params but {len(seq)} {name}")
    beta1, beta2 = _check_hyper(op, step, lr, betas, eps, weight_decay)
    if not params:
        return
    for k, p in enumerate(params):
        check_float(op, f"params[{k}]", p)
        for name, seq in lists.items():
            a = seq[k]
            check_float(op, f"{name}[{k}]", a)
            if a.shape != p.shape:
                raise ValueError(
                    f"{op}: {name}[{k}] {tuple(a.shape)} must match params[{k}] {tuple(p.shape)}"
                )
    dtypes = {np.dtype(a.dtype) for seq in (params, grads, exp_avgs, exp_avg_sqs) for a in seq}
    # mixed dtypes: no kernel signature exists, so ask for one that no kernel accepts
    dtype = next(iter(dtypes)) if len(dtypes) == 1 else np.dtype(object)
    hyper = (int(step), lr, beta1, beta2, eps, weight_decay)
    xp = get_array_module(params[0])
    dispatch.run(op, xp, dtype, _MULTI_BODIES, params, grads, exp_avgs, exp_avg_sqs, hyper)


def _per_tensor(body):
    """A multi-tensor body that runs ``body`` once per parameter (scalars in its dtype)."""

    def run(params, grads, exp_avgs, exp_avg_sqs, hyper) -> None:
        for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
            body(p, g, m, v, _scalars(p.dtype, *hyper))

    return run


def _cuda_multi_body(params, grads, exp_avgs, exp_avg_sqs, hyper) -> None:
    _cuda_multi(params, grads, exp_avgs, exp_avg_sqs, _scalars(params[0].dtype, *hyper))


_MULTI_BODIES = dispatch.declare(
    with_cuda(
        {
            "reference": _per_tensor(_reference),
            "numba": _per_tensor(_numba_body),
            "cuda": _cuda_multi_body,
        },
        _CU,
    ),
    "adamw_step_multi",
)
