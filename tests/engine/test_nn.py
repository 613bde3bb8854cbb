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


def test_state_dict_prefix_keep_vars_and_destination_as_pytorch():
    block = Block()
    plain = block.state_dict()
    prefixed = block.state_dict(prefix="model.")
    assert list(prefixed) == ["model." + k for k in plain]
    assert prefixed["model.proj.weight"].data is block.proj.weight.data
    assert not prefixed["model.proj.weight"].requires_grad  # detached by default
    kept = block.state_dict(keep_vars=True)
    assert kept["proj.weight"] is block.proj.weight and kept["scale"] is block.scale
    assert kept["proj.weight"].requires_grad
    into = {"other": 1}
    assert block.state_dict(destination=into, prefix="b.") is into
    assert list(into) == ["other"] + ["b." + k for k in plain]


def test_load_state_dict_assign_takes_the_given_tensors_as_pytorch():
    model = Block()
    model.layers[0].weight.requires_grad = False
    state = {k: tinyllm.randn(*v.shape).double() for k, v in model.state_dict().items()}
    state["proj.bias"] = nn.Parameter(tinyllm.randn(3).double())  # a Parameter is kept as is
    state["layers.1.weight"] = np.ones((2, 3))  # arrays are accepted, as by the copy path
    result = model.load_state_dict(state, assign=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    # the module now holds the given tensors: their dtype, their memory (no copy)
    assert isinstance(model.proj.weight, nn.Parameter)
    assert model.proj.weight.data is state["proj.weight"].data
    assert model.proj.weight.dtype == np.float64 and model.scale.dtype == np.float64
    assert model.proj.bias is state["proj.bias"]
    assert model.scale is state["scale"] and model._buffers["scale"] is state["scale"]
    np.testing.assert_array_equal(model.layers[1].weight.data, np.ones((2, 3)))
    # requires_grad stays the module parameter's; parameters() lists the new objects
    assert model.layers[0].weight.requires_grad is False and model.proj.weight.requires_grad
    assert any(p is model.proj.weight for p in model.parameters())
    y = model(tinyllm.randn(2, 4).double())
    y.sum().backward()
    assert model.proj.weight.grad is not None


def test_load_state_dict_assign_keeps_tied_weights_tied_and_copy_keeps_dtype():
    a, b = nn.Linear(3, 3), nn.Linear(3, 3)
    b.weight = a.weight
    model = nn.Sequential(a, b)
    shared = tinyllm.randn(3, 3).double()
    state = {k: tinyllm.randn(*v.shape).double() for k, v in model.state_dict().items()}
    state["0.weight"] = state["1.weight"] = shared
    model.load_state_dict(state, assign=True)
    assert model[0].weight is model[1].weight and model[0].weight.data is shared.data
    copied = nn.Linear(3, 3)
    copied.load_state_dict({"weight": shared, "bias": tinyllm.zeros(3)})  # assign=False
    assert copied.weight.dtype == np.float32 and copied.weight.data is not shared.data


def test_load_state_dict_assign_checks_before_changing_anything():
    model = Block()
    before = model.proj.weight
    state = {k: v.double() for k, v in model.state_dict().items()}
    state["proj.weight"] = tinyllm.zeros(4, 4)
    with pytest.raises(RuntimeError, match="size mismatch for proj.weight"):
        model.load_state_dict(state, assign=True)
    assert model.proj.weight is before and model.scale.dtype == np.float32


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


@pytest.mark.parametrize("was_training", [True, False])
def test_eval_mode_restores_the_flag_also_on_an_error(was_training):
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).train(was_training)
    with nn.eval_mode(model) as inside:
        assert inside is model and not model.training and not model[1].training
        model.append(nn.Dropout(0.1))  # added inside the block: takes the root's flag after
    assert all(m.training == was_training for m in model.modules())
    with pytest.raises(RuntimeError, match="boom"), nn.eval_mode(model):
        assert not model[2].training
        raise RuntimeError("boom")
    assert all(m.training == was_training for m in model.modules())


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
