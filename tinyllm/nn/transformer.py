"""``TransformerBlock``: attention + feed-forward with residuals, pre-LN or post-LN by config.

x, y: [B, T, C]. With N1, N2 the two norms (LayerNorm or RMSNorm), A the attention, M the
feed-forward block and drop the residual dropout:

    pre-LN  (GPT-2, Llama; Xiong et al. 2020):     h = x + drop(A(N1(x)))
                                                   y = h + drop(M(N2(h)))
    post-LN (the original Transformer, BERT):       h = N1(x + drop(A(x)))
                                                   y = N2(h + drop(M(h)))

Pre-LN keeps an identity path from every block's output to the input, so gradients reach
early layers undiminished, and a model built from pre-LN blocks adds a final norm before the
LM head. Post-LN normalizes the residual stream itself; at initialization its gradients
near the output are large relative to those of early layers, and it usually needs a
learning-rate warmup to train (Xiong et al. 2020).

Children: ``ln_1``, ``attn``, ``ln_2``, ``mlp`` (nanoGPT / GPT-2 names; Llama's
``input_layernorm``, ``self_attn``, ``post_attention_layernorm``, ``mlp`` map one to one).
"""

from __future__ import annotations

from tinyllm.nn.attention import Attention, check_heads
from tinyllm.nn.feedforward import MLP, GatedMLP, gated_hidden_size
from tinyllm.nn.kv_cache import KVCache, LatentKVCache
from tinyllm.nn.layers import Dropout
from tinyllm.nn.mla import MultiHeadLatentAttention
from tinyllm.nn.module import Module
from tinyllm.nn.normalization import LayerNorm, RMSNorm

__all__ = ["TransformerBlock", "make_norm"]

_FFN = ("mlp", "swiglu", "geglu", "geglu_tanh", "reglu")


def make_norm(
    norm: str, d_model: int, eps: float = 1e-5, bias: bool = True, dtype=None, device=None
) -> Module:
    """``LayerNorm(d_model)`` for "layernorm", ``RMSNorm(d_model)`` for "rmsnorm"."""
    if norm == "layernorm":
        return LayerNorm(d_model, eps=eps, bias=bias, dtype=dtype, device=device)
    if norm == "rmsnorm":
        return RMSNorm(d_model, eps=eps, dtype=dtype, device=device)
    raise ValueError(f"make_norm: norm must be 'layernorm' or 'rmsnorm', got {norm!r}")


