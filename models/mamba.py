"""A Mamba language model (mamba_ssm's ``MambaLMHeadModel``: MixerModel of pre-norm
residual Mamba blocks with RMSNorm, tied embeddings).

    x = backbone.embeddings[idx]                               [batch, L, d_model]
    x = x + layers[i].mixer(layers[i].norm(x))   for i in 0 .. n_layer-1
    logits = lm_head(backbone.norm_f(x))                        [batch, L, V]

No positions and no attention: order comes from the causal convolution and the scan. The
state a token leaves for the next is fixed in size (per layer [batch, d_inner, d_conv] +
[batch, d_inner, d_state]), so decoding costs the same at every position and has no
context limit. ``step`` runs one token through every layer in array code (no graph);
``generate`` feeds the prompt through ``step`` and then samples, with the signature of
``LanguageModel.generate``. Init as mamba_ssm: embeddings N(0, 0.02), Linear biases zero
(except dt_proj's), out_proj weights scaled by 1/sqrt(n_layer) (the residual writes).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import tinyllm
from tinyllm import backend
from tinyllm.models.lm import check_generate_args, sampling_step
from tinyllm.nn import Embedding, Linear, Module, ModuleDict, ModuleList, eval_mode, init
from tinyllm.nn.mamba import Mamba, MambaState
from tinyllm.nn.normalization import RMSNorm
from tinyllm.tensor import Tensor

__all__ = ["MambaBlock", "MambaConfig", "MambaLM"]


@dataclass
class MambaConfig:
    arch: str = "mamba"
    vocab_size: int = 256
    d_model: int = 256
    n_layer: int = 4
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | None = None  # None: ceil(d_model / 16)
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    init_std: float = 0.02
    block_size: int | None = None  # no limit: kept for code that reads it from any config

    def __post_init__(self) -> None:
        if self.arch != "mamba":
            raise ValueError(f"MambaConfig: arch must be 'mamba', got {self.arch!r}")
        for name in ("vocab_size", "d_model", "n_layer", "d_state", "d_conv", "expand"):
            if getattr(self, name) <= 0:
                raise ValueError(f"MambaConfig: {name} must be positive, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> MambaConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


class MambaBlock(Module):
    """x + mixer(norm(x)): RMSNorm then a Mamba mixer, pre-norm residual."""

    def __init__(self, config: MambaConfig) -> None:
        super().__init__()
        self.norm = RMSNorm(config.d_model, eps=config.norm_eps)
        self.mixer = Mamba(
            config.d_model, d_state=config.d_state, d_conv=config.d_conv,
            expand=config.expand, dt_rank=config.dt_rank,
        )  # fmt: skip

    def forward(self, x):
        return x + self.mixer(self.norm(x))


def _rms_norm(x, weight, eps: float):
    xp = backend.get_array_module(x)
    return x / xp.sqrt((x * x).mean(-1, keepdims=True) + eps) * weight


class MambaLM(Module):
    def __init__(self, config: MambaConfig) -> None:
        super().__init__()
        self.config = config
        C = config.d_model
        self.backbone = ModuleDict(
            {
                "embeddings": Embedding(config.vocab_size, C),
                "layers": ModuleList(MambaBlock(config) for _ in range(config.n_layer)),
                "norm_f": RMSNorm(C, eps=config.norm_eps),
            }
        )
        self.lm_head = Linear(C, config.vocab_size, bias=False)
        init.normal_(self.backbone["embeddings"].weight, 0.0, config.init_std)
        for block in self.blocks:
            for linear in (block.mixer.in_proj, block.mixer.out_proj):
                if linear.bias is not None:
                    init.zeros_(linear.bias)
            w = block.mixer.out_proj.weight  # kaiming-uniform, then / sqrt(n_layer)
            with tinyllm.no_grad():
                w.copy_(w.data / math.sqrt(config.n_layer))
        if config.tie_embeddings:
            self.lm_head.weight = self.backbone["embeddings"].weight

    @property
    def blocks(self) -> ModuleList:
        return self.backbone["layers"]

    def no_weight_decay(self) -> set[str]:
        """Full names of the parameters AdamW must not decay (every A_log and D)."""
        return {
            f"backbone.layers.{i}.mixer.{name}"
            for i in range(len(self.blocks))
            for name in Mamba.no_weight_decay()
        }

    def forward(self, idx: Tensor) -> Tensor:
        """idx [batch, L] (int64) -> logits [batch, L, V]."""
        x = self.backbone["embeddings"](idx)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.backbone["norm_f"](x))

    # ---------------------------------------------------------------- step mode
    def new_states(self, batch: int, xp=np) -> list[MambaState]:
        dtype = self.lm_head.weight.dtype
        return [block.mixer.new_state(batch, dtype, xp) for block in self.blocks]

    def step(self, token, states: list[MambaState]):
        """One token per sequence: token [batch] (int array) -> logits [batch, V] (array);
        ``states`` (from ``new_states``) advance in place."""
        eps = self.config.norm_eps
        x = self.backbone["embeddings"].weight.data[token]  # [batch, d_model]
        for block, state in zip(self.blocks, states):
            x = x + block.mixer.step(_rms_norm(x, block.norm.weight.data, eps), state)
        x = _rms_norm(x, self.backbone["norm_f"].weight.data, eps)
        return x @ self.lm_head.weight.data.T

    @tinyllm.no_grad()
    def generate(
        self,
        idx,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: np.random.Generator | None = None,
        callback: Callable[[int], None] | None = None,
        use_cache: bool = True,
        logits_processor: Callable | None = None,
    ):
        """Continue ``idx`` [batch, T] by ``max_new_tokens`` sampled tokens -> [batch, T+N].

        The arguments of ``LanguageModel.generate``, and its sampling step
        (``models.lm.sampling_step``: logits processor, temperature, top-k, top-p). With
        ``use_cache`` (the default) the prompt and each new token go through ``step``
        (constant cost per token, no context limit); ``use_cache=False`` reruns the full
        forward over all tokens at each step (the same tokens: a test checks it).
        """
        check_generate_args(idx, max_new_tokens)
        rng = generator if generator is not None else np.random.default_rng()
        with eval_mode(self):
            xp = backend.get_array_module(idx.data)
            tokens = backend.to_numpy(idx.data).astype(np.int64)
            states = self.new_states(tokens.shape[0], xp) if use_cache else None
            pending = tokens
            for _ in range(max_new_tokens):
                if use_cache:
                    for t in range(pending.shape[1]):
                        logits = self.step(xp.asarray(pending[:, t]), states)
                    last = backend.to_numpy(logits)
                else:
                    logits = self(tinyllm.tensor(tokens, device=idx.device))
                    last = backend.to_numpy(logits.data[:, -1, :])
                nxt = sampling_step(last, tokens, rng, temperature, top_k, top_p, logits_processor,
                                    callback)  # fmt: skip
                tokens = np.concatenate([tokens, nxt[:, None]], axis=1)
                pending = nxt[:, None]
        return tinyllm.tensor(tokens, device=idx.device)
