"""Position-wise feed-forward blocks: ``MLP`` (GPT-2 style) and ``GatedMLP`` (GLU variants).

Shapes: x [B, T, C], hidden width F.

    MLP:       y = act(x W_fc^T + b_fc) W_proj^T + b_proj
               c_fc: [F, C],  c_proj: [C, F]           act: gelu, gelu_tanh, relu, silu
    GatedMLP:  u = x W_gu^T                             gate_up_proj: [2F, C]
               h = act(u[..., :F]) * u[..., F:]         one fused F.swiglu / geglu / reglu
               y = h W_down^T                           down_proj: [C, F]

Names: ``MLP`` uses GPT-2's ``c_fc`` / ``c_proj`` as ``nn.Linear`` (nanoGPT's layout, so a
nanoGPT state dict loads key for key; HF GPT-2's Conv1D weights are [in, out] and must be
transposed). ``GatedMLP`` fuses Llama's two input projections into one matrix, as Phi-3's
``gate_up_proj`` does: the gate rows first, then the up rows,

    gate_up_proj.weight = cat([gate_proj.weight, up_proj.weight], dim=0)    # [2F, C]

(``fuse_gate_up`` does this, ``split_gate_up`` undoes it). One GEMM of width 2F replaces
two of width F, and the gated activation's forward and backward are one fused op.
"""

from __future__ import annotations

import numpy as np

import tinyllm.functional as F
from tinyllm.nn.layers import Dropout, Linear
from tinyllm.nn.module import Module
from tinyllm.tensor import Tensor

__all__ = ["GatedMLP", "MLP", "fuse_gate_up", "gated_hidden_size", "split_gate_up"]

_ACTIVATIONS = {
    "gelu": lambda h: F.gelu(h),
    "gelu_tanh": lambda h: F.gelu(h, approximate="tanh"),
    "relu": lambda h: F.relu(h),
    "silu": lambda h: F.silu(h),
}
_GATED = {
    "swiglu": lambda u: F.swiglu(u),
    "geglu": lambda u: F.geglu(u),
    "geglu_tanh": lambda u: F.geglu(u, approximate="tanh"),
    "reglu": lambda u: F.reglu(u),
}


def gated_hidden_size(d_model: int, multiple_of: int = 8) -> int:
    """Llama's default gated width: 2/3 of 4 C (same parameters as a 4C MLP), rounded up."""
    hidden = int(2 * 4 * d_model / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def fuse_gate_up(gate_weight, up_weight):
    """Llama's gate_proj.weight [F, C] and up_proj.weight [F, C] as one [2F, C] matrix."""
    if tuple(gate_weight.shape) != tuple(up_weight.shape):
        raise ValueError(
            f"fuse_gate_up: gate {tuple(gate_weight.shape)} and up {tuple(up_weight.shape)} "
            "weights must have the same shape [F, C]"
        )
    if isinstance(gate_weight, Tensor):
        return F.cat([gate_weight, up_weight], dim=0)
    return np.concatenate([np.asarray(gate_weight), np.asarray(up_weight)], axis=0)


def split_gate_up(gate_up_weight):
    """The inverse of ``fuse_gate_up``: (gate [F, C], up [F, C]) from [2F, C]."""
    n = gate_up_weight.shape[0]
    if n % 2:
        raise ValueError(f"split_gate_up: expected [2F, C], got {tuple(gate_up_weight.shape)}")
    return gate_up_weight[: n // 2], gate_up_weight[n // 2 :]


def _check_sizes(name: str, d_model: int, hidden: int) -> None:
    for arg, v in (("d_model", d_model), ("hidden", hidden)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name}: {arg} must be a positive int, got {v!r}")


class MLP(Module):
    """y = dropout(c_proj(act(c_fc(x)))).

    Args: d_model C, hidden F (default 4 C), activation "gelu" | "gelu_tanh" | "relu" |
    "silu", bias (True, GPT-2), dropout on the output (training only).
    x [..., C] -> y [..., C].
    """

    def __init__(
        self,
        d_model: int,
        hidden: int | None = None,
        activation: str = "gelu",
        bias: bool = True,
        dropout: float = 0.0,
        dtype=None,
        device=None,
    ) -> None:
        super().__init__()
        hidden = 4 * d_model if hidden is None else hidden
        _check_sizes("MLP", d_model, hidden)
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"MLP: activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}"
            )
        self.d_model, self.hidden, self.activation = d_model, hidden, activation
        self.c_fc = Linear(d_model, hidden, bias=bias, dtype=dtype, device=device)
        self.c_proj = Linear(hidden, d_model, bias=bias, dtype=dtype, device=device)
        self.drop = Dropout(dropout)

    def forward(self, x):
        return self.drop(self.c_proj(_ACTIVATIONS[self.activation](self.c_fc(x))))

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, hidden={self.hidden}, activation={self.activation!r}"


class GatedMLP(Module):
    """y = down_proj(act(gate) * up), [gate, up] = gate_up_proj(x), one fused gated op.

    Args: d_model C, hidden F (default ``gated_hidden_size(C)`` ~ 8C/3), variant "swiglu"
    (Llama, Mistral) | "geglu" (Gemma uses its tanh form: "geglu_tanh") | "reglu", bias
    (False), dropout on the output. x [..., C] -> y [..., C].
    """

    def __init__(
        self,
        d_model: int,
        hidden: int | None = None,
        variant: str = "swiglu",
        bias: bool = False,
        dropout: float = 0.0,
        dtype=None,
        device=None,
    ) -> None:
        super().__init__()
        hidden = gated_hidden_size(d_model) if hidden is None else hidden
        _check_sizes("GatedMLP", d_model, hidden)
        if variant not in _GATED:
            raise ValueError(f"GatedMLP: variant must be one of {sorted(_GATED)}, got {variant!r}")
        self.d_model, self.hidden, self.variant = d_model, hidden, variant
        self.gate_up_proj = Linear(d_model, 2 * hidden, bias=bias, dtype=dtype, device=device)
        self.down_proj = Linear(hidden, d_model, bias=bias, dtype=dtype, device=device)
        self.drop = Dropout(dropout)

    def forward(self, x):
        return self.drop(self.down_proj(_GATED[self.variant](self.gate_up_proj(x))))

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, hidden={self.hidden}, variant={self.variant!r}"
