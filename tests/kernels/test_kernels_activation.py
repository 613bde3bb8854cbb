"""The elementwise activation kernels (SiLU, GELU tanh, exact GELU): Numba equals the
reference, the reference equals the closed forms and finite differences, the tier is recorded."""

import numpy as np
import pytest
from scipy.special import erf, expit

import tinyllm.kernels as K

ACTS = ("silu", "gelu_tanh", "gelu")


def closed_form(x, act):
    if act == "silu":
        return x * expit(x)
    if act == "gelu_tanh":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


@pytest.mark.parametrize("act", ACTS)
def test_reference_matches_closed_form_and_finite_differences(act):
    x = np.random.default_rng(0).standard_normal((7, 9)) * 3
    dy = np.random.default_rng(1).standard_normal((7, 9))
    with K.use("reference"):
        np.testing.assert_allclose(
            K.activation_forward(x, act), closed_form(x, act), rtol=1e-13, atol=1e-15
        )
        dx = K.activation_backward(dy, x, act)
    eps = 1e-6
    numeric = dy * (closed_form(x + eps, act) - closed_form(x - eps, act)) / (2 * eps)
    np.testing.assert_allclose(dx, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("act", ACTS)
# float32 atol: the reference upcasts to float64; in float32, 1 - tanh(u)^2 near |u| ~ 10 loses
# all digits (t rounds to -1), an absolute error up to ~1 ulp of tanh times
# |x| k0 (1 + 3 k1 x^2) ~ 200 for |x| ~ 12: 1.2e-7 * 200 ~ 2.4e-5
@pytest.mark.parametrize("dtype,tol", [(np.float32, 3e-5), (np.float64, 1e-13)])
def test_numba_equals_reference(act, dtype, tol):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((5, 2, 131)) * 4).astype(dtype)[:, :, ::2]  # odd size, strided
    dy = rng.standard_normal(x.shape).astype(dtype)
    got = K.activation_forward(x, act), K.activation_backward(dy, x, act)
    assert K.last_tier("activation_forward") == K.last_tier("activation_backward") == "numba"
    with K.use("reference"):
        want = K.activation_forward(x, act), K.activation_backward(dy, x, act)
    assert K.last_tier("activation_forward") == "reference"
    for g, w in zip(got, want):
        assert g.dtype == dtype and g.shape == x.shape
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


def test_activation_errors_name_the_op():
    with pytest.raises(ValueError, match="activation_forward: activation must be one of"):
        K.activation_forward(np.zeros(3), "relu")
    with pytest.raises(ValueError, match=r"activation_backward: dy \(2,\) must match x \(3,\)"):
        K.activation_backward(np.zeros(2), np.zeros(3), "silu")
