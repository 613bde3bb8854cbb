"""Scaled dot-product attention: one fused Function, FlashAttention's backward math.

Forward, per batch entry and query head (q_i: row i of Q [Tq, D]; K, V: [Tk, D], [Tk, Dv]):

    S_ij  = scale * q_i . k_j + bias_ij          scale = 1/sqrt(D) unless given
    S_ij  = -inf where key j is not allowed      (boolean mask, causal, sliding window)
    lse_i = log sum_j exp(S_ij)                  (saved: one number per row, shape [B, H, Tq])
    P_ij  = exp(S_ij - lse_i)                    (softmax over keys; saved on the fused path)
    P~_ij = P_ij * keep_ij / (1 - p)             (dropout on the probabilities; keep saved, bool)
    O_i   = sum_j P~_ij v_j

Backward (FlashAttention, Dao 2022, section 3.1 and appendix B.2). P is recomputed from the
saved lse (except on the fused path below); D_i = rowsum(dO * O) = rowsum(P * dP) because
O = P~ V:

    P     = exp(S - lse)                         (recomputed, same masks as forward)
    dV    = P~^T dO
    dP~   = dO V^T;  dP = dP~ * keep / (1 - p)
    D_i   = sum_d dO_id O_id
    dS    = P * (dP - D)
    dQ    = scale * dS K
    dK    = scale * dS^T Q

Grouped-query attention (GQA/MQA, ``enable_gqa=True``): H query heads share Hkv key/value heads,
query head h reading kv head h // (H / Hkv), as PyTorch's ``repeat_interleave`` does. The
computation runs in a grouped layout [..., Hkv, G, T, D] (G = H / Hkv) where K and V broadcast
over G, so no repeated copy of K or V is made; dK and dV sum over the G query heads of a group.

Semantics (PyTorch's ``torch.nn.functional.scaled_dot_product_attention``):
- ``attn_mask`` boolean: True = take part in attention (PyTorch's convention); float: added to
  the scores. Either broadcasts to [..., H, Tq, Tk]. A float mask receives **no gradient**
  (it is treated as a constant, like a boolean mask).
- ``is_causal=True`` uses the top-left aligned causal mask tril(ones(Tq, Tk)): query i sees
  keys j <= i. With Tq != Tk (decoding against a KV cache) this is *not* the bottom-right
  alignment of FlashAttention >= 2.1; pass an explicit mask there. As in PyTorch, giving both
  ``attn_mask`` and ``is_causal`` is an error.
- ``window=W`` (a tinyllm extension, keyword-only): causal sliding window, query i sees keys j
  with i - W < j <= i (W keys including itself, Mistral's ``sliding_window``; FlashAttention's
  ``window_size=(W - 1, 0)``), top-left aligned like ``is_causal``; it may be combined with a
  boolean or float ``attn_mask``.
- A fully masked row (no key allowed, or every score -inf) returns zeros with zero gradients,
  never NaN (lse is +inf there, so P = exp(-inf) = 0 in backward).
- ``dropout_p > 0`` applies dropout to the attention probabilities, scaled by 1 / (1 - p), as
  PyTorch does, whenever it is given (the function has no training flag: modules pass 0 in
  eval mode). The keep mask is drawn from ``tinyllm.backend.generator(device)`` as
  ``generator.random([..., H, Tq, Tk]) >= p`` (so ``tinyllm.manual_seed`` makes it
  reproducible) and saved as a bool array for backward.

float16/bfloat16 inputs are computed in float32 (scores, lse and sums) and cast back.
Three paths, by the call:
- fused (float32/64, no mask other than causal, no window, no dropout): batched GEMMs for
  Q K^T, P V and the gradients around ``tinyllm.kernels.softmax_forward(S, scale, causal)``
  and ``softmax_backward`` (scale and causal mask applied inside the kernel, one pass each);
  P is saved, since at these sizes keeping it is cheaper than recomputing S;
- flash, when the call's scores (B H Tq Tk) reach ``FLASH_MIN_SCORES`` under the same
  conditions: the tiled FlashAttention of ``tinyllm.kernels`` (Numba on the CPU, CUDA on a
  GPU): forward with an online softmax over key blocks, backward recomputing P block by block
  with D = rowsum(dO * O); no [Tq, Tk] array is allocated;
- general (masks, windows, dropout, 16-bit floats): the array code here, lse saved.
"""

from __future__ import annotations

import math

import numpy as np

from tinyllm import backend, kernels
from tinyllm.backend import get_array_module
from tinyllm.function import Function
from tinyllm.tensor import Tensor

