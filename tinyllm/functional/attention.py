"""Scaled dot-product attention: three Functions (fused, flash, general), one dispatcher.

Forward, per batch entry and query head (q_i: row i of Q [Tq, D]; K, V: [Tk, D], [Tk, Dv]):

    S_ij  = scale * q_i . k_j + bias_ij          scale = 1/sqrt(D) unless given
    S_ij  = -inf where key j is not allowed      (boolean mask, causal, sliding window)
    lse_i = log sum_j exp(S_ij)                  (-inf on a row with no allowed key)
    P_ij  = exp(S_ij - lse_i)                    (softmax over keys; 0 on a fully masked row)
    P~_ij = P_ij * keep_ij / (1 - p)             (dropout on the probabilities; keep saved, bool)
    O_i   = sum_j P~_ij v_j

Backward (FlashAttention, Dao 2022, section 3.1 and appendix B.2), with D_i = rowsum(dO * O)
= rowsum(P * dP) because O = P~ V:

    dV    = P~^T dO
    dP~   = dO V^T;  dP = dP~ * keep / (1 - p)
    dS    = P * (dP - D)
    dBias = dS                                   (the engine sums it to the mask's shape)
    dQ    = scale * dS K
    dK    = scale * dS^T Q

Grouped-query attention (GQA/MQA, ``enable_gqa=True``): H query heads share Hkv key/value heads,
query head h reading kv head h // (H / Hkv), as PyTorch's ``repeat_interleave`` does. The
computation runs in a grouped layout [..., Hkv, G, T, D] (G = H / Hkv) where K and V broadcast
over G, so no repeated copy of K or V is made; dK and dV sum over the G query heads of a group.

Semantics (PyTorch's ``torch.nn.functional.scaled_dot_product_attention``):
- ``attn_mask`` boolean: True = take part in attention (PyTorch's convention); float: added to
  the scores, and differentiable like any input (dBias = dS, summed over the dims it was
  broadcast along): learned biases such as T5's buckets or trainable ALiBi slopes train
  through it. Either broadcasts to [..., H, Tq, Tk].
- ``is_causal=True`` uses the top-left aligned causal mask tril(ones(Tq, Tk)): query i sees
  keys j <= i. With Tq != Tk (decoding against a KV cache) this is *not* the bottom-right
  alignment of FlashAttention >= 2.1; pass an explicit mask there. As in PyTorch, giving both
  ``attn_mask`` and ``is_causal`` is an error.
- ``window=W`` (a tinyllm extension, keyword-only): causal sliding window, query i sees keys j
  with i - W < j <= i (W keys including itself, Mistral's ``sliding_window``; FlashAttention's
  ``window_size=(W - 1, 0)``), top-left aligned like ``is_causal``; it may be combined with a
  boolean or float ``attn_mask``.
- A fully masked row (no key allowed, or every score -inf) returns zeros with zero gradients,
  never NaN, and its lse is -inf (the log of an empty sum): the convention of FlashAttention and
  of ``tinyllm.kernels``, and PyTorch's output since its math path's ``_safe_softmax`` (2.5).
- ``dropout_p > 0`` applies dropout to the attention probabilities, scaled by 1 / (1 - p), as
  PyTorch does, whenever it is given (the function has no training flag: modules pass 0 in
  eval mode). The keep mask is drawn from ``tinyllm.backend.generator(device)`` as
  ``generator.random([..., H, Tq, Tk]) >= p`` (so ``tinyllm.manual_seed`` makes it
  reproducible) and saved as a bool array for backward.

float16/bfloat16 inputs are computed in float32 (scores, lse and sums) and cast back.
Three Functions; ``_path`` picks one per call:
- ``FusedScaledDotProductAttention`` (float32/64, no mask other than causal or a boolean
  key-padding mask, no window, no dropout): batched GEMMs for Q K^T, P V and the gradients
  around ``tinyllm.kernels.softmax_forward(S, scale, causal, key_mask)`` and
  ``softmax_backward`` (scale, causal mask and key-padding mask applied inside the kernel,
  one pass each); P is saved, since at these sizes keeping it is cheaper than recomputing
  S. A key-padding mask is a boolean ``attn_mask`` of shape [B, 1, 1, Tk] (or [1, 1, 1, Tk],
  any number of leading dims: [..., 1, 1, Tk]), BERT's padding mask: the kernel hides key j
  of batch entry b where it is False, and a fully hidden row gives zeros, as below. When no
  input needs a gradient (inference: ``no_grad`` or no input requiring grad) on NumPy arrays,
  the forward runs in chunks of the batch entries (``INFERENCE_CHUNK_SCORES`` scores each:
  S, P stay in cache, nothing is saved), writes O in the [..., Tq, H, Dv] memory layout
  the output projection reads (the returned [..., H, Tq, Dv] is a transposed view, so
  ``o.transpose(1, 2).reshape(B, T, C)`` copies nothing), and the flash path is not used
  (it exists to bound saved memory, and the chunks bound it already);
- ``FlashScaledDotProductAttention``, under the same conditions (the key-padding mask goes
  to the kernels' ``key_padding_mask``) once the call's scores
  (B H Tq Tk) reach ``flash_min_scores`` (``FLASH_MIN_SCORES`` on the CPU; on a GPU, once
  the fused path's score arrays would pass ``FLASH_DEVICE_MEMORY_FRACTION`` of the device's
  memory), for [B, H, T, D] inputs with Dv == D (the kernels'
  layout): the tiled FlashAttention of ``tinyllm.kernels`` (Numba on the CPU, CUDA on a GPU),
  an online softmax over key blocks forward, P recomputed block by block backward from the
  saved lse; no [Tq, Tk] array is allocated;
- ``GeneralScaledDotProductAttention`` (boolean and float masks, windows, dropout, 16-bit
  floats): the array code here, lse saved, P recomputed in backward. It is the only path that
  takes a float mask (or a boolean mask other than a key-padding one), so a float mask's
  gradient is computed here.
"""

