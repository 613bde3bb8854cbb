"""PyTorch-style parameter groups that exempt norms and biases from weight decay.

A parameter gets no decay when any of these holds (the rule of timm's
``param_groups_weight_decay`` and nanoGPT's ``configure_optimizers``):

    p.ndim <= 1                       biases, norm scales and shifts, scalars
    its name is, or ends in, "bias"
    it belongs to a LayerNorm, RMSNorm or GroupNorm module
    its full name is in ``no_weight_decay``

Everything else (matrices of Linear, Embedding, convolutions...) decays. Parameters that do
not require grad are left out, as an optimizer would refuse them.
"""

from __future__ import annotations

from collections.abc import Iterable

from tinyllm.nn.module import Module
from tinyllm.nn.normalization import GroupNorm, LayerNorm, RMSNorm

_NORMS = (LayerNorm, RMSNorm, GroupNorm)


def param_groups_weight_decay(
    model: Module, weight_decay: float, no_weight_decay: Iterable[str] = ()
) -> list[dict]:
    """``[{"params": decayed, "weight_decay": weight_decay}, {"params": rest,
    "weight_decay": 0.0}]``, each list in ``model.named_parameters()`` order; pass it to any
    tinyllm (or PyTorch-shaped) optimizer. Empty groups are dropped."""
    if not isinstance(model, Module):
        raise TypeError(
            f"param_groups_weight_decay: model must be a tinyllm Module, got {type(model).__name__}"
        )
    if weight_decay < 0:
        raise ValueError(
            f"param_groups_weight_decay: weight_decay must be >= 0, got {weight_decay}"
        )
    skip = set(no_weight_decay)
    in_norm = {
        id(p) for _, m in model.named_modules() if isinstance(m, _NORMS) for p in m.parameters()
    }
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = p.ndim <= 1 or name.split(".")[-1] == "bias" or id(p) in in_norm or name in skip
        (no_decay if exempt else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": float(weight_decay)},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
