"""One expert: Mixtral's SwiGLU feed-forward with Mixtral's parameter names.

    y = w2(silu(w1 x) * w3 x)        w1, w3: [F, C] (gate, up),  w2: [C, F] (down)

so ``block_sparse_moe.experts.{i}.w1.weight`` etc. load key for key from a Mixtral state
dict. DeepSeekMoE's fine-grained experts are the same module with a smaller F (split each
expert into m of width F/m and route to m times as many); its shared experts are one such
module of width n_shared * F that every token passes through.
"""

from __future__ import annotations

import tinyllm.functional as F
from tinyllm.nn.layers import Linear
from tinyllm.nn.module import Module

__all__ = ["Expert"]


class Expert(Module):
    """x [..., C] -> w2(silu(w1 x) * w3 x) [..., C], hidden F."""

    def __init__(self, d_model: int, hidden: int, dtype=None, device=None) -> None:
        super().__init__()
        for arg, v in (("d_model", d_model), ("hidden", hidden)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"Expert: {arg} must be a positive int, got {v!r}")
        self.d_model, self.hidden = d_model, hidden
        kw = {"bias": False, "dtype": dtype, "device": device}
        self.w1 = Linear(d_model, hidden, **kw)
        self.w2 = Linear(hidden, d_model, **kw)
        self.w3 = Linear(d_model, hidden, **kw)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, hidden={self.hidden}"