__all__ = ["scaled_dot_product_attention"]

_OP = "scaled_dot_product_attention"


# ---------------------------------------------------------------- layout helpers (arrays)
def _heads(x) -> tuple[tuple, int]:
    """(batch dims, number of heads) of a [..., H, T, D] array ([T, D]: no batch, one head)."""
    return (x.shape[:-3], x.shape[-3]) if x.ndim >= 3 else ((), 1)


def _grouped(x, n_kv: int, group: int):
    """[..., H, T, D] -> [..., Hkv, G, T, D] (query side) with H = Hkv * G."""
    batch, _ = _heads(x)
    return x.reshape(batch + (n_kv, group) + x.shape[-2:])


def _grouped_qkv(q, k, v, dtype=None):
    """(q5, k5, v5, Hkv, G): q as [..., Hkv, G, Tq, D], k and v as [..., Hkv, 1, Tk, D|Dv]
    (G = H / Hkv query heads per kv head), cast to ``dtype`` when given."""
    n_kv = _heads(k)[1]
    group = _heads(q)[1] // n_kv
    q5, k5, v5 = _grouped(q, n_kv, group), _grouped(k, n_kv, 1), _grouped(v, n_kv, 1)
    if dtype is not None:
        q5, k5, v5 = (a.astype(dtype, copy=False) for a in (q5, k5, v5))
    return q5, k5, v5, n_kv, group


def _grouped_mask(mask, ndim: int, n_kv: int, group: int):
    """A mask broadcastable to [..., H, Tq, Tk], reshaped to broadcast to [..., Hkv, G, Tq, Tk]."""
    if mask is None:
        return None
    mask = mask.reshape((1,) * (ndim - mask.ndim) + mask.shape)
    if ndim < 3:  # [Tq, Tk] inputs: one head
        return mask.reshape((1, 1) + mask.shape)
    heads = mask.shape[-3]
    split = (1, 1) if heads == 1 else (n_kv, group)
    return mask.reshape(mask.shape[:-3] + split + mask.shape[-2:])


def _position_mask(xp, Tq: int, Tk: int, is_causal: bool, window):
    """[Tq, Tk] bool, True where key j is visible to query i (top-left aligned), or None."""
    if not is_causal and window is None:
        return None
    i = xp.arange(Tq)[:, None]
    j = xp.arange(Tk)[None, :]
    allowed = j <= i
    if window is not None:
        allowed &= j > i - window
    return allowed


def _scores(q5, k5, scale, bias, allowed):
    """S = scale * Q K^T + bias, -inf where not allowed: [..., Hkv, G, Tq, Tk]."""
    xp = get_array_module(q5)
    s = (q5 @ k5.swapaxes(-1, -2)) * scale
    if bias is not None:
        s = s + bias
    if allowed is not None:
        s = xp.where(allowed, s, -xp.inf)
    return s


def _work_dtype(dtype):
    """The dtype computations run in: float32 for 16-bit floats, else the input's."""
    return np.dtype(np.float32) if np.dtype(dtype).itemsize < 4 else np.dtype(dtype)


