"""Llama-style decoder: RMSNorm, rotary positions, SwiGLU, grouped-query attention, no biases.

    x = embed_tokens[idx]                            [B, T, C]
    x = layer_i(x)  for i in 0..L-1                  (pre-norm; RoPE inside attention)
    logits = lm_head(norm(x))                        [B, T, V]

Names follow Hugging Face's ``LlamaForCausalLM`` (``model.embed_tokens``, ``model.layers.{i}``,
``model.norm``, ``lm_head``). Inside a layer the mapping from Hugging Face is:
``input_layernorm`` -> ``ln_1``, ``self_attn.{q,k,v,o}_proj`` -> ``attn.{q,k,v,o}_proj``,
``post_attention_layernorm`` -> ``ln_2``, ``mlp.gate_proj`` and ``mlp.up_proj`` ->
``mlp.gate_up_proj`` (rows concatenated: gate first, then up), ``mlp.down_proj`` -> same.
"""

from __future__ import annotations

from tinyllm.models.config import ModelConfig
from tinyllm.models.lm import LanguageModel
from tinyllm.nn import Embedding, Linear, ModuleDict, ModuleList
from tinyllm.nn.normalization import RMSNorm
from tinyllm.nn.transformer import TransformerBlock
from tinyllm.tensor import Tensor


class Llama(LanguageModel):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.arch != "llama":
            raise ValueError(f"Llama: config.arch is {config.arch!r}")
        self.config = config
        C = config.d_model
        self.model = ModuleDict(
            {
                "embed_tokens": Embedding(config.vocab_size, C),
                "layers": ModuleList(
                    TransformerBlock(
                        C,
                        config.n_head,
                        config.n_kv_head,
                        d_ff=config.ffn_hidden,
                        norm="rmsnorm",
                        norm_eps=config.norm_eps,
                        ffn="swiglu",
                        bias=config.bias,
                        dropout=config.dropout,
                        attn_dropout=config.dropout,
                        positional="rope",
                        rope_base=config.rope_base,
                        attn_kwargs={"rope_scaling": config.rope_scaling},
                        moe=config.moe,
                    )  # fmt: skip
                    for _ in range(config.n_layer)
                ),
                "norm": RMSNorm(C, eps=config.norm_eps),
            }
        )
        self.lm_head = Linear(C, config.vocab_size, bias=False)
        # "w2": an MoE expert's down projection (no module of a dense model has that name)
        self.init_weights(residual_projections=("o_proj", "down_proj", "w2"))
        if config.tie_embeddings:
            self.lm_head.weight = self.model["embed_tokens"].weight

    @property
    def blocks(self) -> ModuleList:
        return self.model["layers"]

    def forward(self, idx: Tensor, caches: list | None = None) -> Tensor:
        x = self.model["embed_tokens"](idx)
        for i, block in enumerate(self.blocks):
            x = block(x, cache=caches[i] if caches else None)
        return self.lm_head(self.model["norm"](x))
