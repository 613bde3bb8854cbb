"""Scaled dot-product attention: FlashAttention (tiled) kernels and the naive oracle.

For one (batch b, query head h), with q [Tq, D], k, v [Tk, D] (k, v of kv head
h // (H / Hkv): grouped-query attention when Hkv < H) and scale tau (default 1/sqrt(D)):

    S = tau q k^T + M          M_ij = 0 where key j is visible to query i, else -inf
    P = softmax_row(S),  O = P v,  lse_i = log sum_j exp(S_ij)

Visibility: ``causal`` hides keys j > i (top-left aligned, as PyTorch's ``is_causal``, also
when Tq != Tk); ``key_padding_mask`` (a boolean keep mask [B, Tk], or [B, 1, 1, Tk]) hides
keys where it is False. A row with no visible key has O = 0, lse = -inf and zero gradients.

Backward (FlashAttention-2 algebra; P is recomputed from lse, never stored):

    P_ij = exp(S_ij - lse_i);  dV = P^T dO;  dP = dO v^T
    D_i = sum_d dO_id O_id     (= sum_j P_ij dP_ij, because O = P v)
    dS = P o (dP - D);  dq = tau dS k;  dk = tau dS^T q
(dk, dv of a kv head sum over the H / Hkv query heads that share it).

Tiers: ``reference`` is the naive algorithm that materializes S and P [B, H, Tq, Tk] (the
oracle, also callable directly as ``naive_attention_forward/backward``); ``numba``
(``attention_numba.py``) and ``cuda`` (``flash_attention.cu``) are FlashAttention: an
online softmax over key tiles saves only O and lse, and no Tq x Tk array is ever allocated
(per-tile scratch only). Shapes: q, o, do, dq [B, H, Tq, D]; k, v, dk, dv [B, Hkv, Tk, D]
(the value head size equals the key head size D); lse [B, H, Tq].
"""

from __future__ import annotations

import functools
import math

import numpy as np

from tinyllm.backend import get_array_module
from tinyllm.kernels import dispatch
from tinyllm.kernels.arrays import Array, check_float, compute_dtype, contiguous
from tinyllm.kernels.cuda_loader import function, scalar, with_cuda

__all__ = [
    "attention_backward",
    "attention_forward",
    "naive_attention_backward",
    "naive_attention_forward",
]

_CU = "flash_attention.cu"
DEFAULT_BLOCK_Q = 64
DEFAULT_BLOCK_K = 64


@functools.cache
def _numba():
    from tinyllm.kernels import attention_numba

    return attention_numba


# ---------------------------------------------------------------- the naive reference
def _visible(xp, B, Tq, Tk, causal, keep):
    """Boolean [B, 1, Tq, Tk] (or [1, 1, Tq, Tk]) visibility of key j to query i."""
    allowed = xp.ones((1, 1, Tq, Tk), dtype=bool)
    if causal:
        allowed = allowed & (xp.arange(Tk)[None, :] <= xp.arange(Tq)[:, None])
    if keep is not None:
        allowed = allowed & keep[:, None, None, :]
    return allowed


def _expand_kv(xp, x, group):
    """k or v [B, Hkv, Tk, D] repeated to [B, H, Tk, D] (query head h uses h // group)."""
    return x if group == 1 else xp.repeat(x, group, axis=1)


