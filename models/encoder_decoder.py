"""A small T5-style encoder-decoder, and the bidirectional LM that MLM and PrefixLM train.

Shapes: B batch, S source tokens, T target tokens, C = d_model, V vocabulary.

    EncoderDecoder (T5's layout; Llama's blocks: RMSNorm, RoPE, SwiGLU, no biases)
        e = shared[src]                                  [B, S, C]
        e = enc_layer_i(e, src_mask)  (bidirectional)    TransformerBlock(causal=False)
        m = encoder.norm(e)                              the memory [B, S, C]
        h = shared[tgt_in]                               [B, T, C]
        h = dec_layer_i(h, m, src_mask)                  DecoderLayer (below)
        logits = lm_head(decoder.norm(h))                [B, T, V]

    DecoderLayer (pre-norm):
        h = h + self_attn(ln_1(h))                       causal self-attention (RoPE)
        h = h + cross_attn(ln_cross(h), m)               queries from h, keys/values from m
        h = h + mlp(ln_2(h))                             SwiGLU

    CrossAttention: q = x Wq^T [B, H, T, D], k = m Wk^T, v = m Wv^T [B, H, S, D],
        o = softmax(q k^T / sqrt(D) + mask) v, y = o Wo^T; the mask hides padded source
        tokens (a boolean key-padding mask [B, 1, 1, S], the fused attention path). No
        positions in cross-attention (T5 has none there either).

T5 itself uses relative position buckets and ties the LM head to ``shared``; here the
self-attention layers use RoPE (the positional scheme of the repo's Llama, so the
objectives experiment compares objectives, not position schemes) and the head is untied.
Its backward is that of the ops it is built from (linear, rms_norm, rotary, the attention
Functions); a test gradchecks ``CrossAttention`` in float64 and compares it with a
composition of matmul/softmax.

    BidirectionalLM: shared[ids] -> TransformerBlock(causal=False) x L -> norm -> lm_head.
        With no mask every position sees every other (BERT's masked LM); with a boolean
        ``attn_mask`` [B, 1, T, T] it is a PrefixLM (``tinyllm.objectives.prefix_lm_mask``:
        bidirectional over the prefix, causal after it). The mask goes through
        ``F.scaled_dot_product_attention`` like any boolean mask.

Initialization is GPT-2's (``models.lm.init_gpt2_``, which ``LanguageModel.init_weights``
also calls): N(0, 0.02) for every weight, the projections into the residual stream
(``o_proj``, ``down_proj``) at 0.02 / sqrt(2 L).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import tinyllm.functional as F
from tinyllm.models.lm import init_gpt2_
from tinyllm.nn import Embedding, Linear, Module, ModuleList
from tinyllm.nn.attention import Attention, check_heads
from tinyllm.nn.feedforward import GatedMLP
from tinyllm.nn.normalization import RMSNorm
from tinyllm.nn.transformer import TransformerBlock
from tinyllm.tensor import Tensor

__all__ = [
    "BidirectionalLM", "CrossAttention", "DecoderLayer", "DecoderStack", "EncoderDecoder",
    "EncoderDecoderConfig", "EncoderStack", "key_padding_mask",
]  # fmt: skip


@dataclass
class EncoderDecoderConfig:
    """Sizes of an ``EncoderDecoder`` (``n_decoder_layer`` None: as many as the encoder's)
    or of a ``BidirectionalLM`` (which uses ``n_layer`` only)."""

    vocab_size: int = 359  # 256 bytes + <pad>, <mask>, </s> + 100 sentinels
    d_model: int = 256
    n_layer: int = 4
    n_decoder_layer: int | None = None
    n_head: int = 4
    ffn_hidden: int | None = None  # None: Llama's int(8C/3 + 63) // 64 * 64
    dropout: float = 0.0
    norm_eps: float = 1e-5
    rope_base: float = 10000.0
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.n_decoder_layer is None:
            self.n_decoder_layer = self.n_layer
        if self.ffn_hidden is None:
            self.ffn_hidden = int(8 * self.d_model / 3 + 63) // 64 * 64
        for name in ("vocab_size", "d_model", "n_layer", "n_decoder_layer", "n_head"):
            if getattr(self, name) <= 0:
                raise ValueError(f"EncoderDecoderConfig: {name} must be positive")
        check_heads("EncoderDecoderConfig", self.d_model, self.n_head, None, None)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def key_padding_mask(lengths, total: int):
    """Bool [B, 1, 1, total]: True for the first ``lengths[b]`` keys of row b (real tokens)."""
    import numpy as np

    lengths = np.asarray(lengths)
    return (np.arange(total)[None, :] < lengths[:, None])[:, None, None, :]


class CrossAttention(Module):
    """Multi-head attention of queries x [B, T, C] over a memory m [B, S, C] (module
    docstring). The one cross-attention of the repo: the encoder-decoder's (with a
    key-padding mask over padded source tokens) and the captioner's gated cross-attention
    and Perceiver resampler (no mask).

    forward(x, memory, memory_mask=None) -> [B, T, C]; ``memory_mask``: bool, True = a real
    source token, broadcastable to [B, 1, 1, S] (``key_padding_mask``)."""

    def __init__(self, d_model: int, n_heads: int, dtype=None, device=None) -> None:
        super().__init__()
        _, self.head_dim = check_heads("CrossAttention", d_model, n_heads, None, None)
        self.d_model, self.n_heads = d_model, n_heads
        kw = {"bias": False, "dtype": dtype, "device": device}
        self.q_proj = Linear(d_model, d_model, **kw)
        self.k_proj = Linear(d_model, d_model, **kw)
        self.v_proj = Linear(d_model, d_model, **kw)
        self.o_proj = Linear(d_model, d_model, **kw)

    def forward(self, x, memory, memory_mask=None):
        for name, t in (("x", x), ("memory", memory)):
            if not isinstance(t, Tensor) or t.ndim != 3 or t.shape[-1] != self.d_model:
                shape = tuple(t.shape) if hasattr(t, "shape") else type(t).__name__
                raise ValueError(
                    f"CrossAttention: expected {name} of shape [B, *, {self.d_model}], got {shape}"
                )
        if x.shape[0] != memory.shape[0]:
            raise ValueError(
                f"CrossAttention: x {tuple(x.shape)} and memory {tuple(memory.shape)} differ in "
                "batch size"
            )
        B, T, _ = x.shape
        S, H, D = memory.shape[1], self.n_heads, self.head_dim
        q = self.q_proj(x).reshape(B, T, H, D).transpose(1, 2)  # [B, H, T, D]
        k = self.k_proj(memory).reshape(B, S, H, D).transpose(1, 2)  # [B, H, S, D]
        v = self.v_proj(memory).reshape(B, S, H, D).transpose(1, 2)  # [B, H, S, D]
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=memory_mask)  # [B, H, T, D]
        return self.o_proj(o.transpose(1, 2).reshape(B, T, H * D))

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}"


class DecoderLayer(Module):
    """Causal self-attention, cross-attention over the encoder's memory, SwiGLU (pre-norm)."""

    def __init__(self, config: EncoderDecoderConfig) -> None:
        super().__init__()
        C, eps = config.d_model, config.norm_eps
        self.ln_1 = RMSNorm(C, eps=eps)
        self.self_attn = Attention(
            C, config.n_head, dropout=config.dropout, positional="rope",
            rope_base=config.rope_base, causal=True,
        )  # fmt: skip
        self.ln_cross = RMSNorm(C, eps=eps)
        self.cross_attn = CrossAttention(C, config.n_head)
        self.ln_2 = RMSNorm(C, eps=eps)
        self.mlp = GatedMLP(C, config.ffn_hidden, variant="swiglu", dropout=config.dropout)

    def forward(self, h, memory, memory_mask=None):
        h = h + self.self_attn(self.ln_1(h))
        h = h + self.cross_attn(self.ln_cross(h), memory, memory_mask)
        return h + self.mlp(self.ln_2(h))


