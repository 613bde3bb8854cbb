"""param_groups_weight_decay: which parameters decay, checked by name on a small model, and
the effect in AdamW (an exempt parameter with zero gradient does not move)."""

import numpy as np
import pytest

import tinyllm
from tinyllm import nn
from tinyllm.optim import AdamW, param_groups_weight_decay


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.norm = nn.LayerNorm(4)
        self.rms = nn.RMSNorm(4)
        self.proj = nn.Linear(4, 3)
        self.head = nn.Linear(3, 2, bias=False)


def _names(model, group):
    ids = {id(p) for p in group["params"]}
    return sorted(n for n, p in model.named_parameters() if id(p) in ids)


def test_norms_and_biases_get_no_weight_decay():
    model = Tiny()
    decay, rest = param_groups_weight_decay(model, 0.1)
    assert decay["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
    assert _names(model, decay) == ["emb.weight", "head.weight", "proj.weight"]
    assert _names(model, rest) == ["norm.bias", "norm.weight", "proj.bias", "rms.weight"]
    # every trainable parameter lands in exactly one group
    got = [id(p) for g in (decay, rest) for p in g["params"]]
    assert sorted(got) == sorted(id(p) for p in model.parameters())


def test_no_weight_decay_names_and_frozen_parameters():
    model = Tiny()
    model.head.weight.requires_grad = False
    decay, rest = param_groups_weight_decay(model, 0.1, no_weight_decay=["emb.weight"])
    assert _names(model, decay) == ["proj.weight"]
    assert "emb.weight" in _names(model, rest) and "head.weight" not in _names(model, rest)


def test_exempt_parameters_do_not_decay_in_adamw():
    """With zero gradients AdamW moves a parameter only through decay: p (1 - lr wd)."""
    model = Tiny()
    before = {n: p.data.copy() for n, p in model.named_parameters()}
    opt = AdamW(param_groups_weight_decay(model, 0.5), lr=0.1)
    for p in model.parameters():
        p.grad = tinyllm.tensor(np.zeros_like(p.data))
    opt.step()
    for n, p in model.named_parameters():
        factor = 1 - 0.1 * 0.5 if n in ("emb.weight", "head.weight", "proj.weight") else 1.0
        np.testing.assert_allclose(p.data, before[n] * factor, rtol=1e-6)  # float32 params


def test_param_groups_errors():
    with pytest.raises(TypeError, match="param_groups_weight_decay: model must be"):
        param_groups_weight_decay([1, 2], 0.1)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        param_groups_weight_decay(Tiny(), -1.0)
