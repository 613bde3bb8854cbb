"""``MultiHeadLatentAttention``: DeepSeek-V2's MLA, with a cache of latents only.

Shapes: B batch, T new tokens, Tk keys, C = d_model, H heads, R = kv_lora_rank (latent),
Rq = q_lora_rank, dn = qk_nope_head_dim, dr = qk_rope_head_dim, dv = v_head_dim.

Keys and values are low-rank: each token's x is compressed to a latent c_KV [R] (plus one
rope key [dr] shared by all heads), and per-head keys and values are up-projections of c_KV
(DeepSeek-V2, arXiv 2405.04434, section 2.1):

    [c_kv, k_rope] = x W_DKV^T                     kv_a_proj_with_mqa: [R + dr, C]
    c_kv = rms_norm(c_kv)                          kv_a_layernorm: [R]
    [k_nope_h, v_h] = c_kv W_UKV_h^T               kv_b_proj: [H (dn + dv), R], no bias
    q = x W_Q^T                                    q_proj: [H (dn + dr), C]       (Rq None)
      or q = rms_norm(x W_DQ^T) W_UQ^T             q_a_proj [Rq, C], q_a_layernorm [Rq],
                                                   q_b_proj [H (dn + dr), Rq]
    [q_nope_h, q_rope_h] = q_h                     (split dn | dr)
    q_rope_h, k_rope = rope(q_rope_h), rope(k_rope)    decoupled RoPE: positions live only
                                                       in the dr dims; k_rope is one per token
    k_h = [k_nope_h, k_rope],  q_h = [q_nope_h, q_rope_h]
    o_h = softmax(q_h k_h^T / sqrt(dn + dr), causal) v_h                  [B, H, T, dv]
    y = [o_1 .. o_H] W_O^T                         o_proj: [C, H dv]

The cache holds only c_kv [B, Tk, R] and the rotated k_rope [B, Tk, dr]: (R + dr) numbers per
token and layer, against 2 H D for MHA (DeepSeek-V2: R = 4 dh, dr = dh / 2, i.e. 4.5 dh).
Because RoPE is kept out of k_nope, the key up-projection can be absorbed into the query
("absorbed" mode, used by default when decoding with a cache):

    q_nope_h . k_nope_h = q_nope_h . (W_UK_h c_kv) = (q_nope_h W_UK_h) . c_kv
    o_h = sum_j p_j W_UV_h c_j = W_UV_h (sum_j p_j c_j)

so attention runs as multi-query attention over the latents, with per-head queries
[q_nope_h W_UK_h, q_rope_h] [R + dr], one shared key [c_kv, k_rope] and one shared value c_kv,
and W_UV_h is applied to the attended latent; no per-head key or value is ever formed.
Both modes compute the same function (the tests check it) and are differentiable.

Parameter names follow HF ``DeepseekV2Attention``. DeepSeek's rope rotates interleaved
pairs (HF permutes the dims first, which permutes q and k alike and leaves scores
unchanged), hence ``rope_layout="interleaved"`` by default. YaRN's mscale is not applied.
"""

from __future__ import annotations

import math

import numpy as np

import tinyllm.functional as F
from tinyllm import backend
from tinyllm.nn.attention import attend
from tinyllm.nn.kv_cache import LatentKVCache
from tinyllm.nn.layers import Linear
from tinyllm.nn.module import Module
from tinyllm.nn.normalization import RMSNorm
from tinyllm.nn.positional import RotaryEmbedding
from tinyllm.tensor import Tensor

__all__ = ["MultiHeadLatentAttention"]


def _positive(name: str, **values) -> None:
    for arg, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise ValueError(f"{name}: {arg} must be a positive int, got {v!r}")


