"""Soft MoE (Puigcerver et al. 2023): every slot is a convex mix of the tokens of one sequence.

x [B, T, C], phi [C, E S] (E experts with S slots each):

    logits  = x phi                          [B, T, E S]
    D       = softmax(logits, over T)        dispatch: for each slot, weights over tokens
    Cw      = softmax(logits, over E S)      combine: for each token, weights over slots
    slots   = D^T x                          [B, E S, C]
    out[e]  = expert_e(slots[:, e S : (e+1) S])
    y       = Cw out                         [B, T, C]

Fully differentiable (no discrete choice, no dropping), but not causal: each slot mixes all
T tokens, so it fits encoders and not an autoregressive LM.
"""

from __future__ import annotations

import math

import numpy as np

import tinyllm.functional as F
from tinyllm.nn import init
from tinyllm.nn.containers import ModuleList
from tinyllm.nn.module import Module
from tinyllm.nn.moe.experts import Expert
from tinyllm.nn.parameter import Parameter

__all__ = ["SoftMoE"]


class SoftMoE(Module):
    """phi [C, E S] (``phi``), experts ModuleList of ``Expert``. x [B, T, C] -> [B, T, C]."""

    def __init__(self, d_model: int, num_experts: int = 4, slots_per_expert: int = 1,
                 expert_hidden: int | None = None, dtype=None) -> None:  # fmt: skip
        super().__init__()
        for arg, v in (("num_experts", num_experts), ("slots_per_expert", slots_per_expert)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"SoftMoE: {arg} must be a positive int, got {v!r}")
        self.d_model, self.num_experts, self.slots_per_expert = (
            d_model,
            num_experts,
            slots_per_expert,
        )
        n = num_experts * slots_per_expert
        self.phi = Parameter(np.zeros((d_model, n), dtype or np.float32))
        init.normal_(self.phi, 0.0, 1 / math.sqrt(d_model))
        hidden = expert_hidden or 4 * d_model
        self.experts = ModuleList([Expert(d_model, hidden, dtype) for _ in range(num_experts)])

    def weights(self, x):
        """(dispatch D, combine Cw), both [B, T, E S]: D sums to 1 over T, Cw over E S."""
        logits = F.matmul(x, self.phi)
        return F.softmax(logits, dim=1), F.softmax(logits, dim=-1)

    def forward(self, x):
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"SoftMoE: x must be [B, T, {self.d_model}], got {tuple(x.shape)}")
        D, Cw = self.weights(x)
        slots = F.matmul(D.transpose(1, 2), x)  # [B, E S, C]
        S = self.slots_per_expert
        outs = [expert(slots[:, e * S : (e + 1) * S]) for e, expert in enumerate(self.experts)]
        return F.matmul(Cw, F.cat(outs, dim=1))
