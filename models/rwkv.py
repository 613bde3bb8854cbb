"""An RWKV-4 language model (Peng et al. 2023; RWKV-LM's ``RWKV-v4``), in full and one token
at a time.

    x = ln0(emb[idx])                                          [B, T, C]  (ln0: block 0 only)
    x = x + att(ln1(x));  x = x + ffn(ln2(x))   for each block
    logits = head(ln_out(x))                                   [B, T, V]

Token shift: xx_t = x_{t-1} (xx_0 = 0), and every projection reads a per-channel mix
x * mu + xx * (1 - mu) of the current and the previous token.

Time mixing (``att``), with w = -exp(time_decay), u = time_first ([C] each):

    k = key(mix_k),  v = value(mix_v),  r = receptance(mix_r)
    out = output(sigmoid(r) * wkv4(time_decay, time_first, k, v))

Channel mixing (``ffn``), hidden 4C:

    k = relu(key(mix_k))^2,  out = sigmoid(receptance(mix_r)) * value(k)

Names are RWKV-LM's (``emb``, ``blocks.{i}.att.time_decay``, ``.att.time_mix_k`` [1, 1, C],
``.ffn.key``, ``ln_out``, ``head``), so its v4 state dicts map key for key. Init as RWKV-4:
time_decay_c = -5 + 8 (c / (C-1))^(0.7 + 1.3 l / (L-1)) (fast to slow decays across
channels), time_first = log 0.3 + a zigzag, time_mix = (c / C)^(1 - l / L) (powers per layer),
the projections writing into the residual stream (att.output, ffn.value) and the
receptances at zero, embeddings U(+-1e-4) (ln0 rescales them), other matrices N(0, 0.02).

Step mode (``step``: array code, no graph): per layer the previous token's ln1 and ln2
outputs (the token shift) and the WKV state (aa, bb, pp) of ``wkv4_step``; its logits equal
the full forward's at every position, so decoding costs the same at every position and has
no context limit. ``generate`` is MambaLM's (the prompt through ``step``, then sampling).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

import tinyllm.functional as F
from tinyllm import backend
from tinyllm.functional.rwkv import wkv4_step
from tinyllm.models.mamba import MambaLM
from tinyllm.nn import Embedding, Linear, Module, ModuleList, init
from tinyllm.nn.normalization import LayerNorm
from tinyllm.nn.parameter import Parameter
from tinyllm.tensor import Tensor

__all__ = ["RWKVBlock", "RWKVConfig", "RWKVLM", "RWKVState"]


@dataclass
class RWKVConfig:
    arch: str = "rwkv"
    vocab_size: int = 256
    d_model: int = 256
    n_layer: int = 4
    ffn_hidden: int | None = None  # None: 4 d_model (RWKV-4)
    norm_eps: float = 1e-5
    tie_embeddings: bool = False  # RWKV-4 keeps emb and head apart
    init_std: float = 0.02
    block_size: int | None = None  # no limit: kept for code that reads it from any config

    def __post_init__(self) -> None:
        if self.arch != "rwkv":
            raise ValueError(f"RWKVConfig: arch must be 'rwkv', got {self.arch!r}")
        for name in ("vocab_size", "d_model", "n_layer"):
            if getattr(self, name) <= 0:
                raise ValueError(f"RWKVConfig: {name} must be positive, got {getattr(self, name)}")
        if self.ffn_hidden is not None and self.ffn_hidden <= 0:
            raise ValueError(f"RWKVConfig: ffn_hidden must be positive, got {self.ffn_hidden}")

    @property
    def hidden(self) -> int:
        return self.ffn_hidden or 4 * self.d_model

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> RWKVConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def _time_shift(x):
    """xx_t = x_{t-1}, xx_0 = 0 (torch's ZeroPad2d((0, 0, 1, -1)) of RWKV-LM). x [B, T, C]."""
    xp = backend.get_array_module(x.data)
    zero = Tensor(xp.zeros((x.shape[0], 1, x.shape[2]), x.dtype))
    return F.cat([zero, x[:, :-1]], dim=1)


def _mix(x, xx, mu):
    """x mu + xx (1 - mu): the token-shift interpolation (tensors or arrays)."""
    return x * mu + xx * (1 - mu)


def _param(values) -> Parameter:
    return Parameter(np.asarray(values, np.float32))


class TimeMix(Module):
    """RWKV-4's time mixing: sigmoid(r) * wkv(k, v) through ``output``."""

    def __init__(self, config: RWKVConfig, layer: int) -> None:
        super().__init__()
        C, L = config.d_model, config.n_layer
        ratio_0_to_1 = layer / (L - 1) if L > 1 else 0.0
        ratio_1_to_0 = 1.0 - layer / L
        c = np.arange(C)
        decay = -5 + 8 * (c / max(C - 1, 1)) ** (0.7 + 1.3 * ratio_0_to_1)
        zigzag = ((c + 1) % 3 - 1) * 0.5
        ramp = (c / C)[None, None, :]  # [1, 1, C]
        self.time_decay = _param(decay)
        self.time_first = _param(np.full(C, math.log(0.3)) + zigzag)
        self.time_mix_k = _param(ramp**ratio_1_to_0)
        self.time_mix_v = _param(ramp**ratio_1_to_0 + 0.3 * ratio_0_to_1)
        self.time_mix_r = _param(ramp ** (0.5 * ratio_1_to_0))
        self.key = Linear(C, C, bias=False)
        self.value = Linear(C, C, bias=False)
        self.receptance = Linear(C, C, bias=False)
        self.output = Linear(C, C, bias=False)

    def forward(self, x):
        xx = _time_shift(x)
        k = self.key(_mix(x, xx, self.time_mix_k))
        v = self.value(_mix(x, xx, self.time_mix_v))
        r = self.receptance(_mix(x, xx, self.time_mix_r))
        return self.output(F.sigmoid(r) * F.wkv4(self.time_decay, self.time_first, k, v))


class ChannelMix(Module):
    """RWKV-4's channel mixing: sigmoid(r) * value(relu(key(x))^2)."""

    def __init__(self, config: RWKVConfig, layer: int) -> None:
        super().__init__()
        C = config.d_model
        ramp = (np.arange(C) / C)[None, None, :]
        ratio_1_to_0 = 1.0 - layer / config.n_layer
        self.time_mix_k = _param(ramp**ratio_1_to_0)
        self.time_mix_r = _param(ramp**ratio_1_to_0)
        self.key = Linear(C, config.hidden, bias=False)
        self.receptance = Linear(C, C, bias=False)
        self.value = Linear(config.hidden, C, bias=False)

    def forward(self, x):
        xx = _time_shift(x)
        k = F.relu(self.key(_mix(x, xx, self.time_mix_k)))
        r = self.receptance(_mix(x, xx, self.time_mix_r))
        return F.sigmoid(r) * self.value(k * k)


class RWKVBlock(Module):
    """x + att(ln1(x)), then + ffn(ln2(x)); block 0 first applies ln0 to the embeddings."""

    def __init__(self, config: RWKVConfig, layer: int) -> None:
        super().__init__()
        eps = config.norm_eps
        if layer == 0:
            self.ln0 = LayerNorm(config.d_model, eps=eps)
        self.ln1 = LayerNorm(config.d_model, eps=eps)
        self.ln2 = LayerNorm(config.d_model, eps=eps)
        self.att = TimeMix(config, layer)
        self.ffn = ChannelMix(config, layer)

    def forward(self, x):
        if hasattr(self, "ln0"):
            x = self.ln0(x)
        x = x + self.att(self.ln1(x))
        return x + self.ffn(self.ln2(x))


class RWKVState:
    """The decoding state of one block: att_x, ffn_x [B, C] (the previous token's ln1 and
    ln2 outputs, for the token shift) and wkv = (aa, bb, pp) [B, C] (None before the first
    token)."""

    def __init__(self, att_x, ffn_x) -> None:
        self.att_x, self.ffn_x, self.wkv = att_x, ffn_x, None


def _layer_norm(x, ln: LayerNorm):
    xp = backend.get_array_module(x)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / xp.sqrt(var + ln.eps) * ln.weight.data + ln.bias.data


def _sigmoid(x):
    xp = backend.get_array_module(x)
    return 1 / (1 + xp.exp(-x))


class RWKVLM(Module):
    def __init__(self, config: RWKVConfig) -> None:
        super().__init__()
        self.config = config
        C = config.d_model
        self.emb = Embedding(config.vocab_size, C)
        self.blocks = ModuleList(RWKVBlock(config, i) for i in range(config.n_layer))
        self.ln_out = LayerNorm(C, eps=config.norm_eps)
        self.head = Linear(C, config.vocab_size, bias=False)
        init.uniform_(self.emb.weight, -1e-4, 1e-4)
        for block in self.blocks:
            for linear in (block.att.key, block.att.value, block.ffn.key):
                init.normal_(linear.weight, 0.0, config.init_std)
            for linear in (block.att.output, block.ffn.value, block.att.receptance,
                           block.ffn.receptance):  # fmt: skip
                init.zeros_(linear.weight)
        init.normal_(self.head.weight, 0.0, config.init_std)
        if config.tie_embeddings:
            self.head.weight = self.emb.weight

    def no_weight_decay(self) -> set[str]:
        """Full names of the parameters AdamW must not decay (time_* vectors, as RWKV-LM)."""
        return {name for name, _ in self.named_parameters() if ".time_" in name}

    def forward(self, idx: Tensor) -> Tensor:
        """idx [B, T] (int64) -> logits [B, T, V]."""
        x = self.emb(idx)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_out(x))

    # ---------------------------------------------------------------- step mode
    def new_states(self, batch: int, xp=np) -> list[RWKVState]:
        dtype, C = self.head.weight.dtype, self.config.d_model
        return [
            RWKVState(xp.zeros((batch, C), dtype), xp.zeros((batch, C), dtype)) for _ in self.blocks
        ]

    def step(self, token, states: list[RWKVState]):
        """One token per sequence: token [B] (int array) -> logits [B, V] (array); ``states``
        (from ``new_states``) advance in place."""
        x = self.emb.weight.data[token]  # [B, C]
        for block, s in zip(self.blocks, states):
            if hasattr(block, "ln0"):
                x = _layer_norm(x, block.ln0)
            att, ffn = block.att, block.ffn
            h = _layer_norm(x, block.ln1)
            k = _mix(h, s.att_x, att.time_mix_k.data[0, 0]) @ att.key.weight.data.T
            v = _mix(h, s.att_x, att.time_mix_v.data[0, 0]) @ att.value.weight.data.T
            r = _mix(h, s.att_x, att.time_mix_r.data[0, 0]) @ att.receptance.weight.data.T
            wkv, s.wkv = wkv4_step(att.time_decay, att.time_first, k, v, s.wkv)
            x = x + (_sigmoid(r) * wkv.astype(x.dtype)) @ att.output.weight.data.T
            s.att_x = h
            h = _layer_norm(x, block.ln2)
            k = _mix(h, s.ffn_x, ffn.time_mix_k.data[0, 0]) @ ffn.key.weight.data.T
            r = _mix(h, s.ffn_x, ffn.time_mix_r.data[0, 0]) @ ffn.receptance.weight.data.T
            k = backend.get_array_module(k).maximum(k, 0)  # relu
            x = x + _sigmoid(r) * ((k * k) @ ffn.value.weight.data.T)
            s.ffn_x = h
        return _layer_norm(x, self.ln_out) @ self.head.weight.data.T

    generate = MambaLM.generate  # the prompt through ``step``, then sampling (same signature)