from __future__ import annotations

import math

import numpy as np

from tinyllm import backend, kernels
from tinyllm.backend import get_array_module
from tinyllm.function import Function
from tinyllm.grad_mode import is_grad_enabled
from tinyllm.tensor import Tensor

__all__ = ["scaled_dot_product_attention"]

_OP = "scaled_dot_product_attention"

# From this many scores per call (B H Tq Tk) attention runs the tiled FlashAttention kernel,
# which keeps no [Tq, Tk] array. The fused path is faster on a CPU at every length measured
# (experiments/attention_paths.py, 2 cores, causal fwd + bwd, B 1, H 4, D 64: flash takes
# 1.3x its time at T 128, 3.0x at T 512, 1.9x at T 2048), so the switch is set by memory:
# 2^24 float32 probabilities kept are 64 MB. This threshold is for NumPy (CPU) arrays.
FLASH_MIN_SCORES = 1 << 24
# On a GPU the fused path (cuBLAS GEMMs around the softmax kernel) runs until its score-sized
# arrays would take more than this share of the device's memory: about 3 of them live at
# once (S or P saved, dP and dS in the backward), so flash from
#     B H Tq Tk >= FLASH_DEVICE_MEMORY_FRACTION * total device bytes / (3 * itemsize)
# scores (an 80 GB H100, float32: 8.3e8 scores, e.g. B H = 32 at T = 5120). Total, not free,
# memory: the choice depends on the arguments and the device only, never on what happens
# to be allocated, so a call is reproducible. 0 sends every call to flash.
FLASH_DEVICE_MEMORY_FRACTION = 1 / 8
# Inference on the CPU (no input needs a gradient): the fused forward runs over chunks of
# batch entries holding at most this many scores (at least one entry per chunk): 2^20
# float32 scores are 4 MB, so S and P of a chunk stay in the cache between the GEMMs and
# the softmax kernel, where one [B, H, Tq, Tk] array would stream through memory (at B 128,
# H 12, T 256: 400 MB).
INFERENCE_CHUNK_SCORES = 1 << 20


