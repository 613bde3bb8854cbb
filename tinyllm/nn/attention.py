"""``Attention``: multi-head self-attention covering MHA, GQA and MQA, with a KV cache.

Shapes: B batch, T new tokens, C = d_model, H query heads, Hkv key/value heads, D head size,
G = H / Hkv query heads per key/value head, Tk = keys attended (cache + new tokens).

    q = x Wq^T  -> [B, T, H, D]   -> [B, H, T, D]          (q_proj: [H*D, C])
    k = x Wk^T  -> [B, T, Hkv, D] -> [B, Hkv, T, D]        (k_proj: [Hkv*D, C])
    v = x Wv^T  -> [B, T, Hkv, D] -> [B, Hkv, T, D]        (v_proj: [Hkv*D, C])
    q, k = rope(q, offset), rope(k, offset)                (positional="rope")
    k, v = cache.append(k, v)                              ([B, Hkv, Tk, D], when decoding)
    S[b, h] = scale q[b, h] k[b, h // G]^T + bias[h]       (bias: ALiBi or T5, [H, T, Tk])
    S = -inf where key j is not visible to query i         (causal / window / attn_mask)
    o[b, h] = softmax(S[b, h]) v[b, h // G]                -> [B, H, T, D]
    y = o Wo^T                                             (o_proj: [C, H*D]) -> [B, T, C]

n_kv_heads = n_heads is multi-head attention (MHA), 1 < n_kv_heads < n_heads grouped-query
attention (GQA, Ainslie et al. 2023), n_kv_heads = 1 multi-query attention (MQA, Shazeer
2019). Query head h reads key/value head h // G, as PyTorch's ``repeat_interleave`` (so an
MHA whose k/v weights repeat each GQA kv head's rows G times computes the same function).
K and V are never repeated in memory: ``F.scaled_dot_product_attention(..., enable_gqa=True)``
broadcasts them over the G query heads of a group, and its backward sums dK, dV over them.

Positions in the causal mask are absolute: with ``past`` tokens in the cache, query i sits
at position past + i and key j at position j; key j is visible iff j <= past + i (and
j > past + i - window with a sliding window). A single decoded token thus sees every cached
key. ALiBi and T5 biases use the same positions.

Parameter names are Llama's (``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``); a fused
``c_attn`` (GPT-2) maps as Wq, Wk, Wv = c_attn.weight^T split in three (GPT-2's Conv1D stores
[in, out]). T5's table is ``relative_attention_bias.weight`` [num_buckets, H], as in HF.
The backward of every step is the fused ops' (linear, rotary, attention); a learned T5 bias
takes a composite softmax path, because the fused attention treats a float mask as a
constant (it gives it no gradient).
"""

from __future__ import annotations

import numpy as np

import tinyllm.functional as F
from tinyllm import backend
from tinyllm.backend import get_array_module
from tinyllm.nn.kv_cache import KVCache
from tinyllm.nn.layers import Linear
from tinyllm.nn.module import Module
from tinyllm.nn.positional import ALiBi, RotaryEmbedding, T5RelativePositionBias
from tinyllm.tensor import Tensor

__all__ = ["Attention", "attend", "check_heads"]

_POSITIONAL = (None, "rope", "alibi", "t5")


def check_heads(
    name: str, d_model: int, n_heads: int, n_kv_heads: int | None, head_dim: int | None
) -> tuple[int, int]:
    """(n_kv_heads, head_dim) after checking the head configuration, with clear errors."""
    for arg, value in (("d_model", d_model), ("n_heads", n_heads)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"{name}: {arg} must be a positive int, got {value!r}")
    n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
    if (
        isinstance(n_kv_heads, bool)
        or not isinstance(n_kv_heads, (int, np.integer))
        or (n_kv_heads <= 0)
    ):
        raise ValueError(f"{name}: n_kv_heads must be a positive int, got {n_kv_heads!r}")
    if n_heads % n_kv_heads:
        raise ValueError(
            f"{name}: n_heads={n_heads} must be divisible by n_kv_heads={n_kv_heads} "
            f"(each key/value head serves n_heads / n_kv_heads query heads)"
        )
    if head_dim is None:
        if d_model % n_heads:
            raise ValueError(
                f"{name}: d_model={d_model} must be divisible by n_heads={n_heads} "
                f"(head size = d_model / n_heads), or pass head_dim explicitly"
            )
        head_dim = d_model // n_heads
    elif head_dim <= 0:
        raise ValueError(f"{name}: head_dim must be positive, got {head_dim}")
    return int(n_kv_heads), int(head_dim)