def _naive_forward(q, k, v, causal, keep, scale):
    """(o, lse) by materializing S and P [B, H, Tq, Tk]; keep: [B, Tk] bool or None."""
    xp = get_array_module(q)
    dt = compute_dtype(q.dtype)
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    group = H // k.shape[1]
    tau = scale
    kk = _expand_kv(xp, k.astype(dt, copy=False), group)
    vv = _expand_kv(xp, v.astype(dt, copy=False), group)
    s = (q.astype(dt, copy=False) @ kk.swapaxes(-1, -2)) * tau  # [B, H, Tq, Tk]
    allowed = _visible(xp, B, Tq, Tk, causal, keep)
    s = xp.where(allowed, s, -xp.inf)
    m = s.max(axis=-1, keepdims=True)  # [B, H, Tq, 1]
    empty = m == -xp.inf  # rows with no visible key
    m = xp.where(empty, 0, m)
    e = xp.exp(s - m)
    total = e.sum(axis=-1, keepdims=True)
    p = e / xp.where(empty, 1, total)
    o = p @ vv  # [B, H, Tq, D]
    with np.errstate(divide="ignore"):
        lse = xp.where(empty, -xp.inf, m + xp.log(xp.where(empty, 1, total)))[..., 0]
    return o.astype(q.dtype, copy=False), lse.astype(dt, copy=False)


def _naive_backward(do, q, k, v, o, lse, causal, keep, scale):
    """(dq, dk, dv) by materializing P and dP [B, H, Tq, Tk].

    Independent of the flash algebra: P comes from a fresh softmax of the scores (not from
    lse) and the softmax backward uses sum_j P_ij dP_ij (not D = rowsum(dO o O)).
    """
    xp = get_array_module(q)
    dt = compute_dtype(q.dtype)
    B, H, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    group = H // Hkv
    tau = scale
    qq, dov = q.astype(dt, copy=False), do.astype(dt, copy=False)
    kk = _expand_kv(xp, k.astype(dt, copy=False), group)
    vv = _expand_kv(xp, v.astype(dt, copy=False), group)
    s = (qq @ kk.swapaxes(-1, -2)) * tau
    allowed = _visible(xp, B, Tq, Tk, causal, keep)
    s = xp.where(allowed, s, -xp.inf)
    m = s.max(axis=-1, keepdims=True)
    m = xp.where(m == -xp.inf, 0, m)
    e = xp.exp(s - m)
    total = e.sum(axis=-1, keepdims=True)
    p = e / xp.where(total == 0, 1, total)  # [B, H, Tq, Tk]; 0 on empty rows
    dv = p.swapaxes(-1, -2) @ dov  # [B, H, Tk, D]
    dp = dov @ vv.swapaxes(-1, -2)  # [B, H, Tq, Tk]
    ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True))
    dq = (ds @ kk) * tau
    dk = (ds.swapaxes(-1, -2) @ qq) * tau
    if group > 1:
        dk = dk.reshape(B, Hkv, group, Tk, D).sum(axis=2)
        dv = dv.reshape(B, Hkv, group, Tk, D).sum(axis=2)
    cast = lambda a: a.astype(q.dtype, copy=False)  # noqa: E731
    return cast(dq), cast(dk), cast(dv)


def _reference_forward(q, k, v, causal, keep, scale, block_q, block_k):
    return _naive_forward(q, k, v, causal, keep, scale)


def _reference_backward(do, q, k, v, o, lse, causal, keep, scale, block_q, block_k):
    return _naive_backward(do, q, k, v, o, lse, causal, keep, scale)


# ---------------------------------------------------------------- numba flash bodies
def _keep_array(xp, keep):
    """(keep as a C-contiguous bool [B, Tk], has_mask); a [1, 1] stand-in when None."""
    if keep is None:
        return xp.ones((1, 1), dtype=bool), False
    return xp.array(keep, dtype=bool, order="C"), True  # a writeable copy (one signature)


def _numba_forward(q, k, v, causal, keep, scale, block_q, block_k):
    q, k, v = contiguous(q), contiguous(k), contiguous(v)
    dt = q.dtype
    B, H, Tq, D = q.shape
    BH = B * H
    keep_arr, has_mask = _keep_array(np, keep)
    o = np.empty_like(q)  # [B, H, Tq, D]
    lse = np.empty((B, H, Tq), dt)
    s_buf = np.empty((BH, block_q, block_k), dt)
    kt_buf = np.empty((BH, D, block_k), dt)
    acc_buf = np.empty((BH, block_q, D), dt)
    m_buf = np.empty((BH, block_q), dt)
    l_buf = np.empty((BH, block_q), dt)
    dispatch.numba_for_work(_numba().flash_forward, q.size * k.shape[2] // D)(
        q, k, v, keep_arr, has_mask, causal, dt.type(scale), block_q, block_k, o, lse,
        s_buf, kt_buf, acc_buf, m_buf, l_buf,
    )  # fmt: skip
    return o, lse


