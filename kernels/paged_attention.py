"""Attention that reads K and V through a block table (PagedAttention, Kwon et al. 2023).

The cache is split into fixed-size physical blocks:

    k_cache, v_cache   [num_blocks, Hkv, S, D]     (S = block_size tokens per block)
    block_table[n]     [max_blocks] int            logical block b of sequence n -> physical id
    token t of sequence n lives at k_cache[block_table[n, t // S], :, t % S]

Decode (one query per sequence), with G = H / Hkv query heads per K/V head (GQA):

    K_n = gather(k_cache, block_table[n])[:, :context_lens[n]]     [Hkv, L, D]
    o[n] = softmax(q[n] K_n^T * scale) V_n                          [H, D]

Prefill of a chunk of Tq new tokens that end a context of L tokens (queries at positions
L - Tq .. L - 1; bottom-right causal: query j sees keys 0 .. L - Tq + j).

The gather is a copy, so the reference computes exactly what contiguous attention computes
on the same keys (the tests check equality, not closeness, under a shuffled block table).

Decode runs through ``kernels.dispatch`` as the kernel op "paged_attention_forward", with
three tiers: this NumPy/CuPy reference; ``paged_attention_numba.py`` (online softmax, one
work item per (sequence, query head), no gather); ``paged_attention.cu`` (one thread block
per (sequence, query head), keys streamed in tiles of the block's threads, online softmax).
The Numba and CUDA tiers agree with the reference to rounding (another order of
additions). Prefill chunks run the reference on either device (a gather, then GEMMs).
``context_lens`` is a host sequence (the engine knows the lengths); the block tables may
live on the device.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from tinyllm.kernels import dispatch
from tinyllm.kernels.cuda_loader import function, scalar, with_cuda

__all__ = ["gather_kv", "paged_attention_forward", "paged_prefill_attention"]

_CU = "paged_attention.cu"
_THREADS = 128  # threads per block of the CUDA decode kernel (a power of two)


def _check(q, k_cache, v_cache, name):
    if k_cache.ndim != 4 or v_cache.shape != k_cache.shape:
        raise ValueError(
            f"{name}: k_cache and v_cache must both be [num_blocks, Hkv, block_size, D], got "
            f"{tuple(k_cache.shape)} and {tuple(v_cache.shape)}"
        )
    H, D = q.shape[-2:]
    Hkv = k_cache.shape[1]
    if D != k_cache.shape[3] or H % Hkv:
        raise ValueError(
            f"{name}: q [..., H, D] = {tuple(q.shape)} does not fit the cache "
            f"{tuple(k_cache.shape)} (need the same D and H divisible by Hkv)"
        )


def gather_kv(cache, block_table, length: int):
    """The first ``length`` tokens of one sequence, contiguous: [Hkv, length, D]."""
    S = cache.shape[2]
    nb = -(-length // S)
    blocks = cache[block_table[:nb]]  # [nb, Hkv, S, D]
    Hkv, D = cache.shape[1], cache.shape[3]
    return blocks.transpose(1, 0, 2, 3).reshape(Hkv, nb * S, D)[:, :length]


def _reference_decode(q, k_cache, v_cache, block_tables, context_lens, scale):
    from tinyllm import backend

    N, H, D = q.shape
    Hkv = k_cache.shape[1]
    G = H // Hkv
    xp = backend.get_array_module(q)
    out = xp.empty_like(q)
    for n in range(N):
        L = int(context_lens[n])
        keys = gather_kv(k_cache, block_tables[n], L)  # [Hkv, L, D]
        values = gather_kv(v_cache, block_tables[n], L)
        qg = q[n].reshape(Hkv, G, D)
        s = (qg @ keys.swapaxes(-1, -2)) * scale  # [Hkv, G, L]
        s -= s.max(axis=-1, keepdims=True)
        p = xp.exp(s)
        p /= p.sum(axis=-1, keepdims=True)
        out[n] = (p @ values).reshape(H, D)
    return out


@functools.cache
def _numba():
    from tinyllm.kernels import paged_attention_numba

    return paged_attention_numba


def _numba_decode(q, k_cache, v_cache, block_tables, context_lens, scale):
    return _numba().decode(q, k_cache, v_cache, block_tables, context_lens, scale)


def _cuda_decode(q, k_cache, v_cache, block_tables, context_lens, scale):
    import cupy

    N, H, D = q.shape
    Hkv, S = k_cache.shape[1], k_cache.shape[2]
    dt = q.dtype
    q, k_cache, v_cache = (cupy.ascontiguousarray(a) for a in (q, k_cache, v_cache))
    tables = cupy.ascontiguousarray(cupy.asarray(block_tables).astype(cupy.int64, copy=False))
    lens = cupy.asarray(np.ascontiguousarray(context_lens, dtype=np.int64))  # host -> device
    out = cupy.empty_like(q)
    if N * H:
        smem = (2 * D + 2 * _THREADS) * dt.itemsize  # q, acc [D]; p, scratch [threads]
        kernel = function(_CU, "paged_decode", dt)
        args = (
            q, k_cache, v_cache, tables, lens, out, np.int32(H), np.int32(Hkv), np.int32(S),
            np.int32(D), np.int32(tables.shape[1]), scalar(scale, dt),
        )  # fmt: skip
        kernel((N * H,), (_THREADS,), args, shared_mem=smem)
    return out


_DECODE = dispatch.declare(
    with_cuda({"reference": _reference_decode, "numba": _numba_decode, "cuda": _cuda_decode}, _CU),
    "paged_attention_forward",
)


def _host_lengths(context_lens, name: str) -> np.ndarray:
    from tinyllm import backend

    if backend.get_array_module(context_lens) is not np:
        context_lens = backend.to_numpy(context_lens)  # one sync: pass host lengths instead
    return np.asarray(context_lens, dtype=np.int64).reshape(-1)


def paged_attention_forward(q, k_cache, v_cache, block_tables, context_lens, scale=None):
    """Decode attention: q [N, H, D] (one query per sequence, at its last position) against
    the first ``context_lens[n]`` tokens of sequence n, read through ``block_tables[n]``."""
    name = "paged_attention_forward"
    _check(q, k_cache, v_cache, name)
    if q.ndim != 3:
        raise ValueError(f"{name}: q must be [N, H, D], got {tuple(q.shape)}")
    N, S = q.shape[0], k_cache.shape[2]
    lens = _host_lengths(context_lens, name)
    if len(lens) != N or (N and lens.min() < 1):
        raise ValueError(
            f"{name}: context_lens must hold N = {N} lengths >= 1, got {lens.tolist()}"
        )
    shape = tuple(getattr(block_tables, "shape", np.shape(block_tables)))
    need = int(-(-lens.max() // S)) if N else 0
    if len(shape) != 2 or shape[0] != N or shape[1] < need:
        raise ValueError(
            f"{name}: block_tables must be [N, >= {need}] = [{N}, >= {need}] for block size "
            f"{S}, got {shape}"
        )
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    from tinyllm import backend

    xp = backend.get_array_module(q)
    return dispatch.run(name, xp, q.dtype, _DECODE, q, k_cache, v_cache, block_tables, lens, scale)


def paged_prefill_attention(q, k_cache, v_cache, block_table, context_len: int, scale=None):
    """Chunk attention: q [Tq, H, D] for the last Tq of ``context_len`` positions, causal."""
    _check(q, k_cache, v_cache, "paged_prefill_attention")
    from tinyllm import backend

    xp = backend.get_array_module(q)
    Tq, H, D = q.shape
    Hkv = k_cache.shape[1]
    G, L = H // Hkv, int(context_len)
    if Tq > L:
        raise ValueError(f"paged_prefill_attention: {Tq} queries exceed the context of {L}")
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    keys = gather_kv(k_cache, block_table, L)[:, None]  # [Hkv, 1, L, D]
    values = gather_kv(v_cache, block_table, L)[:, None]
    qg = q.transpose(1, 0, 2).reshape(Hkv, G, Tq, D)
    s = (qg @ keys.swapaxes(-1, -2)) * scale  # [Hkv, G, Tq, L]
    q_pos = L - Tq + xp.arange(Tq)
    future = xp.arange(L)[None, :] > q_pos[:, None]
    s = xp.where(future, s.dtype.type(-math.inf), s)
    s -= s.max(axis=-1, keepdims=True)
    p = xp.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    return (p @ values).reshape(H, Tq, D).transpose(1, 0, 2)  # [Tq, H, D]
