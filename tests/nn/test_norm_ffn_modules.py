"""Norm modules equal the F ops (and torch.nn modules with the same state dict); feed-forward
blocks equal their direct compositions, and GatedMLP equals Llama's separate gate/up MLP."""

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
from tinyllm.nn.feedforward import MLP, GatedMLP, fuse_gate_up, gated_hidden_size, split_gate_up
from tinyllm.nn.normalization import GroupNorm, LayerNorm, RMSNorm


def _t(shape, seed=0):
    return tinyllm.tensor(np.random.default_rng(seed).standard_normal(shape), dtype="float64")


def _np(t):
    return t.detach().numpy()


def _randomize(module, seed=0):
    rng = np.random.default_rng(seed)
    module.load_state_dict(
        {k: rng.standard_normal(v.shape) for k, v in module.state_dict().items()}
    )
    return module


def test_norm_modules_equal_functional_ops():
    x = _t((2, 3, 6))
    ln = _randomize(LayerNorm(6, eps=1e-4).double())
    np.testing.assert_array_equal(_np(ln(x)), _np(F.layer_norm(x, (6,), ln.weight, ln.bias, 1e-4)))
    rms = _randomize(RMSNorm(6, eps=1e-6).double(), 1)
    np.testing.assert_array_equal(_np(rms(x)), _np(F.rms_norm(x, (6,), rms.weight, 1e-6)))
    gn = _randomize(GroupNorm(2, 4).double(), 2)
    xg = _t((2, 4, 5))
    np.testing.assert_array_equal(_np(gn(xg)), _np(F.group_norm(xg, 2, gn.weight, gn.bias, 1e-5)))


def test_norm_parameters_and_options():
    assert {k: tuple(v.shape) for k, v in LayerNorm(5).state_dict().items()} == {
        "weight": (5,), "bias": (5,)}  # fmt: skip
    assert list(LayerNorm(5, bias=False).state_dict()) == ["weight"]
    assert list(LayerNorm(5, elementwise_affine=False).state_dict()) == []
    assert list(RMSNorm((2, 3)).state_dict()) == ["weight"]
    assert list(GroupNorm(2, 4, affine=False).state_dict()) == []
    np.testing.assert_array_equal(_np(LayerNorm(3).weight), np.ones(3, np.float32))
    np.testing.assert_array_equal(_np(LayerNorm(3).bias), np.zeros(3, np.float32))
    x = _t((4, 3))
    y = _np(LayerNorm(3, elementwise_affine=False).double()(x))
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-12)
    with pytest.raises(ValueError, match="divisible by num_groups"):
        GroupNorm(3, 4)
    with pytest.raises(ValueError, match="expected an input"):
        GroupNorm(2, 4)(_t((2, 6, 3)))


def test_norm_modules_match_torch():
    torch = pytest.importorskip("torch")
    x = _t((2, 3, 6))
    for ours, theirs in [
        (LayerNorm(6), torch.nn.LayerNorm(6)),
        (RMSNorm(6, eps=1e-6), torch.nn.RMSNorm(6, eps=1e-6)),
    ]:
        ours = _randomize(ours.double())
        theirs = theirs.double()
        theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()})
        ref = theirs(torch.tensor(x.numpy())).detach().numpy()
        np.testing.assert_allclose(_np(ours(x)), ref, atol=1e-12)


@pytest.mark.parametrize("activation, fn", [
    ("gelu", lambda h: F.gelu(h)), ("gelu_tanh", lambda h: F.gelu(h, approximate="tanh")),
    ("relu", F.relu), ("silu", F.silu)])  # fmt: skip
def test_mlp_is_its_composition(activation, fn):
    mlp = _randomize(MLP(4, 10, activation=activation).double())
    assert {k: tuple(v.shape) for k, v in mlp.state_dict().items()} == {
        "c_fc.weight": (10, 4), "c_fc.bias": (10,), "c_proj.weight": (4, 10), "c_proj.bias": (4,)}  # fmt: skip
    x = _t((2, 3, 4))
    ref = F.linear(
        fn(F.linear(x, mlp.c_fc.weight, mlp.c_fc.bias)), mlp.c_proj.weight, mlp.c_proj.bias
    )
    np.testing.assert_allclose(_np(mlp(x)), _np(ref), atol=1e-12)


@pytest.mark.parametrize("variant, act", [
    ("swiglu", F.silu), ("geglu", lambda h: F.gelu(h)),
    ("geglu_tanh", lambda h: F.gelu(h, approximate="tanh")), ("reglu", F.relu)])  # fmt: skip
def test_gated_mlp_equals_llama_separate_projections(variant, act):
    """down(act(x Wg^T) * (x Wu^T)) with gate_up_proj.weight = cat([Wg, Wu], dim=0)."""
    rng = np.random.default_rng(3)
    C, Fh = 4, 6
    w_gate, w_up, w_down = (rng.standard_normal(s) for s in [(Fh, C), (Fh, C), (C, Fh)])
    mlp = GatedMLP(C, Fh, variant=variant).double()
    assert {k: tuple(v.shape) for k, v in mlp.state_dict().items()} == {
        "gate_up_proj.weight": (2 * Fh, C), "down_proj.weight": (C, Fh)}  # fmt: skip
    mlp.load_state_dict({"gate_up_proj.weight": fuse_gate_up(w_gate, w_up),
                         "down_proj.weight": w_down})  # fmt: skip
    x = _t((2, 3, C))
    g, u = tinyllm.tensor(w_gate), tinyllm.tensor(w_up)
    ref = F.linear(act(F.linear(x, g)) * F.linear(x, u), tinyllm.tensor(w_down))
    np.testing.assert_allclose(_np(mlp(x)), _np(ref), atol=1e-12)
    back_gate, back_up = split_gate_up(mlp.gate_up_proj.weight.detach().numpy())
    np.testing.assert_array_equal(back_gate, w_gate)
    np.testing.assert_array_equal(back_up, w_up)


def test_ffn_defaults_and_errors():
    assert MLP(8).hidden == 32
    assert gated_hidden_size(96) == 256 and GatedMLP(96).hidden == 256
    with pytest.raises(ValueError, match="activation must be one of"):
        MLP(4, activation="tanh")
    with pytest.raises(ValueError, match="variant must be one of"):
        GatedMLP(4, variant="glu")
    with pytest.raises(ValueError, match="same shape"):
        fuse_gate_up(np.zeros((2, 3)), np.zeros((3, 3)))
