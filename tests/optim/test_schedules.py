"""Schedules: PyTorch-named schedulers against their closed forms and torch (optional oracle);
the warmup multipliers of tinyllm.optim.schedules against closed-form anchor values and, for
their decay phases, against torch's LinearLR / CosineAnnealingLR."""

import math

import numpy as np
import pytest

import tinyllm
from tinyllm.optim import SGD
from tinyllm.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    LambdaLR,
    LinearLR,
    SequentialLR,
)
from tinyllm.optim.schedules import (
    cosine_with_warmup,
    inverse_sqrt,
    linear_with_warmup,
    warmup_stable_decay,
)

BASES = (0.5, 0.02)


def _opt(bases=BASES):
    ps = [tinyllm.nn.Parameter(np.zeros(1)) for _ in bases]
    return SGD([{"params": [p], "lr": lr} for p, lr in zip(ps, bases)], lr=1.0)


def _lrs(opt, sched, epochs):
    out = []
    for _ in range(epochs):
        out.append([g["lr"] for g in opt.param_groups])
        sched.step()
    return np.array(out)


def test_linear_lr_closed_form_per_group():
    opt = _opt()
    got = _lrs(opt, LinearLR(opt, start_factor=0.1, end_factor=0.6, total_iters=8), 14)
    t = np.minimum(np.arange(14), 8)[:, None]
    np.testing.assert_allclose(got, np.array(BASES) * (0.1 + 0.5 * t / 8), rtol=1e-14)


def test_constant_lr_closed_form():
    opt = _opt()
    got = _lrs(opt, ConstantLR(opt, factor=0.25, total_iters=3), 6)
    want = np.array(BASES) * np.array([0.25] * 3 + [1.0] * 3)[:, None]
    np.testing.assert_allclose(got, want, rtol=1e-15)


def test_sequential_lr_is_warmup_then_cosine_closed_form():
    """Each child restarts at local epoch 0 at its milestone, against the group's base lr."""
    W, T, eta = 5, 25, 0.001
    opt = _opt()
    sched = SequentialLR(opt, [LinearLR(opt, 0.2, total_iters=W),
                               CosineAnnealingLR(opt, T_max=T - W, eta_min=eta)], [W])  # fmt: skip
    got = _lrs(opt, sched, T + 3)
    b = np.array(BASES)
    for t in range(T + 3):
        if t < W:
            want = b * (0.2 + 0.8 * t / W)
        else:
            want = eta + (b - eta) * (1 + math.cos(math.pi * (t - W) / (T - W))) / 2
        np.testing.assert_allclose(got[t], want, rtol=1e-13)


def test_sequential_lr_state_dict_round_trip_and_errors():
    def make(opt):
        return SequentialLR(opt, [ConstantLR(opt, 0.5, total_iters=2),
                                  LambdaLR(opt, lambda e: 0.9**e)], [3])  # fmt: skip

    opt_a = _opt()
    a = make(opt_a)
    for _ in range(5):
        a.step()
    opt_b = _opt()
    b = make(opt_b)
    b.load_state_dict(a.state_dict())
    assert [g["lr"] for g in opt_b.param_groups] == [g["lr"] for g in opt_a.param_groups]
    np.testing.assert_array_equal(_lrs(opt_a, a, 4), _lrs(opt_b, b, 4))
    opt = _opt()
    with pytest.raises(ValueError, match="one milestone fewer"):
        SequentialLR(opt, [ConstantLR(opt), ConstantLR(opt)], [1, 2])
    with pytest.raises(ValueError, match="another optimizer"):
        SequentialLR(opt, [ConstantLR(_opt())], [])
    with pytest.raises(ValueError, match="LinearLR: start_factor"):
        LinearLR(opt, start_factor=0.0)


def _torch_lrs(torch, make, epochs, bases=BASES):
    ps = [torch.nn.Parameter(torch.zeros(1)) for _ in bases]
    topt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(ps, bases)], lr=1.0)
    sched = make(torch.optim.lr_scheduler, topt)
    out = []
    for _ in range(epochs):
        out.append([g["lr"] for g in topt.param_groups])
        topt.step()
        sched.step()
    return np.array(out)


