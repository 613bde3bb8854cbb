"""GateLoop beyond the registry's checks: its three forms agree (recurrent op, associative
scan, materialized attention), a float64 gradcheck, the chunked backward over several chunks
equals autograd of the attention form, a = 1 is unnormalized causal linear attention,
float32 stays float32, bad input is refused by name."""

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
from tinyllm.functional.gateloop import CHUNK, gateloop_associative, gateloop_attention
from tinyllm.registry.long_context import _gl_ref


def _args(rng, lead=(2, 3), T=9, D=4, Dv=5):
    q, k = rng.standard_normal((*lead, T, D)), rng.standard_normal((*lead, T, D))
    v = rng.standard_normal((*lead, T, Dv))
    a = 1.0 / (1.0 + np.exp(-rng.standard_normal((*lead, T, D))))
    return q, k, v, a


def test_recurrent_equals_associative_and_attention_forms():
    rng = np.random.default_rng(0)
    args = _args(rng, T=37)  # not a power of two: the Hillis-Steele rounds overhang
    y = F.gateloop(*map(tinyllm.tensor, args)).data
    y_scan, h_last = gateloop_associative(*args)
    y_att = gateloop_attention(*map(tinyllm.tensor, args)).data
    # float64, the same products summed in other orders over 37 steps: 1e-12
    np.testing.assert_allclose(y, y_scan, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, y_att, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, _gl_ref(*args), rtol=1e-12, atol=1e-12)
    # the last state by the definition: sum_s P(T-1, s) k_s v_s^T
    q, k, v, a = args
    h = np.zeros(h_last.shape)
    for t in range(q.shape[-2]):
        h = a[..., t, :, None] * h + k[..., t, :, None] * v[..., t, None, :]
    np.testing.assert_allclose(h_last, h, rtol=1e-12, atol=1e-12)


def test_gradcheck_float64():
    rng = np.random.default_rng(1)
    ts = [tinyllm.tensor(x, requires_grad=True) for x in _args(rng, lead=(2,), T=6, D=3, Dv=2)]
    assert tinyllm.gradcheck(F.gateloop, ts)


def test_chunked_backward_equals_autograd_of_attention_form():
    rng = np.random.default_rng(2)
    T = 2 * CHUNK + 7  # three chunks, the last one ragged
    args = _args(rng, lead=(1,), T=T, D=2, Dv=3)
    cot = rng.standard_normal((1, T, 3))
    grads = []
    for fn in (F.gateloop, gateloop_attention):
        ts = [tinyllm.tensor(x, requires_grad=True) for x in args]
        fn(*ts).backward(tinyllm.tensor(cot))
        grads.append([t.grad.data for t in ts])
    for g, g_ref in zip(*grads):
        # float64, the reverse scan vs autograd of the O(T^2) form, 135 steps: 1e-10
        np.testing.assert_allclose(g, g_ref, rtol=1e-10, atol=1e-10)


def test_unit_gates_are_unnormalized_linear_attention():
    rng = np.random.default_rng(3)
    q, k, v, _ = _args(rng, lead=(2,), T=8)
    y = F.gateloop(*map(tinyllm.tensor, (q, k, v, np.ones_like(q)))).data
    scores = np.tril(q @ np.swapaxes(k, -1, -2))  # sum_{s<=t} (q_t . k_s) v_s
    np.testing.assert_allclose(y, scores @ v, rtol=1e-12, atol=1e-12)


def test_float32_stays_float32_and_matches_float64():
    rng = np.random.default_rng(4)
    args = _args(rng)
    ts = [tinyllm.tensor(x.astype(np.float32), requires_grad=True) for x in args]
    y = F.gateloop(*ts)
    y.backward(tinyllm.tensor(np.ones(y.shape, np.float32)))
    assert y.dtype == np.float32 and all(t.grad.dtype == np.float32 for t in ts)
    # float32 rounding over 9 steps of O(1) terms: 1e-5
    np.testing.assert_allclose(y.data, _gl_ref(*args), rtol=1e-5, atol=1e-5)


def test_bad_input_is_named():
    q = tinyllm.randn(2, 5, 3)
    with pytest.raises(ValueError, match="gateloop: a of shape"):
        F.gateloop(q, q, q, tinyllm.randn(2, 5, 2))
    with pytest.raises(ValueError, match="gateloop: v must be"):
        F.gateloop(q, q, tinyllm.randn(2, 4, 3), q)
    with pytest.raises(TypeError, match="gateloop: q, k, v and a must share one dtype"):
        F.gateloop(q, q, q, q.to("float64"))
