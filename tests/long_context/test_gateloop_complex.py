"""GateLoop with complex gates a e^{i theta} (issue 17), beyond the registry's checks.

The op holds the complex state as two real arrays; every check here is independent of that:
NumPy complex128 (the recurrence and the associative scan), the attention form in tinyllm ops
(cos/sin of the cumulative phase) and its autograd, a closed form for constant phases, float64
finite differences, torch's complex autograd (optional), and two mutation-style identities:
theta = 0 is the real op bit for bit, theta = pi turns a into -a."""

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
from tinyllm.functional.gateloop import CHUNK, gateloop_associative, gateloop_attention


def _args(rng, lead=(2, 3), T=9, D=4, Dv=5):
    q, k = rng.standard_normal((*lead, T, D)), rng.standard_normal((*lead, T, D))
    v = rng.standard_normal((*lead, T, Dv))
    a = 1.0 / (1.0 + np.exp(-rng.standard_normal((*lead, T, D))))  # the paper's sigmoid
    theta = rng.uniform(-np.pi, np.pi, (*lead, T, D))
    return q, k, v, a, theta


def _complex_recurrence(q, k, v, a, theta):
    """(y, all states) by the definition, in complex128: h = a e^{i theta} h + k v^T."""
    alpha = a * np.exp(1j * theta)
    h = np.zeros(q.shape[:-2] + (q.shape[-1], v.shape[-1]), complex)
    ys, hs = [], []
    for t in range(q.shape[-2]):
        h = alpha[..., t, :, None] * h + k[..., t, :, None] * v[..., t, None, :]
        ys.append(np.einsum("...d,...de->...e", q[..., t, :], h).real)
        hs.append(h)
    return np.stack(ys, -2), hs


def _grads(fn, arrays, cot):
    ts = [tinyllm.tensor(x, requires_grad=True) for x in arrays]
    y = fn(*ts)
    y.backward(tinyllm.tensor(cot))
    return y.data, [t.grad.data for t in ts]


def test_recurrent_equals_complex_scan_and_attention_forms():
    rng = np.random.default_rng(0)
    args = _args(rng, T=37)  # not a power of two: the Hillis-Steele rounds overhang
    y = F.gateloop(*map(tinyllm.tensor, args)).data
    y_ref, hs = _complex_recurrence(*args)
    y_scan, h_last = gateloop_associative(*args)
    y_att = gateloop_attention(*map(tinyllm.tensor, args)).data
    # float64, the same products in other orders (and cos(Phi_t - Phi_s) as a product of
    # cos/sin of |Phi| <= 37 pi) over 37 steps: 1e-12
    for other in (y_ref, y_scan, y_att):
        np.testing.assert_allclose(y, other, rtol=1e-12, atol=1e-12)
    assert np.iscomplexobj(h_last)
    np.testing.assert_allclose(h_last, hs[-1], rtol=1e-12, atol=1e-12)