class ScaledDotProductAttention(Function):
    """One attention call; see the module docstring for the math."""

    @staticmethod
    def forward(ctx, q, k, v, mask, bias, is_causal, window, scale, dropout_p, keep):
        ctx.flash = _flash_applies(q, k, mask, bias, window, keep)
        if ctx.flash:
            # long sequences: tiled FlashAttention (tinyllm.kernels), no [Tq, Tk] array;
            # the same math, with lse saved and P recomputed block by block in backward
            out, lse = kernels.attention_forward(q, k, v, causal=is_causal, scale=scale)
            ctx.save_for_backward(q, k, v, out, lse)
            ctx.is_causal, ctx.scale = is_causal, scale
            return out
        ctx.fused = _fused_softmax_applies(q, mask, bias, window, keep)
        if ctx.fused:
            # short sequences, no mask other than causal: batched GEMMs around the kernels'
            # scaled (causal) softmax, P = softmax(scale Q K^T) saved for backward
            q5, k5, v5, _, _ = _grouped_qkv(q, k, v)
            p = kernels.softmax_forward(q5 @ k5.swapaxes(-1, -2), scale, is_causal)
            out = (p @ v5).reshape(q.shape[:-1] + (v.shape[-1],))  # O = P V
            ctx.save_for_backward(q, k, v, p)
            ctx.scale = scale
            return out
        # q: [..., H, Tq, D]; k: [..., Hkv, Tk, D]; v: [..., Hkv, Tk, Dv]
        # mask: bool, bias: float, each broadcastable to [..., H, Tq, Tk] (or None)
        # keep: bool [..., H, Tq, Tk] (dropout) or None
        xp = get_array_module(q)
        dtype, work = q.dtype, _work_dtype(q.dtype)
        Tq, Tk = q.shape[-2], k.shape[-2]
        q5, k5, v5, Hkv, G = _grouped_qkv(q, k, v, work)  # [..., Hkv, G|1, T, D]
        allowed = _allowed(xp, mask, q.ndim, Hkv, G, Tq, Tk, is_causal, window)
        bias5 = _grouped_mask(bias, q.ndim, Hkv, G)
        if bias5 is not None:
            bias5 = bias5.astype(work, copy=False)

        # S = scale Q K^T + bias (masked);  lse = log sum exp S;  P = exp(S - lse)
        s = _scores(q5, k5, scale, bias5, allowed)  # [..., Hkv, G, Tq, Tk]
        m = s.max(axis=-1, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)
        e = xp.exp(s - m)
        total = e.sum(axis=-1, keepdims=True)
        alive = total > 0  # False on fully masked rows
        total = xp.where(alive, total, 1)
        p = e / total
        lse = xp.where(alive, m + xp.log(total), xp.inf)[..., 0]  # [..., Hkv, G, Tq]
        # P~ = P * keep / (1 - p)
        if keep is not None:
            p = p * (_grouped_mask(keep, q.ndim, Hkv, G) * _keep_scale(dropout_p)).astype(work)
        # O = P~ V
        o5 = p @ v5  # [..., Hkv, G, Tq, Dv]
        out = o5.reshape(q.shape[:-1] + (v.shape[-1],)).astype(dtype, copy=False)

        lse = lse.reshape(q.shape[:-1])  # [..., H, Tq]
        ctx.save_for_backward(q, k, v, out, lse, mask, bias, keep)
        ctx.is_causal, ctx.window, ctx.scale, ctx.dropout_p = is_causal, window, scale, dropout_p
        return out

    @staticmethod
    def backward(ctx, dout):
        if ctx.flash:
            q, k, v, out, lse = ctx.saved_tensors
            dq, dk, dv = kernels.attention_backward(
                dout, q, k, v, out, lse, causal=ctx.is_causal, scale=ctx.scale
            )
            return dq, dk, dv, None, None, None, None, None, None, None
        if ctx.fused:
            return _fused_backward(ctx, dout) + (None,) * 7
        q, k, v, out, lse, mask, bias, keep = ctx.saved_tensors
        xp = get_array_module(q)
        work = _work_dtype(q.dtype)
        Tq, Tk = q.shape[-2], k.shape[-2]
        scale = ctx.scale
        q5, k5, v5, Hkv, G = _grouped_qkv(q, k, v, work)
        o5 = _grouped(out, Hkv, G).astype(work, copy=False)  # [..., Hkv, G, Tq, Dv]
        do5 = _grouped(dout, Hkv, G).astype(work, copy=False)  # [..., Hkv, G, Tq, Dv]
        lse5 = _grouped(lse[..., None], Hkv, G)[..., 0]  # [..., Hkv, G, Tq]
        allowed = _allowed(xp, mask, q.ndim, Hkv, G, Tq, Tk, ctx.is_causal, ctx.window)
        bias5 = _grouped_mask(bias, q.ndim, Hkv, G)
        if bias5 is not None:
            bias5 = bias5.astype(work, copy=False)

        # P = exp(S - lse), recomputed (0 on masked entries and fully masked rows)
        p = xp.exp(_scores(q5, k5, scale, bias5, allowed) - lse5[..., None])
        drop = None
        if keep is not None:
            drop = (_grouped_mask(keep, q.ndim, Hkv, G) * _keep_scale(ctx.dropout_p)).astype(work)
        p_dropped = p if drop is None else p * drop  # P~

        dq = dk = dv = None
        if ctx.needs_input_grad[2]:
            # O = P~ V  =>  dV = P~^T dO, summed over the G query heads of each kv head
            dv = (p_dropped.swapaxes(-1, -2) @ do5).sum(axis=-3)  # [..., Hkv, Tk, Dv]
            dv = dv.reshape(v.shape).astype(v.dtype, copy=False)
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            # dP~ = dO V^T;  P~ = P * drop  =>  dP = dP~ * drop
            dp = do5 @ v5.swapaxes(-1, -2)  # [..., Hkv, G, Tq, Tk]
            if drop is not None:
                dp = dp * drop
            # P = softmax(S)  =>  dS = P * (dP - D),  D = rowsum(dO * O)
            d_row = (do5 * o5).sum(axis=-1, keepdims=True)  # [..., Hkv, G, Tq, 1]
            ds = p * (dp - d_row)
            if ctx.needs_input_grad[0]:
                # S = scale Q K^T  =>  dQ = scale dS K
                dq = ((ds @ k5) * scale).reshape(q.shape).astype(q.dtype, copy=False)
            if ctx.needs_input_grad[1]:
                # S = scale Q K^T  =>  dK = scale dS^T Q, summed over the group
                dk = ((ds.swapaxes(-1, -2) @ q5).sum(axis=-3) * scale).reshape(k.shape)
                dk = dk.astype(k.dtype, copy=False)
        return dq, dk, dv, None, None, None, None, None, None, None