def _visibility(xp, Tq: int, Tk: int, causal: bool, window: int | None):
    """Bool [Tq, Tk], True where key j is visible to query i at position (Tk - Tq) + i.

    None when every key is visible (no mask needed).
    """
    if not causal:
        return None
    i = xp.arange(Tq)[:, None] + (Tk - Tq)  # absolute query positions
    j = xp.arange(Tk)[None, :]  # absolute key positions
    allowed = j <= i
    if window is not None:
        allowed &= j > i - window
    return None if bool(allowed.all()) else allowed


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = True,
    window: int | None = None,
    bias: Tensor | None = None,
    attn_mask=None,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> Tensor:
    """softmax(scale q k^T + bias, masked) v for q [B, H, Tq, D], k/v [B, Hkv, Tk, D*].

    The queries are the last Tq of the Tk positions (bottom-right aligned: query i is at
    position Tk - Tq + i), which is what decoding against a KV cache needs. ``bias``: an
    additive float tensor broadcastable to [B, H, Tq, Tk] (ALiBi, T5); ``attn_mask``: bool
    (True = attend) or float (added), broadcastable likewise. Returns [B, H, Tq, Dv].

    One call of ``F.scaled_dot_product_attention`` (GQA without repeating K/V); a ``bias``
    that requires grad (learned ALiBi slopes, T5 buckets) gets its gradient through SDPA's
    float mask.
    """
    xp = get_array_module(q.data)
    Tq, Tk = q.shape[-2], k.shape[-2]
    gqa = q.shape[-3] != k.shape[-3]
    if bias is None and attn_mask is None:
        if Tq == Tk:  # no cache: top-left == bottom-right alignment, use the fused flags
            return F.scaled_dot_product_attention(
                q,
                k,
                v,
                dropout_p=dropout_p,
                is_causal=causal and window is None,
                scale=scale,
                enable_gqa=gqa,
                window=window if causal else None,
            )
        visible = _visibility(xp, Tq, Tk, causal, window)
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=visible, dropout_p=dropout_p, scale=scale, enable_gqa=gqa
        )

    # general case: one bool "allowed" and one float "additive" term (which may be learned:
    # SDPA gives a float mask its gradient, summed back to the bias's broadcast shape)
    allowed = _visibility(xp, Tq, Tk, causal, window)
    additive = bias
    if attn_mask is not None:
        m = attn_mask if isinstance(attn_mask, Tensor) else Tensor(xp.asarray(attn_mask))
        if m.dtype.kind == "b":
            allowed = m.data if allowed is None else allowed & m.data
        else:
            additive = m if additive is None else additive + m
    if additive is None:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=dropout_p, scale=scale, enable_gqa=gqa
        )
    if allowed is not None:
        additive = additive + Tensor(xp.where(allowed, 0.0, -xp.inf).astype(q.dtype))
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=additive, dropout_p=dropout_p, scale=scale, enable_gqa=gqa
    )


