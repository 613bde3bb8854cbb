"""Positional modules: T5 buckets at known offsets (through the module), sinusoidal closed
form, learned table offsets, RoPE and ALiBi modules against the functional ops."""

import math

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
from tinyllm.nn.positional import (
    ALiBi,
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    T5RelativePositionBias,
)

# research file section 17 (HF T5 defaults: 32 buckets, max_distance 128)
BIDIRECTIONAL = {-200: 15, -128: 15, -64: 14, -32: 12, -16: 10, -9: 8, -8: 8, -7: 7, -1: 1,
                 0: 0, 1: 17, 7: 23, 8: 24, 16: 26, 64: 30, 128: 31}  # fmt: skip
CAUSAL = {-200: 31, -128: 31, -64: 26, -32: 21, -16: 16, -9: 9, -8: 8, -1: 1, 0: 0, 1: 0, 50: 0}


@pytest.mark.parametrize("bidirectional, table", [(True, BIDIRECTIONAL), (False, CAUSAL)])
def test_t5_bucket_values_through_the_module(bidirectional, table):
    bias = T5RelativePositionBias(32, 128, n_heads=2, bidirectional=bidirectional).double()
    weight = np.stack([np.arange(32.0), -np.arange(32.0)], axis=1)  # bias value = +-bucket
    bias.load_state_dict({"weight": weight})
    # one query at absolute position 200, keys at 0 .. 328: rel = j - 200 covers -200 .. 128
    out = bias(1, 329, offset=200).detach().numpy()
    assert out.shape == (1, 2, 1, 329)
    for rel, bucket in table.items():
        assert out[0, 0, 0, 200 + rel] == bucket, rel
        assert out[0, 1, 0, 200 + rel] == -bucket, rel


def test_t5_bias_decoding_offset_and_gradient():
    tinyllm.manual_seed(0)
    bias = T5RelativePositionBias(8, 16, n_heads=3, bidirectional=False).double()
    full = bias(6, 6).detach().numpy()  # [1, 3, 6, 6]
    last = bias(1, 6).detach().numpy()  # default offset Tk - Tq = 5
    np.testing.assert_array_equal(last[:, :, 0], full[:, :, 5])
    np.testing.assert_array_equal(bias(2, 6).detach().numpy(), full[:, :, 4:])
    # gradient: d/dW of sum(g * bias) adds g into the bucket rows
    g = np.random.default_rng(1).standard_normal((1, 3, 6, 6))
    bias(6, 6).backward(tinyllm.tensor(g))
    buckets = bias.buckets(6, 6).numpy()
    expected = np.zeros((8, 3))
    np.add.at(expected, buckets, g[0].transpose(1, 2, 0))
    np.testing.assert_allclose(bias.weight.grad.numpy(), expected, atol=1e-12)


def test_sinusoidal_matches_closed_form_and_offsets():
    d, T = 8, 5
    pe = SinusoidalPositionalEncoding(d, max_len=4)  # grown on demand
    x = tinyllm.zeros(2, T, d, dtype="float64")
    out = pe(x, offset=3).numpy()
    for t in range(T):
        for i in range(d // 2):
            angle = (t + 3) / 10000 ** (2 * i / d)
            assert out[1, t, 2 * i] == pytest.approx(math.sin(angle), abs=1e-6)
            assert out[1, t, 2 * i + 1] == pytest.approx(math.cos(angle), abs=1e-6)
    assert "pe" not in pe.state_dict()  # a function of the config, not saved
    with pytest.raises(ValueError, match="d_model must be even"):
        SinusoidalPositionalEncoding(7)


def test_learned_positions_offset_and_range():
    tinyllm.manual_seed(1)
    wpe = LearnedPositionalEmbedding(10, 4).double()
    assert list(wpe.state_dict()) == ["weight"]
    x = tinyllm.zeros(1, 3, 4, dtype="float64")
    np.testing.assert_array_equal(
        wpe(x, offset=6).detach().numpy()[0], wpe.weight.detach().numpy()[6:9]
    )
    with pytest.raises(ValueError, match="exceed the table of max_positions=10"):
        wpe(x, offset=8)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("scaling", [None, {"type": "linear", "factor": 2.0},
                                     {"type": "ntk", "factor": 4.0}])  # fmt: skip
def test_rotary_module_equals_functional_op(layout, scaling):
    rope = RotaryEmbedding(8, base=500.0, layout=layout, scaling=scaling, max_position=4)
    rng = np.random.default_rng(2)
    q = tinyllm.tensor(rng.standard_normal((2, 4, 3, 8)))
    k = tinyllm.tensor(rng.standard_normal((2, 1, 3, 8)))
    q2, k2 = rope(q, k, offset=5)  # past the first table: regrown
    ref_q = F.rotary_embedding(q, base=500.0, layout=layout, offset=5, scaling=scaling)
    ref_k = F.rotary_embedding(k, base=500.0, layout=layout, offset=5, scaling=scaling)
    np.testing.assert_allclose(q2.numpy(), ref_q.numpy(), atol=1e-12)
    np.testing.assert_allclose(k2.numpy(), ref_k.numpy(), atol=1e-12)
    # float32 uses its own cached table
    q32 = rope.rotate(q.float(), offset=5)
    assert q32.dtype == np.float32
    np.testing.assert_allclose(q32.numpy(), ref_q.numpy(), atol=1e-5)


def test_rotary_relative_property():
    rope = RotaryEmbedding(16)
    rng = np.random.default_rng(3)
    q = tinyllm.tensor(rng.standard_normal((1, 16)))
    k = tinyllm.tensor(rng.standard_normal((1, 16)))
    s1 = (rope.rotate(q, 7).numpy() * rope.rotate(k, 3).numpy()).sum()
    s2 = (rope.rotate(q, 1007).numpy() * rope.rotate(k, 1003).numpy()).sum()
    assert s1 == pytest.approx(s2, abs=1e-9)


def test_alibi_module_equals_functional_bias():
    alibi = ALiBi(12)
    np.testing.assert_allclose(alibi.slopes.numpy(), F.alibi_slopes(12).numpy())
    out = alibi(2, 7, dtype="float64").numpy()  # default offset Tk - Tq = 5
    ref = F.alibi_bias(12, 2, 7, offset=5, dtype="float64").numpy()
    np.testing.assert_allclose(out, ref, atol=0)
    assert out[0, 1, 6] == 0.0 and out[0, 1, 0] == pytest.approx(-0.5 * 6)