def _encoder_block(config: EncoderDecoderConfig) -> TransformerBlock:
    return TransformerBlock(
        config.d_model, config.n_head, d_ff=config.ffn_hidden, norm="rmsnorm",
        norm_eps=config.norm_eps, ffn="swiglu", dropout=config.dropout,
        attn_dropout=config.dropout, positional="rope", rope_base=config.rope_base, causal=False,
    )  # fmt: skip


class EncoderStack(Module):
    """``layers`` (bidirectional blocks) then ``norm``: embeddings [B, S, C] -> memory."""

    def __init__(self, config: EncoderDecoderConfig) -> None:
        super().__init__()
        self.layers = ModuleList(_encoder_block(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.d_model, eps=config.norm_eps)

    def forward(self, e, mask=None):
        for layer in self.layers:
            e = layer(e, attn_mask=mask)
        return self.norm(e)


class DecoderStack(Module):
    """``layers`` (``DecoderLayer``s) then ``norm``: embeddings [B, T, C] -> hidden states."""

    def __init__(self, config: EncoderDecoderConfig) -> None:
        super().__init__()
        self.layers = ModuleList(DecoderLayer(config) for _ in range(config.n_decoder_layer))
        self.norm = RMSNorm(config.d_model, eps=config.norm_eps)

    def forward(self, h, memory, memory_mask=None):
        for layer in self.layers:
            h = layer(h, memory, memory_mask)
        return self.norm(h)


def _init_gpt2(model: Module, config: EncoderDecoderConfig, n_layers: int) -> None:
    """``init_gpt2_``: N(0, std) weights; residual-stream projections at std / sqrt(2 n_layers)."""
    init_gpt2_(model, config.init_std, n_layers, ("o_proj", "down_proj"))


def _check_ids(name: str, ids) -> None:
    if not isinstance(ids, Tensor) or ids.ndim != 2 or ids.dtype.kind not in "iu":
        shape = tuple(ids.shape) if hasattr(ids, "shape") else type(ids).__name__
        raise ValueError(f"{name} must be an integer Tensor [B, T], got {shape}")


class EncoderDecoder(Module):
    """T5-style encoder-decoder (module docstring); names follow Hugging Face's T5
    (``shared``, ``encoder.layers``, ``encoder.norm``, ``decoder.layers``, ``decoder.norm``,
    ``lm_head``).

    forward(input_ids [B, S], decoder_input_ids [B, T], attention_mask=None) -> [B, T, V];
    ``attention_mask``: bool [B, S] (or [B, 1, 1, S]), True = a real source token; it hides
    padded source tokens from the encoder's self-attention and from cross-attention."""

    def __init__(self, config: EncoderDecoderConfig) -> None:
        super().__init__()
        self.config = config
        C = config.d_model
        self.shared = Embedding(config.vocab_size, C)
        self.encoder = EncoderStack(config)
        self.decoder = DecoderStack(config)
        self.lm_head = Linear(C, config.vocab_size, bias=False)
        _init_gpt2(self, config, config.n_layer + config.n_decoder_layer)

    @staticmethod
    def _memory_mask(attention_mask):
        if attention_mask is None:
            return None
        m = attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask
        return m[:, None, None, :] if m.ndim == 2 else m

    def encode(self, input_ids, attention_mask=None):
        """The memory [B, S, C]: the encoder's normalized last hidden states."""
        _check_ids("EncoderDecoder.encode: input_ids", input_ids)
        return self.encoder(self.shared(input_ids), self._memory_mask(attention_mask))

    def decode(self, decoder_input_ids, memory, attention_mask=None):
        """Logits [B, T, V] of the decoder over ``memory`` (from ``encode``)."""
        _check_ids("EncoderDecoder.decode: decoder_input_ids", decoder_input_ids)
        h = self.decoder(self.shared(decoder_input_ids), memory, self._memory_mask(attention_mask))
        return self.lm_head(h)

    def forward(self, input_ids, decoder_input_ids, attention_mask=None):
        memory = self.encode(input_ids, attention_mask)
        return self.decode(decoder_input_ids, memory, attention_mask)


class BidirectionalLM(Module):
    """Token embeddings, ``n_layer`` non-causal ``TransformerBlock``s, a norm and an LM head.

    forward(idx [B, T], attn_mask=None) -> logits [B, T, V]. Without a mask every position
    attends to every position (BERT's masked LM); a boolean ``attn_mask`` broadcastable to
    [B, 1, T, T] (True = attend) restricts it, e.g. to a PrefixLM's pattern."""

    def __init__(self, config: EncoderDecoderConfig) -> None:
        super().__init__()
        self.config = config
        C = config.d_model
        self.embed_tokens = Embedding(config.vocab_size, C)
        self.layers = ModuleList(_encoder_block(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(C, eps=config.norm_eps)
        self.lm_head = Linear(C, config.vocab_size, bias=False)
        _init_gpt2(self, config, config.n_layer)

    def forward(self, idx, attn_mask=None):
        _check_ids("BidirectionalLM: idx", idx)
        x = self.embed_tokens(idx)
        for layer in self.layers:
            x = layer(x, attn_mask=attn_mask)
        return self.lm_head(self.norm(x))
