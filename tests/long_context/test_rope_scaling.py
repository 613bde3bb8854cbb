"""Context extension of RoPE (tinyllm/nn/positional.py): at scale 1 linear interpolation,
NTK-aware scaling and YaRN each equal plain RoPE; PI's angles at position s p equal plain
ones at p; NTK keeps the highest frequency and divides the lowest by s; YaRN's ramp keeps
the pairs that turn more than beta_fast times over the original context, interpolates those
that turn less than beta_slow times, and its temperature is 0.1 ln s + 1; set_rope_scaling
on a Llama; the default path is unchanged."""

import math

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
from tinyllm.models import Llama, ModelConfig
from tinyllm.nn.positional import RotaryEmbedding, set_rope_scaling, yarn_frequencies

D, BASE = 16, 10000.0
X = np.zeros((1, 1), np.float64)  # the dtype/device template of cos_sin


def _tables(scaling, T=64, offset=0):
    cos, sin = RotaryEmbedding(D, BASE, scaling=scaling).cos_sin(T, offset, X)
    return cos, sin


def _yarn(s, L=32):
    return {"type": "yarn", "factor": s, "original_max_position": L}


@pytest.mark.parametrize("kind", ["linear", "ntk", "yarn"])
def test_scale_one_equals_plain_rope(kind):
    scaling = _yarn(1.0) if kind == "yarn" else {"type": kind, "factor": 1.0}
    cos, sin = _tables(scaling, T=300)
    cos0, sin0 = _tables(None, T=300)
    # linear and ntk: the same float64 angles; yarn mixes theta (1 - g) + theta g: 1 ulp of
    # theta, times positions up to 300: 1e-12
    np.testing.assert_allclose(cos, cos0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sin, sin0, rtol=0, atol=1e-12)
    q = tinyllm.tensor(np.random.default_rng(0).standard_normal((2, 5, D)))
    a = RotaryEmbedding(D, BASE, scaling=scaling).rotate(q, offset=7).data
    np.testing.assert_allclose(a, RotaryEmbedding(D, BASE).rotate(q, offset=7).data, atol=1e-12)


@pytest.mark.parametrize("s", [2.0, 4.0, 8.0])
def test_position_interpolation_at_s_p_equals_plain_at_p(s):
    P = 50
    cos, sin = _tables({"type": "linear", "factor": s}, T=int(s * P))
    cos0, sin0 = _tables(None, T=P)
    idx = (s * np.arange(P)).astype(int)
    # float64: (s p) (theta / s) vs p theta differ by rounding of O(100) radians: 1e-12
    np.testing.assert_allclose(cos[idx], cos0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sin[idx], sin0, rtol=0, atol=1e-12)


def test_ntk_keeps_the_highest_frequency_and_divides_the_lowest_by_s():
    s = 4.0
    theta = F.rope_frequencies(D, BASE, dtype="float64").data
    ntk = F.rope_frequencies(D, BASE, {"type": "ntk", "factor": s}, dtype="float64").data
    assert ntk[0] == theta[0] == 1.0
    assert ntk[-1] == pytest.approx(theta[-1] / s, rel=1e-12)
    cos, _ = _tables({"type": "ntk", "factor": s}, T=10)
    np.testing.assert_allclose(cos[:, -1], np.cos(np.arange(10) * ntk[-1]), atol=1e-15)


@pytest.mark.parametrize("s,L", [(4.0, 256), (8.0, 1024), (2.0, 4096)])
def test_yarn_ramp_by_rotation_counts(s, L):
    Dh = 64
    inv_freq, mscale = yarn_frequencies(Dh, BASE, s, L)
    theta = BASE ** (-np.arange(0, Dh, 2) / Dh)
    turns = L * theta / (2 * math.pi)  # how often pair i turns over the original context
    fast, slow = turns > 32, turns < 1  # beta_fast = 32, beta_slow = 1
    assert fast.any() and slow.any()
    # extrapolated: untouched (1 ulp: base^-x here vs 1 / base^x there)
    np.testing.assert_allclose(inv_freq[fast], theta[fast], rtol=1e-15)
    np.testing.assert_allclose(inv_freq[slow], theta[slow] / s, rtol=1e-15)  # interpolated
    mid = ~fast & ~slow
    gamma = (theta[mid] - inv_freq[mid]) / (theta[mid] - theta[mid] / s)
    assert np.all((gamma >= 0) & (gamma <= 1)) and np.all(np.diff(gamma) >= 0)  # a ramp
    assert mscale == pytest.approx(0.1 * math.log(s) + 1)
    cos, sin = RotaryEmbedding(Dh, BASE, scaling=_yarn(s, L)).cos_sin(20, 3, X)
    np.testing.assert_allclose(cos**2 + sin**2, mscale**2, rtol=1e-14)  # q.k scaled by mscale^2


def test_yarn_bad_arguments_are_named():
    with pytest.raises(ValueError, match="yarn_frequencies: factor"):
        RotaryEmbedding(D, scaling={"type": "yarn", "factor": -1, "original_max_position": 8})
    with pytest.raises(ValueError, match="beta_fast > beta_slow"):
        yarn_frequencies(D, factor=2.0, beta_fast=1.0, beta_slow=2.0)


def test_llama_with_scaling_and_default_path_unchanged():
    config = ModelConfig(arch="llama", vocab_size=30, d_model=16, n_layer=2, n_head=2,
                         block_size=16)  # fmt: skip
    tinyllm.manual_seed(0)
    model = Llama(config)
    idx = tinyllm.tensor(np.random.default_rng(1).integers(0, 30, (1, 40)))
    base = model(idx).data
    assert set_rope_scaling(model, {"type": "linear", "factor": 1.0}) == 2
    np.testing.assert_array_equal(model(idx).data, base)  # factor 1: theta / 1 is theta
    set_rope_scaling(model, _yarn(4.0, 16))
    yarn = model(idx).data
    assert not np.allclose(yarn, base)
    # generation through the lean decoder reads the same module tables
    out = model.generate(idx[:, :6], 3, temperature=0.0)
    full = model(out[:, :-1]).data
    assert np.array_equal(np.argmax(full[0, 5:], -1), out.data[0, 6:])
    set_rope_scaling(model, None)
    np.testing.assert_array_equal(model(idx).data, base)
