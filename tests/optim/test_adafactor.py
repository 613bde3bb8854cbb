"""Adafactor against closed forms (constant and rank-1 gradients, where the factored second
moment is exact), state-dict round trips with factored state, and torch.optim.Adafactor step
by step where torch is installed."""

import math

import numpy as np
import pytest

import tinyllm
from tinyllm.optim import Adafactor


def _fit(p0, grads, **kwargs):
    p = tinyllm.nn.Parameter(p0.copy())
    opt = Adafactor([p], **kwargs)
    out = []
    for g in grads:
        p.grad = tinyllm.tensor(g.copy())
        opt.step()
        out.append(p.data.copy())
    return out, opt, p


def _rms(x):
    return math.sqrt(float((x**2).mean()))


def sign_descent(p, g, steps, lr, eps2=1e-3, wd=0.0):
    """When V = g^2 exactly, U = sign(g) and RMS(U) = 1 <= d, so each step is
    p <- p (1 - lr wd) - max(eps2, RMS(p)) min(lr, 1/sqrt(t)) sign(g)."""
    out = []
    for t in range(1, steps + 1):
        alpha = max(eps2, _rms(p)) * min(lr, 1 / math.sqrt(t))
        p = p * (1 - lr * wd) - alpha * np.sign(g)
        out.append(p)
    return out


def test_adafactor_vector_constant_gradient_is_scaled_sign_descent():
    """v_t = g^2 for every t under a constant g (v lerps towards g^2 from g^2)."""
    rng = np.random.default_rng(0)
    p0, g = rng.standard_normal(8), rng.standard_normal(8)
    got, _, _ = _fit(p0, [g] * 6, lr=0.5)  # lr > 1/sqrt(t) for t >= 5: both branches of rho
    for a, b in zip(got, sign_descent(p0, g, 6, 0.5)):
        np.testing.assert_allclose(a, b, rtol=1e-13)  # float64, sqrt/divide roundings only


def test_adafactor_rank_one_gradient_factored_moment_is_exact():
    """For g = a b^T, g^2 = a^2 (b^2)^T is rank 1: r c / mean(r) = g^2 exactly, so the
    factored update equals sign descent too (leading batch axis included)."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 3, 1)), rng.standard_normal((2, 1, 4))
    g = a * b
    p0 = rng.standard_normal((2, 3, 4))
    got, opt, p = _fit(p0, [g] * 4, lr=0.01, weight_decay=0.2)
    assert opt.state[id(p)]["row_var"].shape == (2, 3, 1)
    assert opt.state[id(p)]["col_var"].shape == (2, 1, 4)
    for x, y in zip(got, sign_descent(p0, g, 4, 0.01, wd=0.2)):
        np.testing.assert_allclose(x, y, rtol=1e-12)  # float64, the rank-1 fit rounds a little


def test_adafactor_zero_parameter_steps_by_eps2():
    """RMS(p) = 0, so the first step size is eps2 * min(lr, 1) along -sign(g) (g is rank 1,
    so V = g^2 and U = sign(g))."""
    g = np.array([[2.0, -3.0], [1.0, -1.5]])
    (p1,), _, _ = _fit(np.zeros((2, 2)), [g], lr=0.01, eps=(None, 1e-3))
    np.testing.assert_allclose(p1, -1e-3 * 0.01 * np.sign(g), rtol=1e-14)


def test_adafactor_update_clipping_bounds_rms_of_the_step():
    """With d = 1, every step has RMS(p_{t+1} - p_t) <= alpha (= RMS(p) rho_t here)."""
    rng = np.random.default_rng(2)
    p0 = rng.standard_normal((5, 6))
    grads = [rng.standard_normal((5, 6)) * (10.0 if t == 3 else 1.0) for t in range(6)]
    traj, _, _ = _fit(p0, grads, lr=0.05)
    prev = p0
    for t, p in enumerate(traj, start=1):
        alpha = max(1e-3, _rms(prev)) * min(0.05, 1 / math.sqrt(t))
        assert _rms(p - prev) <= alpha * (1 + 1e-12)
        prev = p


def test_adafactor_state_dict_round_trip_with_factored_state():
    rng = np.random.default_rng(3)
    p0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(5)]
    _, opt_a, a = _fit(p0, grads[:3], lr=0.02)
    b = tinyllm.nn.Parameter(a.data.copy())
    opt_b = Adafactor([b])
    opt_b.load_state_dict(opt_a.state_dict())
    for g in grads[3:]:
        for p, opt in ((a, opt_a), (b, opt_b)):
            p.grad = tinyllm.tensor(g.copy())
            opt.step()
    np.testing.assert_array_equal(a.data, b.data)
    bad = opt_a.state_dict()
    bad["state"][0]["row_var"] = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"row_var.*shape \(3, 4\), expected \(3, 1\)"):
        opt_b.load_state_dict(bad)


def test_adafactor_argument_errors():
    p = tinyllm.nn.Parameter(np.zeros(3))
    with pytest.raises(ValueError, match="Adafactor: learning rate"):
        Adafactor([p], lr=-1)
    with pytest.raises(ValueError, match="Adafactor: beta2_decay"):
        Adafactor([p], beta2_decay=0.5)
    with pytest.raises(ValueError, match="Adafactor: clipping threshold d"):
        Adafactor([p], d=0.5)
    with pytest.raises(ValueError, match="Adafactor: epsilon1"):
        Adafactor([p], eps=(-1.0, 1e-3))


@pytest.mark.parametrize("shape", [(), (7,), (4, 6), (2, 3, 5)])
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"lr": 0.3, "weight_decay": 0.1, "d": 2.0, "maximize": True},
     {"beta2_decay": -0.5, "eps": (1e-6, 1e-2)}],
)  # fmt: skip
def test_adafactor_matches_torch_step_by_step(shape, kwargs):
    """Optional oracle: torch.optim.Adafactor (torch 2.13), float64, 8 steps."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    p0 = rng.standard_normal(shape)
    grads = [rng.standard_normal(shape) for _ in range(8)]
    tp = torch.nn.Parameter(torch.tensor(p0))
    topt = torch.optim.Adafactor([tp], **kwargs)
    want = []
    for g in grads:
        tp.grad = torch.tensor(g)
        topt.step()
        want.append(tp.detach().numpy().copy())
    got, _, _ = _fit(p0, grads, **kwargs)
    for a, b in zip(got, want):
        # float64; torch's lerp and norm^2 orderings differ from ours by a few ulps per step
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_adafactor_float32_matches_torch_and_uses_float32_eps():
    """Optional oracle, float32: eps1 = None means finfo(float32).eps, state stays float32."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    p0 = rng.standard_normal((6, 5)).astype(np.float32)
    grads = [rng.standard_normal((6, 5)).astype(np.float32) for _ in range(6)]
    tp = torch.nn.Parameter(torch.tensor(p0))
    topt = torch.optim.Adafactor([tp], lr=0.05)
    want = []
    for g in grads:
        tp.grad = torch.tensor(g)
        topt.step()
        want.append(tp.detach().numpy().copy())
    got, opt, p = _fit(p0, grads, lr=0.05)
    assert got[-1].dtype == np.float32 and opt.state[id(p)]["row_var"].dtype == np.float32
    for a, b in zip(got, want):
        # float32 (eps 1.2e-7), reductions ordered differently: 2 ulps seen, 4 allowed
        np.testing.assert_allclose(a, b, rtol=5e-7, atol=3e-7)