class TransformerBlock(Module):
    """One transformer layer (see the module docstring for the two placements).

    Args:
        d_model: C.  n_heads: H.  n_kv_heads: Hkv (GQA/MQA; default H).
        d_ff: feed-forward width (default 4C for "mlp", ~8C/3 for gated variants).
        norm: "layernorm" | "rmsnorm".   norm_placement: "pre" | "post".   norm_eps: 1e-5.
        ffn: "mlp" (``MLP`` with ``activation``) or a gated variant "swiglu" | "geglu" |
            "geglu_tanh" | "reglu" (``GatedMLP``).
        activation: the MLP's activation ("gelu", "gelu_tanh", "relu", "silu").
        bias: biases in the attention and feed-forward projections.
        dropout: residual dropout on both branches.  attn_dropout: on attention probabilities.
        positional, rope_base, causal, window: passed to ``Attention``.
        attention: "standard" (``Attention``) or "mla" (``MultiHeadLatentAttention``).
        attn_kwargs: extra keyword arguments for the attention module (e.g. MLA's ranks).
        moe: ``tinyllm.nn.moe.MoE`` keyword arguments: ``mlp`` is then a sparse mixture of
            SwiGLU experts (expert_hidden defaults to d_ff); ``ffn`` and ``activation`` unused.

    forward(x [B, T, C], cache=None, position_offset=None, attn_mask=None) -> [B, T, C];
    ``cache`` is this layer's ``KVCache`` / ``LatentKVCache`` (``new_cache()`` makes one).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        d_ff: int | None = None,
        *,
        norm: str = "layernorm",
        norm_placement: str = "pre",
        norm_eps: float = 1e-5,
        ffn: str = "mlp",
        activation: str = "gelu",
        bias: bool = False,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        positional: str | None = None,
        rope_base: float = 10000.0,
        causal: bool = True,
        window: int | None = None,
        attention: str = "standard",
        attn_kwargs: dict | None = None,
        moe: dict | None = None,
        dtype=None,
        device=None,
    ) -> None:
        super().__init__()
        if norm_placement not in ("pre", "post"):
            raise ValueError(
                f"TransformerBlock: norm_placement must be 'pre' or 'post', got {norm_placement!r}"
            )
        if ffn not in _FFN:
            raise ValueError(f"TransformerBlock: ffn must be one of {_FFN}, got {ffn!r}")
        kw = {"dtype": dtype, "device": device}
        self.norm_placement = norm_placement
        self.ln_1 = make_norm(norm, d_model, norm_eps, **kw)
        extra = dict(attn_kwargs or {})
        if attention == "standard":
            self.attn = Attention(
                d_model,
                n_heads,
                n_kv_heads,
                bias=bias,
                dropout=attn_dropout,
                positional=positional,
                rope_base=rope_base,
                causal=causal,
                window=window,
                **extra,
                **kw,
            )
        elif attention == "mla":
            mla_ok = n_kv_heads in (None, n_heads) and window is None
            if not mla_ok or positional not in (None, "rope"):
                raise ValueError(
                    "TransformerBlock: attention='mla' has its own KV compression and decoupled "
                    "RoPE; n_kv_heads, window and positional (other than 'rope') do not apply"
                )
            _, head = check_heads("TransformerBlock", d_model, n_heads, None, None)
            mla = {
                "kv_lora_rank": 4 * head,
                "qk_nope_head_dim": head,
                "qk_rope_head_dim": 2 * max(1, head // 4),  # ~head / 2, even
                "v_head_dim": head,
            }
            mla.update(extra)
            self.attn = MultiHeadLatentAttention(
                d_model,
                n_heads,
                bias=bias,
                dropout=attn_dropout,
                rope_base=rope_base,
                causal=causal,
                **mla,
                **kw,
            )
        else:
            raise ValueError(
                f"TransformerBlock: attention must be 'standard' or 'mla', got {attention!r}"
            )
        self.ln_2 = make_norm(norm, d_model, norm_eps, **kw)
        if moe is not None:  # a sparse mixture of experts in place of the FFN (``mlp``)
            from tinyllm.nn.moe import MoE

            moe = {"expert_hidden": d_ff, **moe}
            moe["expert_hidden"] = moe["expert_hidden"] or d_ff or gated_hidden_size(d_model)
            self.mlp = MoE(d_model, dtype=dtype, **moe)
        elif ffn == "mlp":
            self.mlp = MLP(d_model, d_ff, activation=activation, bias=bias, **kw)
        else:
            self.mlp = GatedMLP(d_model, d_ff, variant=ffn, bias=bias, **kw)
        self.drop = Dropout(dropout)

    def new_cache(self) -> KVCache | LatentKVCache:
        """An empty cache of the right kind for this layer's attention."""
        return self.attn.new_cache()

    def forward(self, x, cache=None, position_offset: int | None = None, attn_mask=None):
        def attention(h):
            return self.attn(h, cache=cache, position_offset=position_offset, attn_mask=attn_mask)

        if self.norm_placement == "pre":
            h = x + self.drop(attention(self.ln_1(x)))
            return h + self.drop(self.mlp(self.ln_2(h)))
        h = self.ln_1(x + self.drop(attention(x)))
        return self.ln_2(h + self.drop(self.mlp(h)))

    def extra_repr(self) -> str:
        return f"norm_placement={self.norm_placement!r}"