def _numba_backward(do, q, k, v, o, lse, causal, keep, scale, block_q, block_k):
    q, k, v, o = contiguous(q), contiguous(k), contiguous(v), contiguous(o)
    dt = q.dtype
    do = contiguous(do.astype(dt, copy=False))
    lse = contiguous(lse.astype(dt, copy=False))
    B, H, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    BH = B * H
    keep_arr, has_mask = _keep_array(np, keep)
    dq = np.empty_like(q)
    if Hkv == H:
        dk, dv = np.empty_like(k), np.empty_like(v)
        dk_part, dv_part = dk, dv
    else:  # one dk, dv per query head, summed over each group below
        dk_part, dv_part = np.empty((B, H, Tk, D), dt), np.empty((B, H, Tk, D), dt)
    s_buf = np.empty((BH, block_q, block_k), dt)
    dp_buf = np.empty((BH, block_q, block_k), dt)
    kt_buf = np.empty((BH, D, block_k), dt)
    vt_buf = np.empty((BH, D, block_k), dt)
    dk_buf = np.empty((BH, block_k, D), dt)
    dv_buf = np.empty((BH, block_k, D), dt)
    delta_buf = np.empty((BH, Tq), dt)
    dispatch.numba_for_work(_numba().flash_backward, q.size * Tk // D)(
        q, k, v, o, do, lse, keep_arr, has_mask, causal, dt.type(scale), block_q, block_k,
        dq, dk_part, dv_part, s_buf, dp_buf, kt_buf, vt_buf, dk_buf, dv_buf, delta_buf,
    )  # fmt: skip
    if Hkv != H:
        dk = dk_part.reshape(B, Hkv, H // Hkv, Tk, D).sum(axis=2)
        dv = dv_part.reshape(B, Hkv, H // Hkv, Tk, D).sum(axis=2)
    return dq, dk, dv


# ---------------------------------------------------------------- cuda flash bodies
# The tiled kernels of flash_attention.cu: a block of _CUDA_THREADS threads owns a tile of
# rows (queries, or keys for dk/dv) whose [rows, D] accumulator is spread over the threads'
# registers (at most _CUDA_MAX_OUT = FLASH_MAX_OUT numbers each) and streams tiles of the
# other operand through shared memory. The tile sizes are chosen per (kernel, D, dtype) so
# that a block needs at most _SMEM_BYTES of dynamic shared memory (CUDA's limit without an
# opt-in): e.g. float32 D 64: 64 query rows x 32 key rows in the forward.
_CUDA_THREADS = 256
_CUDA_MAX_OUT = 32  # FLASH_MAX_OUT in flash_attention.cu
_CUDA_MAX_D = _CUDA_THREADS * _CUDA_MAX_OUT  # a one-row tile must fit the accumulators
_SMEM_BYTES = 48 * 1024  # the default dynamic shared memory limit per block
_TILE_ROWS = (64, 32, 16, 8, 4, 2, 1)


def _smem_forward(br: int, bc: int, D: int, itemsize: int) -> int:
    """Bytes of flash_forward's shared memory: Q [br, D+1], K|V [bc, D+1], S|P [br, bc+1],
    and m, l, alpha [br]."""
    return ((br + bc) * (D + 1) + br * (bc + 1) + 3 * br) * itemsize


def _smem_dkdv(br: int, bc: int, D: int, itemsize: int) -> int:
    """flash_backward_dkdv: K, V [bc, D+1], Q, dO [br, D+1], P, dS [br, bc+1], lse, delta."""
    return (2 * (br + bc) * (D + 1) + 2 * br * (bc + 1) + 2 * br) * itemsize


def _smem_dq(br: int, bc: int, D: int, itemsize: int) -> int:
    """flash_backward_dq: Q, dO [br, D+1], K, V [bc, D+1], dS [br, bc+1], lse, delta."""
    return (2 * (br + bc) * (D + 1) + br * (bc + 1) + 2 * br) * itemsize


@functools.cache
def _cuda_tiles(kernel: str, D: int, itemsize: int) -> tuple[int, int, int]:
    """(br, bc, shared bytes) of one kernel: the largest own tile (query rows br for the
    forward and dq kernels, key rows bc for dk/dv) whose accumulators fit the registers,
    then the largest streamed tile that keeps shared memory within _SMEM_BYTES."""
    smem = {"forward": _smem_forward, "dkdv": _smem_dkdv, "dq": _smem_dq}[kernel]
    for own in _TILE_ROWS:
        if own * D > _CUDA_THREADS * _CUDA_MAX_OUT:
            continue
        for other in _TILE_ROWS:
            br, bc = (other, own) if kernel == "dkdv" else (own, other)
            if smem(br, bc, D, itemsize) <= _SMEM_BYTES:
                return br, bc, smem(br, bc, D, itemsize)
    raise ValueError(f"flash attention: head size D={D} does not fit the CUDA kernels")


def _cuda_forward(q, k, v, causal, keep, scale, block_q, block_k):
    import cupy

    q, k, v = (cupy.ascontiguousarray(a) for a in (q, k, v))
    dt = q.dtype
    B, H, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    keep_arr, has_mask = _keep_array(cupy, keep)
    o = cupy.empty_like(q)
    lse = cupy.empty((B, H, Tq), dt)
    if B * H * Tq:
        br, bc, smem = _cuda_tiles("forward", D, dt.itemsize)
        kernel = function(_CU, "flash_forward", dt)
        grid = (B * H, (Tq + br - 1) // br)  # B*H on x: no 65535 limit
        args = (
            q, k, v, keep_arr, o, lse, np.int32(H), np.int32(Hkv), np.int32(Tq), np.int32(Tk),
            np.int32(D), np.int32(br), np.int32(bc), np.int32(causal), np.int32(has_mask),
            scalar(scale, dt),
        )  # fmt: skip
        kernel(grid, (_CUDA_THREADS,), args, shared_mem=smem)
    return o, lse


def _cuda_backward(do, q, k, v, o, lse, causal, keep, scale, block_q, block_k):
    import cupy

    q, k, v, o = (cupy.ascontiguousarray(a) for a in (q, k, v, o))
    dt = q.dtype
    do = cupy.ascontiguousarray(do.astype(dt, copy=False))
    lse = cupy.ascontiguousarray(lse.astype(dt, copy=False))
    B, H, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    keep_arr, has_mask = _keep_array(cupy, keep)
    delta = cupy.ascontiguousarray((do * o).sum(axis=-1))  # [B, H, Tq]
    dq = cupy.empty_like(q)
    dk_part = cupy.empty((B, H, Tk, D), dt)
    dv_part = cupy.empty((B, H, Tk, D), dt)
    common = (np.int32(H), np.int32(Hkv), np.int32(Tq), np.int32(Tk), np.int32(D))
    flags = (np.int32(causal), np.int32(has_mask), scalar(scale, dt))
    if B * H * Tk:
        br, bc, smem = _cuda_tiles("dkdv", D, dt.itemsize)
        kernel = function(_CU, "flash_backward_dkdv", dt)
        grid = (B * H, (Tk + bc - 1) // bc)
        args = (q, k, v, do, lse, delta, keep_arr, dk_part, dv_part) + common
        args += (np.int32(br), np.int32(bc)) + flags
        kernel(grid, (_CUDA_THREADS,), args, shared_mem=smem)
    if B * H * Tq:
        br, bc, smem = _cuda_tiles("dq", D, dt.itemsize)
        kernel = function(_CU, "flash_backward_dq", dt)
        grid = (B * H, (Tq + br - 1) // br)  # B*H on x: no 65535 limit
        args = (q, k, v, do, lse, delta, keep_arr, dq) + common
        args += (np.int32(br), np.int32(bc)) + flags
        kernel(grid, (_CUDA_THREADS,), args, shared_mem=smem)
    if Hkv == H:
        return dq, dk_part, dv_part
    group = H // Hkv
    dk = dk_part.reshape(B, Hkv, group, Tk, D).sum(axis=2)
    dv = dv_part.reshape(B, Hkv, group, Tk, D).sum(axis=2)
    return dq, dk, dv


_FORWARD = dispatch.declare(
    with_cuda(
        {"reference": _reference_forward, "numba": _numba_forward, "cuda": _cuda_forward}, _CU
    ),
    "attention_forward",
)
_BACKWARD = dispatch.declare(
    with_cuda(
        {"reference": _reference_backward, "numba": _numba_backward, "cuda": _cuda_backward},
        _CU,
    ),
    "attention_backward",
)


def _bodies(bodies: dict, D: int) -> dict:
    """The tiers that can run head size D (the CUDA kernels: D <= _CUDA_MAX_D = 8192, one
    query row's [1, D] accumulator over a block's registers; shared memory then decides)."""
    if D <= _CUDA_MAX_D and _fits_shared(D):
        return bodies
    return {t: f for t, f in bodies.items() if t != "cuda"}


def _fits_shared(D: int) -> bool:
    """True when the smallest (1-row) tiles of every kernel fit _SMEM_BYTES in float64."""
    return _smem_dkdv(1, 1, D, 8) <= _SMEM_BYTES


# ---------------------------------------------------------------- public functions
def _check(op, q, k, v, key_padding_mask, block_q, block_k):
    """Validate shapes; return (keep [B, Tk] bool or None, block_q, block_k)."""
    for name, a in (("q", q), ("k", k), ("v", v)):
        check_float(op, name, a)
        if a.ndim != 4:
            raise ValueError(f"{op}: {name} must be [B, heads, T, D], got {tuple(a.shape)}")
    B, H, _, D = q.shape
    if k.shape != v.shape:
        raise ValueError(
            f"{op}: k {tuple(k.shape)} and v {tuple(v.shape)} must match (the kernels hold V in "
            "rows of the head size D: Dv != D is F.scaled_dot_product_attention's fused path)"
        )
    if k.shape[0] != B or k.shape[3] != D:
        raise ValueError(f"{op}: k/v {tuple(k.shape)} must share B and D with q {tuple(q.shape)}")
    Hkv, Tk = k.shape[1], k.shape[2]
    if Hkv == 0 or H % Hkv:
        raise ValueError(f"{op}: kv heads ({Hkv}) must divide query heads ({H}) for GQA")
    keep = None
    if key_padding_mask is not None:
        xp = get_array_module(q)
        mask = xp.asarray(key_padding_mask)
        if mask.dtype != bool:
            raise TypeError(
                f"{op}: key_padding_mask must be boolean (True = keep), got {mask.dtype}"
            )
        shape = tuple(mask.shape)
        if mask.ndim == 4 and shape[1:3] == (1, 1):
            mask = mask.reshape(shape[0], shape[3])
        if mask.ndim != 2 or mask.shape[1] != Tk or mask.shape[0] not in (1, B):
            raise ValueError(
                f"{op}: key_padding_mask {shape} must be [B, Tk] or [B, 1, 1, Tk] with "
                f"B={B}, Tk={Tk}"
            )
        keep = xp.broadcast_to(mask, (B, Tk))
    for name, size in (("block_q", block_q), ("block_k", block_k)):
        if int(size) != size or size < 1:
            raise ValueError(f"{op}: {name} must be a positive int, got {size!r}")
    return keep, int(block_q), int(block_k)


def _scale(q, scale: float | None) -> float:
    """The score scale tau: 1 / sqrt(D) unless given."""
    return 1 / math.sqrt(q.shape[-1]) if scale is None else float(scale)


def attention_forward(
    q: Array,
    k: Array,
    v: Array,
    *,
    causal: bool = False,
    key_padding_mask: Array | None = None,
    scale: float | None = None,
    block_q: int = DEFAULT_BLOCK_Q,
    block_k: int = DEFAULT_BLOCK_K,
) -> tuple[Array, Array]:
    """(o [B, H, Tq, D], lse [B, H, Tq]) of softmax(scale q k^T + mask) v.

    ``block_q``, ``block_k``: tile sizes of the Numba kernel (any positive ints; the
    result does not depend on them beyond rounding).
    """
    op = "attention_forward"
    keep, block_q, block_k = _check(op, q, k, v, key_padding_mask, block_q, block_k)
    tau = _scale(q, scale)
    xp = get_array_module(q)
    dtype = q.dtype if k.dtype == q.dtype == v.dtype else np.dtype(object)
    bodies = _bodies(_FORWARD, q.shape[-1])
    return dispatch.run(op, xp, dtype, bodies, q, k, v, bool(causal), keep, tau, block_q, block_k)


def attention_backward(
    do: Array,
    q: Array,
    k: Array,
    v: Array,
    o: Array,
    lse: Array,
    *,
    causal: bool = False,
    key_padding_mask: Array | None = None,
    scale: float | None = None,
    block_q: int = DEFAULT_BLOCK_Q,
    block_k: int = DEFAULT_BLOCK_K,
) -> tuple[Array, Array, Array]:
    """(dq, dk, dv) from do [B, H, Tq, D] and the forward's inputs, o and lse."""
    op = "attention_backward"
    keep, block_q, block_k = _check(op, q, k, v, key_padding_mask, block_q, block_k)
    if do.shape != q.shape or o.shape != q.shape or lse.shape != q.shape[:3]:
        raise ValueError(
            f"{op}: do {tuple(do.shape)} and o {tuple(o.shape)} must match q "
            f"{tuple(q.shape)}, lse {tuple(lse.shape)} must be {tuple(q.shape[:3])}"
        )
    tau = _scale(q, scale)
    xp = get_array_module(q)
    dtype = q.dtype if k.dtype == q.dtype == v.dtype else np.dtype(object)
    bodies = _bodies(_BACKWARD, q.shape[-1])
    return dispatch.run(
        op, xp, dtype, bodies, do, q, k, v, o, lse, bool(causal), keep, tau, block_q, block_k
    )


def naive_attention_forward(
    q: Array,
    k: Array,
    v: Array,
    *,
    causal: bool = False,
    key_padding_mask: Array | None = None,
    scale: float | None = None,
) -> tuple[Array, Array]:
    """(o, lse) of the naive algorithm (S and P materialized): the reference body, direct."""
    keep, _, _ = _check("naive_attention_forward", q, k, v, key_padding_mask, 1, 1)
    tau = _scale(q, scale)
    return _naive_forward(q, k, v, bool(causal), keep, tau)


def naive_attention_backward(
    do: Array,
    q: Array,
    k: Array,
    v: Array,
    o: Array,
    lse: Array,
    *,
    causal: bool = False,
    key_padding_mask: Array | None = None,
    scale: float | None = None,
) -> tuple[Array, Array, Array]:
    """(dq, dk, dv) of the naive algorithm: the reference body, direct."""
    keep, _, _ = _check("naive_attention_backward", q, k, v, key_padding_mask, 1, 1)
    tau = _scale(q, scale)
    return _naive_backward(do, q, k, v, o, lse, bool(causal), keep, tau)