class MultiHeadLatentAttention(Module):
    """Multi-head latent attention (DeepSeek-V2) with decoupled RoPE and a latent KV cache.

    Args:
        d_model: C.   n_heads: H.
        kv_lora_rank: R, the latent size cached per token (DeepSeek-V2: 512).
        qk_nope_head_dim: dn, the position-free part of each query/key head (128).
        qk_rope_head_dim: dr, the rotary part, one key shared by all heads (64; even).
        v_head_dim: dv (128).
        q_lora_rank: Rq for low-rank queries (1536), or None for a full q_proj.
        bias: biases on q_proj / q_a_proj, kv_a_proj_with_mqa and o_proj (never kv_b_proj).
        dropout: attention-probability dropout (training).
        rope_base, rope_layout, rope_scaling: see ``RotaryEmbedding``.
        causal: mask future keys.   norm_eps: eps of the two RMSNorms (1e-6).

    forward(x [B, T, C], cache=None, position_offset=None, attn_mask=None, absorb=None)
    -> y [B, T, C]. ``cache``: a ``LatentKVCache`` (see ``new_cache``); ``absorb``: compute
    in the absorbed latent form (default: only when a cache is given).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        kv_lora_rank: int,
        qk_nope_head_dim: int,
        qk_rope_head_dim: int,
        v_head_dim: int,
        q_lora_rank: int | None = None,
        bias: bool = False,
        dropout: float = 0.0,
        rope_base: float = 10000.0,
        rope_layout: str = "interleaved",
        rope_scaling=None,
        causal: bool = True,
        norm_eps: float = 1e-6,
        dtype=None,
        device=None,
    ) -> None:
        super().__init__()
        name = "MultiHeadLatentAttention"
        _positive(
            name,
            d_model=d_model,
            n_heads=n_heads,
            kv_lora_rank=kv_lora_rank,
            qk_nope_head_dim=qk_nope_head_dim,
            qk_rope_head_dim=qk_rope_head_dim,
            v_head_dim=v_head_dim,
        )
        if q_lora_rank is not None:
            _positive(name, q_lora_rank=q_lora_rank)
        if qk_rope_head_dim % 2:
            raise ValueError(f"{name}: qk_rope_head_dim must be even, got {qk_rope_head_dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{name}: dropout must be in [0, 1), got {dropout}")
        self.d_model, self.n_heads = int(d_model), int(n_heads)
        self.kv_lora_rank, self.q_lora_rank = int(kv_lora_rank), q_lora_rank
        self.qk_nope_head_dim, self.qk_rope_head_dim = int(qk_nope_head_dim), int(qk_rope_head_dim)
        self.v_head_dim, self.dropout, self.causal = int(v_head_dim), float(dropout), bool(causal)
        self.q_head_dim = self.qk_nope_head_dim + self.qk_rope_head_dim
        self.scale = 1.0 / math.sqrt(self.q_head_dim)
        H, R, dr = self.n_heads, self.kv_lora_rank, self.qk_rope_head_dim
        kw = {"dtype": dtype, "device": device}
        if q_lora_rank is None:
            self.q_proj = Linear(d_model, H * self.q_head_dim, bias=bias, **kw)
        else:
            self.q_a_proj = Linear(d_model, q_lora_rank, bias=bias, **kw)
            self.q_a_layernorm = RMSNorm(q_lora_rank, eps=norm_eps, **kw)
            self.q_b_proj = Linear(q_lora_rank, H * self.q_head_dim, bias=False, **kw)
        self.kv_a_proj_with_mqa = Linear(d_model, R + dr, bias=bias, **kw)
        self.kv_a_layernorm = RMSNorm(R, eps=norm_eps, **kw)
        self.kv_b_proj = Linear(R, H * (self.qk_nope_head_dim + self.v_head_dim), bias=False, **kw)
        self.o_proj = Linear(H * self.v_head_dim, d_model, bias=bias, **kw)
        self.rotary = RotaryEmbedding(dr, rope_base, rope_layout, rope_scaling)

    def new_cache(self) -> LatentKVCache:
        return LatentKVCache()

    def kv_cache_bytes_per_token(self, dtype="float32") -> int:
        """Bytes cached per token: (R + dr) itemsize."""
        return (self.kv_lora_rank + self.qk_rope_head_dim) * backend.as_dtype(dtype).itemsize

    def _queries(self, x):
        """q [B, T, H (dn + dr)] from x (full or low-rank)."""
        if self.q_lora_rank is None:
            return self.q_proj(x)
        return self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))

    def forward(
        self,
        x,
        cache: LatentKVCache | None = None,
        position_offset: int | None = None,
        attn_mask=None,
        absorb: bool | None = None,
    ):
        if not isinstance(x, Tensor) or x.ndim != 3 or x.shape[-1] != self.d_model:
            shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
            raise ValueError(
                f"MultiHeadLatentAttention: expected x of shape [B, T, {self.d_model}], got {shape}"
            )
        if cache is not None and not isinstance(cache, LatentKVCache):
            raise TypeError(
                f"MultiHeadLatentAttention: cache must be a LatentKVCache, got "
                f"{type(cache).__name__}"
            )
        B, T, _ = x.shape
        H, R = self.n_heads, self.kv_lora_rank
        dn, dr, dv = self.qk_nope_head_dim, self.qk_rope_head_dim, self.v_head_dim
        past = len(cache) if cache is not None else 0
        offset = past if position_offset is None else int(position_offset)
        absorb = cache is not None if absorb is None else bool(absorb)

        q = self._queries(x).reshape(B, T, H, dn + dr).transpose(1, 2)  # [B, H, T, dn + dr]
        q_nope, q_rope = F.split(q, [dn, dr], dim=-1)  # [B, H, T, dn], [B, H, T, dr]
        c_kv, k_rope = F.split(self.kv_a_proj_with_mqa(x), [R, dr], dim=-1)  # [B,T,R], [B,T,dr]
        c_kv = self.kv_a_layernorm(c_kv)
        q_rope = self.rotary.rotate(q_rope, offset)
        k_rope = self.rotary.rotate(k_rope, offset)  # [B, T, dr], one key for all heads
        if cache is not None:
            c_kv, k_rope = cache.append(c_kv, k_rope)  # [B, Tk, R], [B, Tk, dr]
        Tk = c_kv.shape[-2]
        dropout_p = self.dropout if self.training else 0.0

        if absorb:
            # W_UKV [H, dn + dv, R] -> W_UK [H, dn, R], W_UV [H, dv, R]
            w = self.kv_b_proj.weight.reshape(H, dn + dv, R)
            w_uk, w_uv = w[:, :dn, :], w[:, dn:, :]
            q_latent = q_nope @ w_uk  # [B, H, T, R]: q_nope_h W_UK_h
            q_full = F.cat([q_latent, q_rope], dim=-1)  # [B, H, T, R + dr]
            k_full = F.cat([c_kv, k_rope], dim=-1).unsqueeze(1)  # [B, 1, Tk, R + dr]
            o_latent = attend(
                q_full,
                k_full,
                c_kv.unsqueeze(1),
                causal=self.causal,
                attn_mask=attn_mask,
                dropout_p=dropout_p,
                scale=self.scale,
            )  # [B, H, T, R], MQA over the latents
            o = o_latent @ w_uv.transpose(-1, -2)  # [B, H, T, dv]: W_UV_h (sum_j p_j c_j)
        else:
            kv = self.kv_b_proj(c_kv).reshape(B, Tk, H, dn + dv).transpose(1, 2)  # [B,H,Tk,dn+dv]
            k_nope, v = F.split(kv, [dn, dv], dim=-1)  # [B, H, Tk, dn], [B, H, Tk, dv]
            k_shared = k_rope.unsqueeze(1).expand(B, H, Tk, dr)  # [B, H, Tk, dr]
            k = F.cat([k_nope, k_shared], dim=-1)  # [B, H, Tk, dn + dr]
            q_full = F.cat([q_nope, q_rope], dim=-1)  # [B, H, T, dn + dr]
            o = attend(
                q_full,
                k,
                v,
                causal=self.causal,
                attn_mask=attn_mask,
                dropout_p=dropout_p,
                scale=self.scale,
            )  # [B, H, T, dv]
        o = o.transpose(1, 2).reshape(B, T, H * dv)
        return self.o_proj(o)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_heads={self.n_heads}, kv_lora_rank={self.kv_lora_rank}, "
            f"q_lora_rank={self.q_lora_rank}, qk_nope_head_dim={self.qk_nope_head_dim}, "
            f"qk_rope_head_dim={self.qk_rope_head_dim}, v_head_dim={self.v_head_dim}"
        )