def _device_memory_bytes() -> int:
    """Total memory of the current CUDA device (cached per device: a property, no sync)."""
    import cupy

    device = cupy.cuda.runtime.getDevice()
    if device not in _DEVICE_BYTES:
        props = cupy.cuda.runtime.getDeviceProperties(device)
        _DEVICE_BYTES[device] = int(props["totalGlobalMem"])
    return _DEVICE_BYTES[device]


_DEVICE_BYTES: dict[int, int] = {}


def flash_min_scores(xp, dtype) -> int:
    """Scores per call (B H Tq Tk) from which the flash path runs, for arrays of ``xp``.

    NumPy: ``FLASH_MIN_SCORES``. CuPy: ``FLASH_DEVICE_MEMORY_FRACTION`` of the device's
    memory over 3 score arrays of ``dtype``: fraction * bytes / (3 * itemsize).
    """
    if xp is np:
        return FLASH_MIN_SCORES
    budget = FLASH_DEVICE_MEMORY_FRACTION * _device_memory_bytes()
    return int(budget // (3 * np.dtype(dtype).itemsize))


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


def _sum_groups(a):
    """a [..., Hkv, G, T, D] summed over its G query heads: [..., Hkv, T, D] (a view when G
    is 1, which saves a copy of the whole array)."""
    return a[..., 0, :, :] if a.shape[-3] == 1 else a.sum(axis=-3)


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


def _grouped_bias(bias, ndim: int, n_kv: int, group: int, work):
    """The float mask (or None) in the grouped layout, as ``work`` floats."""
    return None if bias is None else _grouped_mask(bias, ndim, n_kv, group).astype(work, copy=False)


def _allowed(xp, mask, ndim, n_kv, group, Tq, Tk, is_causal, window):
    """The combined visibility (boolean mask AND causal/window) in the grouped layout, or None:
    [Tq, Tk] bool, True where key j is visible to query i (top-left aligned), AND the mask."""
    allowed = _grouped_mask(mask, ndim, n_kv, group)
    if not is_causal and window is None:
        return allowed
    i = xp.arange(Tq)[:, None]
    j = xp.arange(Tk)[None, :]
    positional = j <= i
    if window is not None:
        positional &= j > i - window
    return positional if allowed is None else allowed & positional


def _key_padding(mask, q, k):
    """The key-padding form of a boolean mask, or None when it has another form.

    A mask of shape [..., 1, 1, Tk] (after prepending unit dims up to q.ndim) whose leading
    dims are all 1 or equal q's batch dims hides keys per batch entry only: it returns
    keep [Bm, Tk] (Bm = 1 or the product of q's batch dims), C-contiguous bool.
    """
    if mask is None or q.ndim < 3 or mask.ndim > q.ndim:
        return None
    shape = (1,) * (q.ndim - mask.ndim) + tuple(mask.shape)
    if shape[-3:-1] != (1, 1) or shape[-1] != k.shape[-2]:
        return None
    lead, batch = shape[:-3], tuple(q.shape[:-3])
    if all(d == 1 for d in lead):
        rows = 1
    elif lead == batch:
        rows = math.prod(batch)
    else:
        return None
    xp = get_array_module(mask)
    return xp.ascontiguousarray(mask.reshape(rows, shape[-1]))


def _batch_softmax(s, scale, is_causal, keep):
    """P = softmax(scale S) over keys for S [..., Hkv, G, Tq, Tk] (causal, key-padding mask
    keep [Bm, Tk] with Bm = 1 or the batch entries of S), through the softmax kernel."""
    if keep is None or keep.shape[0] == 1:
        return kernels.softmax_forward(s, scale, is_causal, key_mask=keep)
    flat = s.reshape((keep.shape[0],) + s.shape[-4:])  # [B, Hkv, G, Tq, Tk]
    return kernels.softmax_forward(flat, scale, is_causal, key_mask=keep).reshape(s.shape)


def _inference_forward(q, k, v, is_causal, scale, keep):
    """O = softmax(scale Q K^T, masked) V without saving anything: chunks of batch entries
    of at most INFERENCE_CHUNK_SCORES scores; O written in [..., Tq, H, Dv] memory."""
    q5, k5, v5, Hkv, G = _grouped_qkv(q, k, v)  # [..., Hkv, G|1, T, D]
    Tq, Tk, Dv = q.shape[-2], k.shape[-2], v.shape[-1]
    nb = math.prod(q5.shape[:-4])
    q6, k6, v6 = (a.reshape((nb,) + a.shape[-4:]) for a in (q5, k5, v5))
    if q.ndim == 4:  # memory [B, Tq, H, Dv]; o6 is the [B, Hkv, G, Tq, Dv] view into it
        memory = np.empty((nb, Tq, Hkv * G, Dv), q.dtype)
        o6 = memory.reshape(nb, Tq, Hkv, G, Dv).transpose(0, 2, 3, 1, 4)
        result = memory.transpose(0, 2, 1, 3)  # [B, H, Tq, Dv]
    else:
        o6 = np.empty((nb, Hkv, G, Tq, Dv), q.dtype)
        result = o6.reshape(q.shape[:-1] + (Dv,))
    step = max(1, INFERENCE_CHUNK_SCORES // max(Hkv * G * Tq * Tk, 1))
    for b0 in range(0, nb, step):
        sl = slice(b0, b0 + step)
        chunk_keep = keep if keep is None or keep.shape[0] == 1 else keep[sl]
        # P = softmax(scale Q K^T) with the causal / key-padding mask inside the kernel
        p = _batch_softmax(q6[sl] @ k6[sl].swapaxes(-1, -2), scale, is_causal, chunk_keep)
        np.matmul(p, v6[sl], out=o6[sl])  # O = P V
    return result


def _seq_heads(x, a: int, b: int, L: int, H: int):
    """Rows a..b of x [N, H*d] (whole sequences of length L) as a [m, H, L, d] view."""
    return x[a:b].reshape((b - a) // L, L, H, x.shape[1] // H).transpose(0, 2, 1, 3)


def packed_attention(query, key, value, lengths, n_heads: int, scale: float | None = None):
    """Bidirectional attention over sequences laid end to end, for inference (no autograd).

    query, key [N, H*D] and value [N, H*Dv] Tensors hold the rows of sequences of
    ``lengths`` (ints summing to N) one after the other (a padded batch's real tokens, in
    order: ``BertModel(skip_padding=True)``). Row i of sequence b attends to the rows of b
    only, which is what a key-padding mask computes at the real positions of a padded batch,
    without the padded work: per sequence, softmax(scale q k^T) v over its L x L scores. Runs
    of equal lengths (consecutive sequences of one length, as length-sorted batches have)
    are one batched GEMM each, in chunks of ``INFERENCE_CHUNK_SCORES`` scores; the scores
    go through ``tinyllm.kernels.softmax_forward``. Returns [N, H*Dv].

    Inference only: an input that requires grad under grad mode raises (train through
    ``scaled_dot_product_attention`` with the padding mask).
    """
    op = "packed_attention"
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
        if t.ndim != 2:
            raise ValueError(f"{op}: {name} must be [N, heads * head size], got {_shape(t)}")
    if is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad):
        raise RuntimeError(
            f"{op}: inference only (no backward); under grad use scaled_dot_product_attention "
            "with a key-padding mask"
        )
    q, k, v = query.data, key.data, value.data
    N, C = q.shape
    H = int(n_heads)
    if H < 1 or C % H or v.shape[1] % H or k.shape != q.shape or v.shape[0] != N:
        raise ValueError(
            f"{op}: query {_shape(q)}, key {_shape(k)}, value {_shape(v)} do not split into "
            f"{n_heads} heads of rows [N, H * D]"
        )
    lengths = [int(n) for n in np.asarray(lengths).reshape(-1)]
    if any(n < 0 for n in lengths) or sum(lengths) != N:
        raise ValueError(f"{op}: lengths must be >= 0 and sum to N = {N}, got sum {sum(lengths)}")
    D, Dv = C // H, v.shape[1] // H
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    xp = get_array_module(q)
    out = xp.empty((N, H * Dv), q.dtype)  # [N, H*Dv]
    start, i = 0, 0
    while i < len(lengths):
        L, j = lengths[i], i
        while j < len(lengths) and lengths[j] == L:
            j += 1
        n = j - i  # sequences i..j-1 have length L: rows start .. start + n L
        step = max(1, INFERENCE_CHUNK_SCORES // max(H * L * L, 1))
        for c0 in range(0, n if L else 0, step):
            a, b = start + c0 * L, start + min(n, c0 + step) * L
            qs, ks, vs, os_ = (_seq_heads(x, a, b, L, H) for x in (q, k, v, out))
            # P = softmax(scale Q K^T) over the sequence's own keys;  O = P V
            p = kernels.softmax_forward(qs @ ks.swapaxes(-1, -2), scale)
            xp.matmul(p, vs, out=os_)
        start += n * L
        i = j
    return Tensor(out)


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


def _keep_scale(dropout_p: float) -> float:
    """1 / (1 - p): the factor kept probabilities are scaled by (0 when p = 1: all dropped)."""
    return 1.0 / (1.0 - dropout_p) if dropout_p < 1.0 else 0.0


# ---------------------------------------------------------------- the three Functions
class FusedScaledDotProductAttention(Function):
    """No mask but causal or key padding, float32/64: GEMMs around the scaled (masked) softmax
    kernels; P saved (inference on NumPy: chunked, nothing saved)."""

    @staticmethod
    def forward(ctx, q, k, v, is_causal, scale, keep=None):
        # q: [..., H, Tq, D]; k: [..., Hkv, Tk, D]; v: [..., Hkv, Tk, Dv]
        # keep: bool [Bm, Tk] key-padding mask (Bm = 1 or the batch entries) or None
        if not any(ctx.needs_input_grad) and get_array_module(q) is np:
            return _inference_forward(q, k, v, is_causal, scale, keep)
        q5, k5, v5, _, _ = _grouped_qkv(q, k, v)  # [..., Hkv, G|1, T, D]
        # P = softmax(scale Q K^T), causal / key-padding mask inside the kernel;  O = P V
        p = _batch_softmax(q5 @ k5.swapaxes(-1, -2), scale, is_causal, keep)
        out = (p @ v5).reshape(q.shape[:-1] + (v.shape[-1],))
        ctx.save_for_backward(q, k, v, p)  # p: [..., Hkv, G, Tq, Tk]
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, p = ctx.saved_tensors
        q5, k5, v5, Hkv, G = _grouped_qkv(q, k, v)
        do5 = _grouped(dout, Hkv, G)  # [..., Hkv, G, Tq, Dv]
        dq = dk = dv = None
        if ctx.needs_input_grad[2]:
            # O = P V  =>  dV = P^T dO, summed over the G query heads of each kv head
            dv = _sum_groups(p.swapaxes(-1, -2) @ do5).reshape(v.shape)
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            # dP = dO V^T;  P = softmax(scale S)  =>  scale dS = scale P (dP - rowsum(dP P))
            ds = kernels.softmax_backward(do5 @ v5.swapaxes(-1, -2), p, ctx.scale)
            if ctx.needs_input_grad[0]:
                dq = (ds @ k5).reshape(q.shape)  # S = Q K^T  =>  dQ = scale dS K
            if ctx.needs_input_grad[1]:
                dk = _sum_groups(ds.swapaxes(-1, -2) @ q5).reshape(k.shape)  # dK = scale dS^T Q
        return dq, dk, dv, None, None, None


class FlashScaledDotProductAttention(Function):
    """Long sequences, no mask but causal: the tiled FlashAttention kernels; O and lse saved."""

    @staticmethod
    def forward(ctx, q, k, v, is_causal, scale, keep=None):
        # q: [B, H, Tq, D]; k, v: [B, Hkv, Tk, D]; an online softmax over key tiles
        # keep: bool [B|1, Tk] key-padding mask or None (the kernels' key_padding_mask)
        out, lse = kernels.attention_forward(
            q, k, v, causal=is_causal, key_padding_mask=keep, scale=scale
        )
        ctx.save_for_backward(q, k, v, out, lse)  # out: [B, H, Tq, D]; lse: [B, H, Tq]
        ctx.is_causal, ctx.scale, ctx.keep = is_causal, scale, keep  # keep: a constant mask
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        keep = ctx.keep
        # P = exp(S - lse) tile by tile; D = rowsum(dO * O); dS = P (dP - D); dQ, dK, dV
        dq, dk, dv = kernels.attention_backward(
            dout, q, k, v, out, lse, causal=ctx.is_causal, key_padding_mask=keep, scale=ctx.scale
        )
        return dq, dk, dv, None, None, None


class GeneralScaledDotProductAttention(Function):
    """Masks, windows, dropout, 16-bit floats: array code, lse saved, P recomputed."""

    @staticmethod
    def forward(ctx, q, k, v, mask, bias, is_causal, window, scale, dropout_p, keep):
        # q: [..., H, Tq, D]; k: [..., Hkv, Tk, D]; v: [..., Hkv, Tk, Dv]
        # mask: bool, bias: float, each broadcastable to [..., H, Tq, Tk] (or None)
        # keep: bool [..., H, Tq, Tk] (dropout) or None
        xp = get_array_module(q)
        dtype, work = q.dtype, _work_dtype(q.dtype)
        q5, k5, v5, Hkv, G = _grouped_qkv(q, k, v, work)  # [..., Hkv, G|1, T, D]
        allowed = _allowed(xp, mask, q.ndim, Hkv, G, q.shape[-2], k.shape[-2], is_causal, window)
        bias5 = _grouped_bias(bias, q.ndim, Hkv, G, work)  # [..., Hkv|1, G|1, Tq|1, Tk|1]

        # S = scale Q K^T + bias (masked);  lse = log sum exp S;  P = exp(S - lse)
        s = _scores(q5, k5, scale, bias5, allowed)  # [..., Hkv, G, Tq, Tk]
        m = s.max(axis=-1, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)
        e = xp.exp(s - m)
        total = e.sum(axis=-1, keepdims=True)
        alive = total > 0  # False on fully masked rows: P = 0, lse = log 0 = -inf
        total = xp.where(alive, total, 1)
        p = e / total
        lse = xp.where(alive, m + xp.log(total), -xp.inf)[..., 0]  # [..., Hkv, G, Tq]
        # P~ = P * keep / (1 - p);  O = P~ V
        if keep is not None:
            p = p * (_grouped_mask(keep, q.ndim, Hkv, G) * _keep_scale(dropout_p)).astype(work)
        out = (p @ v5).reshape(q.shape[:-1] + (v.shape[-1],)).astype(dtype, copy=False)

        lse = lse.reshape(q.shape[:-1])  # [..., H, Tq]
        ctx.save_for_backward(q, k, v, out, lse, mask, bias, keep)
        ctx.is_causal, ctx.window, ctx.scale, ctx.dropout_p = is_causal, window, scale, dropout_p
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse, mask, bias, keep = ctx.saved_tensors
        xp = get_array_module(q)
        work = _work_dtype(q.dtype)
        Tq, Tk = q.shape[-2], k.shape[-2]
        q5, k5, v5, Hkv, G = _grouped_qkv(q, k, v, work)
        o5 = _grouped(out, Hkv, G).astype(work, copy=False)  # [..., Hkv, G, Tq, Dv]
        do5 = _grouped(dout, Hkv, G).astype(work, copy=False)  # [..., Hkv, G, Tq, Dv]
        lse5 = _grouped(lse[..., None], Hkv, G)  # [..., Hkv, G, Tq, 1]
        lse5 = xp.where(xp.isneginf(lse5), 0, lse5)  # fully masked rows: S = -inf, so P = 0
        allowed = _allowed(xp, mask, q.ndim, Hkv, G, Tq, Tk, ctx.is_causal, ctx.window)
        bias5 = _grouped_bias(bias, q.ndim, Hkv, G, work)  # [..., Hkv|1, G|1, Tq|1, Tk|1]

        # P = exp(S - lse), recomputed (0 on masked entries and fully masked rows)
        p = xp.exp(_scores(q5, k5, ctx.scale, bias5, allowed) - lse5)
        drop = None
        if keep is not None:
            drop = (_grouped_mask(keep, q.ndim, Hkv, G) * _keep_scale(ctx.dropout_p)).astype(work)
        need_q, need_k, need_v, _, need_bias = ctx.needs_input_grad[:5]
        dq = dk = dv = dbias = None
        if need_v:
            # O = P~ V  =>  dV = P~^T dO, summed over the G query heads of each kv head
            p_dropped = p if drop is None else p * drop
            dv = _sum_groups(p_dropped.swapaxes(-1, -2) @ do5)  # [..., Hkv, Tk, Dv]
            dv = dv.reshape(v.shape).astype(v.dtype, copy=False)
        if need_q or need_k or need_bias:
            # dP~ = dO V^T;  P~ = P * drop  =>  dP = dP~ * drop
            dp = do5 @ v5.swapaxes(-1, -2)  # [..., Hkv, G, Tq, Tk]
            if drop is not None:
                dp = dp * drop
            # P = softmax(S)  =>  dS = P * (dP - D),  D = rowsum(dO * O)
            ds = p * (dp - (do5 * o5).sum(axis=-1, keepdims=True))
            if need_bias:
                # S = ... + bias  =>  dBias = dS in [..., H, Tq, Tk]; the engine sums it back
                dbias = ds.reshape(q.shape[:-1] + (Tk,)).astype(bias.dtype, copy=False)
            if need_q:
                # S = scale Q K^T  =>  dQ = scale dS K
                dq = ((ds @ k5) * ctx.scale).reshape(q.shape).astype(q.dtype, copy=False)
            if need_k:
                # S = scale Q K^T  =>  dK = scale dS^T Q, summed over the group
                dk = (_sum_groups(ds.swapaxes(-1, -2) @ q5) * ctx.scale).reshape(k.shape)
                dk = dk.astype(k.dtype, copy=False)
        return dq, dk, dv, None, dbias, None, None, None, None, None


def _path(q, k, v, mask, bias, window, keep, padding=None, record=True) -> type[Function]:
    """The Function that runs a call: general for float masks, boolean masks other than a
    key-padding mask (``padding``: ``_key_padding(mask)``), windows, dropout and 16-bit
    floats; else flash for [B, H, T, D] with Dv == D once there are ``flash_min_scores``
    scores (FLASH_MIN_SCORES on the CPU, a share of device memory on a GPU), unless nothing
    is recorded for backward (``record`` False) on the CPU; else fused."""
    if mask is not None and padding is None:
        return GeneralScaledDotProductAttention
    if not (bias is None and window is None and keep is None):
        return GeneralScaledDotProductAttention
    if q.dtype not in (np.float32, np.float64):
        return GeneralScaledDotProductAttention
    xp = get_array_module(q.data if isinstance(q, Tensor) else q)
    if xp is np and not record:  # inference: the chunked fused forward bounds memory
        return FusedScaledDotProductAttention
    flash = (
        q.ndim == 4
        and v.shape[-1] == q.shape[-1]
        and math.prod(q.shape[:-1]) * k.shape[-2] >= flash_min_scores(xp, q.dtype)
    )
    return FlashScaledDotProductAttention if flash else FusedScaledDotProductAttention


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
    ``attn_mask``: bool (True = attend) or float (added, and differentiable when it is a
    Tensor that requires grad), broadcastable to [..., H, Tq, Tk].
    ``is_causal``: top-left causal mask tril(ones(Tq, Tk)).
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
            bias = attn_mask if isinstance(attn_mask, Tensor) else m  # a Tensor gets a gradient
        else:
            raise TypeError(f"{_OP}: attn_mask must be bool or floating point, got {m.dtype}")

    keep = None
    if dropout_p > 0.0:
        gen = backend.generator(query.device)
        keep = gen.random(scores_shape) >= dropout_p  # [..., H, Tq, Tk] bool
    padding = _key_padding(mask, query, key)  # [Bm, Tk] bool, or None
    record = is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad)
    path = _path(query, key, value, mask, bias, window, keep, padding, record)
    if path is GeneralScaledDotProductAttention:
        return path.apply(
            query, key, value, mask, bias, bool(is_causal), window, scale, float(dropout_p), keep
        )
    return path.apply(query, key, value, bool(is_causal), scale, padding)