@pytest.mark.parametrize(
    "make",
    [
        lambda m, o: m.LinearLR(o, start_factor=0.1, end_factor=0.6, total_iters=8),
        lambda m, o: m.ConstantLR(o, factor=0.25, total_iters=3),
        lambda m, o: m.SequentialLR(o, [m.LinearLR(o, 0.2, total_iters=5),
                                        m.CosineAnnealingLR(o, T_max=20, eta_min=0.001)], [5]),
        lambda m, o: m.SequentialLR(o, [m.ConstantLR(o, 0.5, total_iters=2),
                                        m.LambdaLR(o, lambda e: 0.9**e),
                                        m.LinearLR(o, 1.0, 0.1, total_iters=4)], [3, 9]),
    ],
    ids=["linear", "constant", "warmup_cosine", "constant_lambda_linear"],
)  # fmt: skip
def test_schedulers_match_torch_step_by_step(make):
    """Optional oracle: torch.optim.lr_scheduler; the same constructor runs on both modules."""
    torch = pytest.importorskip("torch")
    from tinyllm.optim import lr_scheduler

    want = _torch_lrs(torch, make, 30)
    opt = _opt()
    got = _lrs(opt, make(lr_scheduler, opt), 30)
    # torch updates recursively (lr_t from lr_{t-1}): equal to the closed form within rounding
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------- warmup multipliers


def test_linear_with_warmup_anchor_values():
    f = linear_with_warmup(4, 12)
    assert [f(s) for s in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert f(8) == 0.5 and f(12) == 0.0 and f(20) == 0.0


def test_cosine_with_warmup_anchor_values():
    f = cosine_with_warmup(10, 110)
    assert f(0) == 0.0 and f(5) == 0.5 and f(10) == 1.0
    assert f(60) == pytest.approx(0.5, abs=1e-15) and f(110) == pytest.approx(0.0, abs=1e-15)
    g = cosine_with_warmup(10, 110, min_lr_ratio=0.1)
    assert g(60) == pytest.approx(0.55, rel=1e-15) and g(110) == pytest.approx(0.1, rel=1e-15)


def test_inverse_sqrt_anchor_values():
    f = inverse_sqrt(8)  # tau = W = 8
    assert f(0) == 0.0 and f(4) == 0.5 and f(8) == 1.0
    assert f(8 + 3 * 8) == pytest.approx(0.5, rel=1e-15)
    assert f(8 + 15 * 8) == pytest.approx(0.25, rel=1e-15)
    g = inverse_sqrt(0, timescale=100)
    assert g(0) == 1.0 and g(300) == pytest.approx(0.5, rel=1e-15)


@pytest.mark.parametrize(
    "decay_type, quarter",
    [("linear", 0.75), ("cosine", (1 + math.cos(math.pi / 4)) / 2), ("1-sqrt", 0.5)],
)
def test_warmup_stable_decay_phases(decay_type, quarter):
    W, S, D, m = 4, 10, 8, 0.1
    f = warmup_stable_decay(W, S, D, min_lr_ratio=m, decay_type=decay_type)
    assert f(0) == pytest.approx(m) and f(2) == pytest.approx(m + (1 - m) / 2)
    assert all(f(s) == 1.0 for s in range(W, W + S))  # the stable plateau is exactly the peak
    assert f(W + S) == pytest.approx(1.0)  # q = 0: the decay starts at the peak
    assert f(W + S + 2) == pytest.approx(m + (1 - m) * quarter, rel=1e-14)  # q = 1/4
    assert f(W + S + D) == m and f(W + S + D + 50) == m
    vals = [f(s) for s in range(W, W + S + D + 1)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))  # non-increasing after warmup


def test_multiplier_argument_errors():
    with pytest.raises(ValueError, match="linear_with_warmup: num_warmup_steps"):
        linear_with_warmup(-1, 10)
    with pytest.raises(ValueError, match="warmup_stable_decay: decay_type"):
        warmup_stable_decay(1, 1, 1, decay_type="exp")
    with pytest.raises(ValueError, match="cosine_with_warmup: min_lr_ratio"):
        cosine_with_warmup(1, 10, min_lr_ratio=2.0)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_warmup_multipliers_decay_phase_matches_torch(kind):
    """Optional oracle: after the warmup, linear_with_warmup is torch's LinearLR(1, 0, T - W)
    and cosine_with_warmup(min m) is CosineAnnealingLR(T - W, eta_min = m base), step by step."""
    torch = pytest.importorskip("torch")
    W, T, m = 6, 26, 0.2
    if kind == "linear":
        f = linear_with_warmup(W, T)
        want = _torch_lrs(torch, lambda s, o: s.LinearLR(o, 1.0, 0.0, total_iters=T - W), T - W + 1,
                          bases=(1.0,))  # fmt: skip
    else:
        f = cosine_with_warmup(W, T, min_lr_ratio=m)
        want = _torch_lrs(torch, lambda s, o: s.CosineAnnealingLR(o, T - W, eta_min=m),
                          T - W + 1, bases=(1.0,))  # fmt: skip
    got = np.array([[f(W + t)] for t in range(T - W + 1)])
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)  # torch's recursive rounding
