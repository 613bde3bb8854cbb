"""GPT-2 style decoder: learned absolute positions, pre-LN LayerNorm blocks, GELU-tanh MLP,
biases, tied input/output embeddings.

    x = wte[idx] + wpe[0..T-1]                       [B, T, C]
    x = block_i(x)  for i in 0..L-1                  (pre-LN: attention, then MLP)
    logits = ln_f(x) @ wte^T                         [B, T, V]  (lm_head tied to wte)

Parameter names follow nanoGPT (``transformer.wte``, ``transformer.h.{i}.ln_1``, ...). Loading
Hugging Face GPT-2 weights maps ``attn.c_attn`` ([C, 3C], Conv1D, transposed) onto
``attn.q_proj/k_proj/v_proj`` (split in three, each transposed), ``attn.c_proj`` onto
``attn.o_proj`` (transposed), and ``mlp.c_fc``/``mlp.c_proj`` (transposed).
"""

from __future__ import annotations

from tinyllm.backend import get_array_module
from tinyllm.models.config import ModelConfig
from tinyllm.models.lm import LanguageModel
from tinyllm.nn import Dropout, Embedding, Linear, ModuleDict, ModuleList
from tinyllm.nn.normalization import LayerNorm
from tinyllm.nn.transformer import TransformerBlock
from tinyllm.tensor import Tensor


class GPT(LanguageModel):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.arch != "gpt":
            raise ValueError(f"GPT: config.arch is {config.arch!r}")
        self.config = config
        C = config.d_model
        self.transformer = ModuleDict(
            {
                "wte": Embedding(config.vocab_size, C),
                "wpe": Embedding(config.block_size, C),
                "drop": Dropout(config.dropout),
                "h": ModuleList(
                    TransformerBlock(
                        C,
                        config.n_head,
                        d_ff=config.ffn_hidden,
                        norm="layernorm",
                        norm_eps=config.norm_eps,
                        ffn="mlp",
                        activation="gelu_tanh",
                        bias=config.bias,
                        dropout=config.dropout,
                        attn_dropout=config.dropout,
                    )  # fmt: skip
                    for _ in range(config.n_layer)
                ),
                "ln_f": LayerNorm(C, eps=config.norm_eps, bias=config.bias),
            }
        )
        self.lm_head = Linear(C, config.vocab_size, bias=False)
        self.init_weights(residual_projections=("o_proj", "c_proj"))
        if config.tie_embeddings:
            self.lm_head.weight = self.transformer["wte"].weight

    @property
    def blocks(self) -> ModuleList:
        return self.transformer["h"]

    def forward(self, idx: Tensor, caches: list | None = None) -> Tensor:
        B, T = idx.shape
        past = len(caches[0]) if caches else 0
        if past + T > self.config.block_size:
            raise ValueError(
                f"GPT: sequence of {past + T} tokens exceeds block_size {self.config.block_size}"
            )
        positions = Tensor(get_array_module(idx.data).arange(past, past + T))  # [T]
        x = self.transformer["wte"](idx) + self.transformer["wpe"](positions)
        x = self.transformer["drop"](x)
        for i, block in enumerate(self.blocks):
            x = block(x, cache=caches[i] if caches else None)
        return self.lm_head(self.transformer["ln_f"](x))