class Attention(Module):
    """Multi-head self-attention (MHA / GQA / MQA by ``n_kv_heads``) with an optional KV cache.

    Args:
        d_model: C, the width of x [B, T, C].
        n_heads: H query heads.
        n_kv_heads: Hkv key/value heads (default H: MHA; 1: MQA); must divide H.
        bias: biases on the four projections (GPT-2, Qwen: yes; Llama: no).
        dropout: dropout on the attention probabilities (training only).
        positional: None, "rope", "alibi" or "t5" (relative positions inside attention).
        rope_base: RoPE's base (10000; Llama 3: 500000).
        causal: mask future keys (decoder) or not (encoder).
        window: sliding-window size W (query sees W keys including itself); needs causal.
        head_dim: D (default C / H).
        rope_layout, rope_scaling: see ``RotaryEmbedding``.
        scale: score scale (default 1/sqrt(D); T5 uses 1.0).
        t5_num_buckets, t5_max_distance: T5's bucket config (defaults 32, 128).
        relative_attention_bias: a ``T5RelativePositionBias`` to share between layers.

    forward(x [B, T, C], cache=None, position_offset=None, attn_mask=None) -> y [B, T, C].
    With ``cache`` (a ``KVCache``), the new tokens start at position ``len(cache)``
    (or ``position_offset`` if given, for RoPE/learned positions), their k, v are appended,
    and they attend to all cached keys. ``attn_mask``: bool (True = attend) or float,
    broadcastable to [B, H, T, Tk] (e.g. a padding mask [B, 1, 1, Tk]); it is combined with
    the causal mask.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        bias: bool = False,
        dropout: float = 0.0,
        positional: str | None = None,
        rope_base: float = 10000.0,
        causal: bool = True,
        window: int | None = None,
        *,
        head_dim: int | None = None,
        rope_layout: str = "half",
        rope_scaling=None,
        scale: float | None = None,
        t5_num_buckets: int = 32,
        t5_max_distance: int = 128,
        relative_attention_bias: T5RelativePositionBias | None = None,
        dtype=None,
        device=None,
    ) -> None:
        super().__init__()
        n_kv_heads, head_dim = check_heads("Attention", d_model, n_heads, n_kv_heads, head_dim)
        if positional not in _POSITIONAL:
            raise ValueError(
                f"Attention: positional must be one of {_POSITIONAL}, got {positional!r}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"Attention: dropout must be in [0, 1), got {dropout}")
        if window is not None:
            if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
                raise ValueError(f"Attention: window must be a positive int, got {window!r}")
            if not causal:
                raise ValueError("Attention: a sliding window needs causal=True")
        if positional == "rope" and head_dim % 2:
            raise ValueError(f"Attention: RoPE needs an even head size, got head_dim={head_dim}")
        self.d_model, self.n_heads, self.n_kv_heads = int(d_model), int(n_heads), n_kv_heads
        self.head_dim, self.dropout, self.positional = head_dim, float(dropout), positional
        self.causal, self.window, self.scale = bool(causal), window, scale
        kw = {"dtype": dtype, "device": device}
        self.q_proj = Linear(d_model, n_heads * head_dim, bias=bias, **kw)
        self.k_proj = Linear(d_model, n_kv_heads * head_dim, bias=bias, **kw)
        self.v_proj = Linear(d_model, n_kv_heads * head_dim, bias=bias, **kw)
        self.o_proj = Linear(n_heads * head_dim, d_model, bias=bias, **kw)
        self.rotary = self.alibi = self.relative_attention_bias = None
        if positional == "rope":
            self.rotary = RotaryEmbedding(head_dim, rope_base, rope_layout, rope_scaling)
        elif positional == "alibi":
            self.alibi = ALiBi(n_heads)
        elif positional == "t5":
            if relative_attention_bias is None:
                relative_attention_bias = T5RelativePositionBias(
                    t5_num_buckets, t5_max_distance, n_heads, bidirectional=not causal, **kw
                )
            elif relative_attention_bias.n_heads != n_heads:
                raise ValueError(
                    f"Attention: the shared T5 bias has {relative_attention_bias.n_heads} heads, "
                    f"the attention {n_heads}"
                )
            self.relative_attention_bias = relative_attention_bias

    def new_cache(self) -> KVCache:
        """An empty cache for this layer."""
        return KVCache()

    def kv_cache_bytes_per_token(self, dtype="float32") -> int:
        """Bytes this layer's cache holds per token: 2 Hkv D itemsize."""
        return 2 * self.n_kv_heads * self.head_dim * backend.as_dtype(dtype).itemsize

    def forward(
        self, x, cache: KVCache | None = None, position_offset: int | None = None, attn_mask=None
    ):
        if not isinstance(x, Tensor) or x.ndim != 3 or x.shape[-1] != self.d_model:
            shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
            raise ValueError(f"Attention: expected x of shape [B, T, {self.d_model}], got {shape}")
        if cache is not None and not isinstance(cache, KVCache):
            raise TypeError(f"Attention: cache must be a KVCache, got {type(cache).__name__}")
        B, T, _ = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        past = len(cache) if cache is not None else 0
        offset = past if position_offset is None else int(position_offset)

        q = self.q_proj(x).reshape(B, T, H, D).transpose(1, 2)  # [B, H, T, D]
        k = self.k_proj(x).reshape(B, T, Hkv, D).transpose(1, 2)  # [B, Hkv, T, D]
        v = self.v_proj(x).reshape(B, T, Hkv, D).transpose(1, 2)  # [B, Hkv, T, D]
        if self.rotary is not None:
            q, k = self.rotary(q, k, offset)
        if cache is not None:
            k, v = cache.append(k, v)  # [B, Hkv, Tk, D]
        Tk = k.shape[-2]

        bias = None
        if self.alibi is not None:
            bias = self.alibi(T, Tk, offset=Tk - T, dtype=q.dtype)  # [H, T, Tk]
        elif self.relative_attention_bias is not None:
            bias = self.relative_attention_bias(T, Tk, offset=Tk - T)  # [1, H, T, Tk]
            bias = bias if bias.dtype == q.dtype else bias.to(q.dtype)
        o = attend(
            q,
            k,
            v,
            causal=self.causal,
            window=self.window,
            bias=bias,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            scale=self.scale,
        )
        o = o.transpose(1, 2).reshape(B, T, H * D)  # [B, T, H*D]
        return self.o_proj(o)

    def extra_repr(self) -> str:
        extras = f", window={self.window}" if self.window is not None else ""
        return (
            f"d_model={self.d_model}, n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}, "
            f"head_dim={self.head_dim}, positional={self.positional!r}, causal={self.causal}"
            + extras
        )