# From this many scores per call (B H Tq Tk) attention runs the tiled FlashAttention kernel,
# which keeps no [Tq, Tk] array. The fused path is faster on a CPU at every length measured
# (experiments/attention_paths.py, 2 cores, causal fwd + bwd, B 1, H 4, D 64: flash takes
# 1.3x its time at T 128, 3.0x at T 512, 1.9x at T 2048), so the switch is set by memory:
# 2^24 float32 probabilities kept are 64 MB.
FLASH_MIN_SCORES = 1 << 24


def _flash_applies(q, k, mask, bias, window, keep) -> bool:
    """True when the flash kernel covers this call: [B, H, T, D] float32/64, no mask other
    than causal, no window, no dropout, and enough scores that keeping P would cost memory."""
    return (
        q.ndim == 4
        and _fused_softmax_applies(q, mask, bias, window, keep)
        and math.prod(q.shape[:-1]) * k.shape[-2] >= FLASH_MIN_SCORES
    )


def _fused_softmax_applies(q, mask, bias, window, keep) -> bool:
    """True for the GEMMs + softmax-kernel path: float32/64, no mask other than causal, no
    window, no dropout (the flash kernel, tried first, takes the long sequences)."""
    return (
        mask is None
        and bias is None
        and window is None
        and keep is None
        and q.dtype in (np.float32, np.float64)
    )


def _fused_backward(ctx, dout):
    """dQ, dK, dV of the fused path from the saved P (see the module docstring)."""
    q, k, v, p = ctx.saved_tensors
    q5, k5, v5, Hkv, G = _grouped_qkv(q, k, v)
    do5 = _grouped(dout, Hkv, G)  # [..., Hkv, G, Tq, Dv]
    dq = dk = dv = None
    if ctx.needs_input_grad[2]:
        # O = P V  =>  dV = P^T dO, summed over the G query heads of each kv head
        dv = (p.swapaxes(-1, -2) @ do5).sum(axis=-3).reshape(v.shape)
    if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
        # dP = dO V^T;  P = softmax(scale S)  =>  dS = scale P (dP - rowsum(dP P))
        ds = kernels.softmax_backward(do5 @ v5.swapaxes(-1, -2), p, ctx.scale)
        if ctx.needs_input_grad[0]:
            dq = (ds @ k5).reshape(q.shape)  # S = Q K^T  =>  dQ = dS K
        if ctx.needs_input_grad[1]:
            dk = (ds.swapaxes(-1, -2) @ q5).sum(axis=-3).reshape(k.shape)  # dK = dS^T Q
    return dq, dk, dv


def _allowed(xp, mask, ndim, n_kv, group, Tq, Tk, is_causal, window):
    """The combined visibility (boolean mask AND causal/window) in the grouped layout, or None."""
    allowed = _grouped_mask(mask, ndim, n_kv, group)
    positional = _position_mask(xp, Tq, Tk, is_causal, window)
    if positional is None:
        return allowed
    return positional if allowed is None else allowed & positional


def _keep_scale(dropout_p: float) -> float:
    """1 / (1 - p): the factor kept probabilities are scaled by (0 when p = 1: all dropped)."""
    return 1.0 / (1.0 - dropout_p) if dropout_p < 1.0 else 0.0


# ---------------------------------------------------------------- the functional wrapper
def _shape(x) -> tuple:
    return tuple(x.shape)


