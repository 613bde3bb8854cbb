"""LoRA: a frozen linear layer plus a trainable low-rank update (Hu et al. 2021; PEFT's API).

For a base layer y = x W^T + b (W [out, in], frozen) and rank r:

    y = base(x) + (alpha / r) * dropout(x) A^T B^T         A [r, in], B [out, r]

A starts as PyTorch's Linear init (kaiming_uniform with a = sqrt(5): U(-1/sqrt(in),
1/sqrt(in))) and B as zeros, so the adapted layer starts equal to the base layer. Only A and
B are trained. ``merge()`` folds the update into a float base, W <- W + (alpha / r) B A, and
``unmerge()`` takes it back out; a merged layer computes base(x) alone (no dropout on the
update path then, as in PEFT).

QLoRA: the base is a ``tinyllm.quant.QuantLinear`` over an NF4 weight (``qlora_model``): the
gradient flows through the dequantized frozen weight to x (dx = dy W_hat + (alpha / r) dy B A)
and into A and B; the packed weight has no gradient and never changes. A quantized base cannot
be merged in place (the sum is not NF4); ``merged_weight()`` returns the float
W_hat + (alpha/r) B A.

Backward of the update path (engine ops): with h = dropout(x) A^T [.., r] and u = h B^T,
dB = (alpha/r) dy^T h, dA = (alpha/r) (dy B)^T dropout(x), dx += (alpha/r) dropout'(dy B A).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

import tinyllm.functional as F
from tinyllm.nn import init
from tinyllm.nn.layers import Linear
from tinyllm.nn.module import Module
from tinyllm.nn.parameter import Parameter
from tinyllm.tensor import Tensor

__all__ = [
    "LoRALinear",
    "apply_lora",
    "lora_named_parameters",
    "lora_parameters",
    "mark_only_lora_as_trainable",
    "merge_lora",
    "unmerge_lora",
]


class LoRALinear(Module):
    """``base(x) + (alpha / r) dropout(x) A^T B^T`` with ``base`` frozen (Linear or QuantLinear)."""

    def __init__(self, base: Module, r: int = 8, alpha: float = 16.0, dropout: float = 0.0) -> None:
        super().__init__()
        if r < 1:
            raise ValueError(f"LoRALinear: rank r must be >= 1, got {r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRALinear: dropout must be in [0, 1), got {dropout}")
        self.base = base
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r, self.alpha, self.scaling = int(r), float(alpha), float(alpha) / int(r)
        self.dropout = float(dropout)
        dtype = base.weight.dtype if isinstance(base, Linear) else np.float32
        self.lora_A = Parameter(np.zeros((self.r, self.in_features), dtype=dtype))
        self.lora_B = Parameter(np.zeros((self.out_features, self.r), dtype=dtype))
        init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        for p in base.parameters():
            p.requires_grad = False
        self.merged = False

    def forward(self, x: Tensor) -> Tensor:
        y = self.base(x)
        if self.merged:
            return y
        h = F.dropout(x, self.dropout, self.training) if self.dropout > 0 else x
        return y + F.linear(F.linear(h, self.lora_A), self.lora_B) * self.scaling

    def delta_weight(self) -> np.ndarray:
        """(alpha / r) B A [out, in]."""
        return self.scaling * (self.lora_B.data @ self.lora_A.data)

    def merged_weight(self) -> np.ndarray:
        """The dense weight the adapted layer applies: W (or W_hat) + (alpha / r) B A."""
        base = self.base.weight.data
        return base if self.merged else base + self.delta_weight().astype(base.dtype)

    def merge(self) -> None:
        """W <- W + (alpha / r) B A (float base only); afterwards forward is base(x)."""
        if not isinstance(self.base, Linear):
            raise TypeError(
                "LoRALinear.merge: the base is quantized; use merged_weight() for a float copy"
            )
        if not self.merged:
            w = self.base.weight
            w.data = w.data + self.delta_weight().astype(w.dtype)
            self.merged = True

    def unmerge(self) -> None:
        """W <- W - (alpha / r) B A: back to base + adapter."""
        if self.merged:
            w = self.base.weight
            w.data = w.data - self.delta_weight().astype(w.dtype)
            self.merged = False

    @property
    def weight(self) -> Tensor:
        return Tensor(self.merged_weight())

    @property
    def bias(self):
        return getattr(self.base, "bias", None)

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, dropout={self.dropout}, merged={self.merged}"


def _is_linear(module: Module) -> bool:
    from tinyllm.quant.linear import QuantLinear

    return isinstance(module, (Linear, QuantLinear))


def apply_lora(
    model: Module,
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    target_modules: Iterable[str] | None = None,
    exclude: Iterable[str] = ("lm_head",),
) -> list[str]:
    """Wrap linear layers of ``model`` in ``LoRALinear`` in place; returns their names.

    ``target_modules``: last name components to adapt (e.g. ("q_proj", "v_proj")); None
    adapts every linear (QLoRA's ``find_all_linear_names``) except the ``exclude`` names.
    Every other parameter is frozen (``mark_only_lora_as_trainable``).
    """
    targets = None if target_modules is None else set(target_modules)
    excluded = set(exclude)
    names = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if not _is_linear(child) or child_name in excluded or full in excluded:
                continue
            if targets is not None and child_name not in targets:
                continue
            setattr(module, child_name, LoRALinear(child, r, alpha, dropout))
            names.append(full)
    mark_only_lora_as_trainable(model)
    return names


def _is_lora(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in ("lora_A", "lora_B")


def mark_only_lora_as_trainable(model: Module) -> None:
    """requires_grad = True for lora_A/lora_B, False for every other parameter."""
    for name, p in model.named_parameters():
        p.requires_grad = _is_lora(name)


def lora_named_parameters(model: Module) -> list[tuple[str, Parameter]]:
    """``(name, parameter)`` of the adapters' A and B matrices (what an adapter file holds)."""
    return [(n, p) for n, p in model.named_parameters() if _is_lora(n)]


def lora_parameters(model: Module) -> list[Parameter]:
    """The adapters' parameters (what an optimizer should get)."""
    return [p for _, p in lora_named_parameters(model)]


def merge_lora(model: Module) -> None:
    for m in model.modules():
        if isinstance(m, LoRALinear):
            m.merge()


def unmerge_lora(model: Module) -> None:
    for m in model.modules():
        if isinstance(m, LoRALinear):
            m.unmerge()
