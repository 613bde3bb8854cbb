"""Module registration, state dicts, layers, and an end-to-end MLP."""

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
from tinyllm import nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 3)
        self.layers = nn.ModuleList([nn.Linear(3, 3), nn.Linear(3, 2, bias=False)])
        self.register_buffer("scale", tinyllm.ones(2))
        self.register_buffer("cache", tinyllm.zeros(1), persistent=False)

    def forward(self, x):
        x = self.proj(x).tanh()
        for layer in self.layers:
            x = layer(x)
        return x * self.scale


def test_names_follow_pytorch_layout():
    block = Block()
    names = [n for n, _ in block.named_parameters()]
    assert names == ["proj.weight", "proj.bias", "layers.0.weight", "layers.0.bias",
                     "layers.1.weight"]  # fmt: skip
    # as PyTorch: a module's own parameters and buffers first, then its children's
    assert list(block.state_dict()) == ["scale"] + names
    assert block.proj.weight.shape == (3, 4)
    assert block.num_parameters() == 12 + 3 + 9 + 3 + 6


def test_shared_parameters_counted_once():
    a = nn.Linear(3, 3)
    b = nn.Linear(3, 3)
    b.weight = a.weight
    model = nn.Sequential(a, b)
    assert len(list(model.parameters())) == 3


def test_load_state_dict_round_trip_and_numpy_values():
    src, dst = Block(), Block()
    state = {k: v.numpy() for k, v in src.state_dict().items()}
    dst.load_state_dict(state)
    x = tinyllm.randn(5, 4)
    np.testing.assert_array_equal(src(x).detach().numpy(), dst(x).detach().numpy())


def test_load_state_dict_errors_change_nothing():
    model = Block()
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    state = {k: v.numpy() * 0 for k, v in model.state_dict().items()}
    state["proj.weight"] = np.zeros((4, 4), dtype=np.float32)
    del state["scale"]
    state["extra"] = np.zeros(1)
    with pytest.raises(RuntimeError) as err:
        model.load_state_dict(state)
    message = str(err.value)
    assert "missing keys: ['scale']" in message and "unexpected keys: ['extra']" in message
    assert "size mismatch for proj.weight: checkpoint has (4, 4), the model has (3, 4)" in message
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k])
    result = model.load_state_dict({"scale": np.full(2, 3.0)}, strict=False)
    assert "proj.weight" in result.missing_keys
    np.testing.assert_array_equal(model.scale.numpy(), [3.0, 3.0])


def test_linear_init_bounds_and_train_eval():
    tinyllm.manual_seed(0)
    layer = nn.Linear(100, 50)
    bound = 1 / np.sqrt(100)
    assert np.abs(layer.weight.detach().numpy()).max() <= bound
    assert np.abs(layer.weight.detach().numpy()).max() > 0.9 * bound
    model = nn.Sequential(layer, nn.Dropout(0.5))
    model.eval()
    assert not model[1].training
    model.train()
    assert model[1].training


def test_module_to_double_keeps_parameter_objects():
    model = Block()
    w = model.proj.weight
    model.double()
    assert model.proj.weight is w and w.dtype == np.float64
    assert model(tinyllm.randn(2, 4, dtype="float64")).dtype == np.float64


def test_mlp_learns_two_spirals():
    """A 2-layer MLP with AdamW separates the demo's spirals (the README's demo, shortened)."""
    from tinyllm.cli.demo_cmd import build_mlp, spirals

    tinyllm.manual_seed(0)
    rng = np.random.default_rng(0)
    x, y = spirals(200, rng)
    model = build_mlp(32)
    opt = tinyllm.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4)
    X, Y = tinyllm.tensor(x), tinyllm.tensor(y)
    first = None
    for _ in range(300):
        loss = F.cross_entropy(model(X), Y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 0.6 and loss.item() < 0.15, (first, loss.item())