def scaled_dot_product_attention(
    query,
    key,
    value,
    attn_mask=None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    *,
    window: int | None = None,
):
    """softmax(Q K^T * scale + mask) V, PyTorch's signature and semantics, one fused op.

    query [..., H, Tq, D], key [..., Hkv, Tk, D], value [..., Hkv, Tk, Dv] (the leading dims
    equal; [T, D] inputs without batch or head dims work too). Returns [..., H, Tq, Dv].
    ``attn_mask``: bool (True = attend) or float (added), broadcastable to [..., H, Tq, Tk];
    no gradient flows into it. ``is_causal``: top-left causal mask tril(ones(Tq, Tk)).
    ``enable_gqa``: Hkv may divide H; query head h uses kv head h // (H // Hkv).
    ``window=W`` (keyword-only, not in PyTorch): causal sliding window i - W < j <= i.
    ``dropout_p``: dropout on the attention probabilities (always applied when > 0).
    Fully masked rows give zeros (and zero gradients), never NaN.

    >>> import tinyllm, tinyllm.functional as F
    >>> q = k = v = tinyllm.ones(1, 2, 3, 4)
    >>> F.scaled_dot_product_attention(q, k, v, is_causal=True).shape
    (1, 2, 3, 4)
    """
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{_OP}: {name} must be a Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{_OP}: {name} must be floating point, got dtype {t.dtype}")
        if t.ndim < 2:
            raise ValueError(f"{_OP}: {name} must have at least 2 dims [T, D], got {_shape(t)}")
    qs, ks, vs = _shape(query), _shape(key), _shape(value)
    shapes = f"query {qs}, key {ks}, value {vs}"
    if not query.dtype == key.dtype == value.dtype:
        raise TypeError(
            f"{_OP}: query, key and value must have the same dtype, got {query.dtype}, "
            f"{key.dtype}, {value.dtype}"
        )
    if not query.ndim == key.ndim == value.ndim:
        raise ValueError(
            f"{_OP}: query, key and value must have the same number of dims ({shapes})"
        )
    if qs[-1] != ks[-1]:
        raise ValueError(
            f"{_OP}: query and key must have the same head size D (last dim), got {shapes}"
        )
    if ks[:-1] != vs[:-1]:
        raise ValueError(
            f"{_OP}: key and value must agree in all dims but the last ([..., Hkv, Tk]), "
            f"got {shapes}"
        )
    if query.ndim >= 3:
        if qs[:-3] != ks[:-3]:
            raise ValueError(f"{_OP}: query and key must have the same batch dims, got {shapes}")
        H, Hkv = qs[-3], ks[-3]
        if enable_gqa:
            if Hkv == 0 or H % Hkv:
                raise ValueError(
                    f"{_OP}: with enable_gqa the number of query heads ({H}) must be divisible "
                    f"by the number of key/value heads ({Hkv}); got {shapes}"
                )
        elif H != Hkv:
            raise ValueError(
                f"{_OP}: query has {H} heads but key/value have {Hkv}; pass enable_gqa=True "
                f"for grouped-query attention ({shapes})"
            )
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"{_OP}: dropout_p must be in [0, 1], got {dropout_p}")
    if window is not None and (
        isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1
    ):
        raise ValueError(f"{_OP}: window must be a positive int (keys per query), got {window!r}")
    if attn_mask is not None and is_causal:
        raise ValueError(
            f"{_OP}: attn_mask and is_causal cannot both be set (as in PyTorch); fold the causal "
            "mask into attn_mask"
        )
    if scale is None:
        scale = 1.0 / math.sqrt(qs[-1]) if qs[-1] else 1.0
    scale = float(scale)

    xp = get_array_module(query.data)
    scores_shape = qs[:-1] + (ks[-2],)  # [..., H, Tq, Tk]
    mask = bias = None
    if attn_mask is not None:
        m = attn_mask.data if isinstance(attn_mask, Tensor) else xp.asarray(attn_mask)
        try:
            fits = xp.broadcast_shapes(m.shape, scores_shape) == scores_shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(
                f"{_OP}: attn_mask of shape {_shape(m)} does not broadcast to the attention "
                f"scores [..., H, Tq, Tk] = {scores_shape} ({shapes})"
            )
        if m.dtype.kind == "b":
            mask = m
        elif backend.is_floating(m.dtype):
            bias = m.astype(_work_dtype(query.dtype), copy=False)
        else:
            raise TypeError(f"{_OP}: attn_mask must be bool or floating point, got {m.dtype}")

    keep = None
    if dropout_p > 0.0:
        gen = backend.generator(query.device)
        keep = gen.random(scores_shape) >= dropout_p  # [..., H, Tq, Tk] bool
    return ScaledDotProductAttention.apply(
        query, key, value, mask, bias, bool(is_causal), window, scale, float(dropout_p), keep
    )