def test_constant_phase_unit_gates_closed_form():
    """a = 1, theta_t = w (per d): y_t = sum_{s<=t} (sum_d q_t k_s cos(w (t - s))) v_s."""
    rng = np.random.default_rng(1)
    q, k, v, _, _ = _args(rng, lead=(2,), T=11, D=3, Dv=2)
    w = np.array([0.3, -1.1, 2.5])
    theta = np.broadcast_to(w, q.shape).copy()
    y = F.gateloop(*map(tinyllm.tensor, (q, k, v, np.ones_like(q), theta))).data
    lag = np.arange(11)[:, None] - np.arange(11)[None, :]  # t - s
    rot = np.cos(lag[..., None] * w) * (lag >= 0)[..., None]  # [t, s, d], causal
    scores = np.einsum("btd,bsd,tsd->bts", q, k, rot)
    # float64, ten rotations by w vs cos(10 w) once: 1e-12
    np.testing.assert_allclose(y, scores @ v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("complex_gates", [False, True])
def test_gradcheck_float64(complex_gates):
    rng = np.random.default_rng(2)
    arrays = _args(rng, lead=(2,), T=6, D=3, Dv=2)
    arrays = arrays if complex_gates else arrays[:4]
    ts = [tinyllm.tensor(x, requires_grad=True) for x in arrays]
    assert tinyllm.gradcheck(F.gateloop, ts)


def test_chunked_backward_equals_autograd_of_attention_form():
    rng = np.random.default_rng(3)
    T = 2 * CHUNK + 7  # three chunks, the last one ragged
    args = _args(rng, lead=(1,), T=T, D=2, Dv=3)
    cot = rng.standard_normal((1, T, 3))
    y, grads = _grads(F.gateloop, args, cot)
    y_att, grads_att = _grads(gateloop_attention, args, cot)
    np.testing.assert_allclose(y, y_att, rtol=1e-10, atol=1e-10)
    for g, g_ref in zip(grads, grads_att):
        # float64, the reverse scan vs autograd of the O(T^2) form, 135 steps, phases summed
        # to |Phi| ~ 100: 1e-10
        np.testing.assert_allclose(g, g_ref, rtol=1e-10, atol=1e-10)


def test_gradients_equal_torch_complex_autograd():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    args = _args(rng, lead=(2,), T=10, D=3, Dv=2)
    cot = rng.standard_normal((2, 10, 2))
    y, grads = _grads(F.gateloop, args, cot)
    q, k, v, a, theta = (torch.tensor(x, requires_grad=True) for x in args)
    alpha = a * torch.exp(1j * theta)
    h = torch.zeros(2, 3, 2, dtype=torch.complex128)
    ys = []
    for t in range(10):
        h = alpha[:, t, :, None] * h + (k[:, t, :, None] * v[:, t, None, :]).to(h.dtype)
        ys.append(torch.einsum("rd,rde->re", q[:, t].to(h.dtype), h).real)
    y_t = torch.stack(ys, 1)
    (y_t * torch.tensor(cot)).sum().backward()
    np.testing.assert_allclose(y, y_t.detach().numpy(), rtol=1e-12, atol=1e-12)
    for g, x in zip(grads, (q, k, v, a, theta)):
        # float64, two engines, the same math in other orders over 10 steps: 1e-11
        np.testing.assert_allclose(g, x.grad.numpy(), rtol=1e-11, atol=1e-11)


def test_zero_phase_is_the_real_op_exactly():
    rng = np.random.default_rng(5)
    q, k, v, _, _ = _args(rng, lead=(2,), T=CHUNK + 6, D=3, Dv=2)  # two chunks
    a = 1.2 * np.tanh(rng.standard_normal(q.shape))  # gates of both signs
    cot = rng.standard_normal(v.shape)
    y_real, g_real = _grads(F.gateloop, (q, k, v, a), cot)
    y_cplx, g_cplx = _grads(F.gateloop, (q, k, v, a, np.zeros_like(a)), cot)
    np.testing.assert_array_equal(y_cplx, y_real)  # cos 0 = 1, sin 0 = 0: the same floats
    for g, g_ref in zip(g_cplx[:4], g_real):
        np.testing.assert_array_equal(g, g_ref)


def test_half_turn_phase_negates_the_gate():
    rng = np.random.default_rng(6)
    q, k, v, a, _ = _args(rng, lead=(2,), T=CHUNK + 6, D=3, Dv=2)
    cot = rng.standard_normal(v.shape)
    y_real, (dq, dk, dv, da_neg) = _grads(F.gateloop, (q, k, v, -a), cot)
    y_cplx, g_cplx = _grads(F.gateloop, (q, k, v, a, np.full_like(a, np.pi)), cot)
    # a e^{i pi} = -a, up to sin(pi) = 1.2e-16 in float64 leaking into Im h (and back into
    # Re h at second order): 1e-13 over 70 steps
    np.testing.assert_allclose(y_cplx, y_real, rtol=1e-13, atol=1e-13)
    # d/da of f(-a) is -f'(-a): the complex op's da is minus the real op's
    for g, g_ref in zip(g_cplx[:4], (dq, dk, dv, -da_neg)):
        np.testing.assert_allclose(g, g_ref, rtol=1e-13, atol=1e-13)
    # the phase moves the output: dtheta is not zero at theta = pi
    assert np.abs(g_cplx[4][:, 1:]).min() > 0


def test_phase_of_the_first_step_does_not_matter():
    """theta_0 rotates h_{-1} = 0: its gradient is exactly zero, and changing it changes no y."""
    rng = np.random.default_rng(7)
    args = list(_args(rng, lead=(2,), T=5, D=3, Dv=2))
    cot = rng.standard_normal(args[2].shape)
    y, grads = _grads(F.gateloop, args, cot)
    assert not np.any(grads[4][:, 0])
    args[4] = args[4].copy()
    args[4][:, 0] += 1.0
    np.testing.assert_array_equal(F.gateloop(*map(tinyllm.tensor, args)).data, y)


def test_bad_theta_is_named():
    q = tinyllm.randn(2, 5, 3)
    with pytest.raises(ValueError, match="gateloop: theta of shape"):
        F.gateloop(q, q, q, q, tinyllm.randn(2, 5, 2))
    with pytest.raises(TypeError, match="gateloop: q, k, v, a and theta must share one dtype"):
        F.gateloop(q, q, q, q, q.to("float64"))
    with pytest.raises(TypeError, match="gateloop: theta"):
        F.gateloop(q, q, q, q, tinyllm.tensor(np.zeros((2, 5, 3), np.int64)))
