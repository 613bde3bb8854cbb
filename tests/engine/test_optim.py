"""Optimizers against independent NumPy transcriptions of the published update rules."""

import math

import numpy as np
import pytest

import tinyllm
from tinyllm.optim import SGD, Adam, AdamW
from tinyllm.optim.lr_scheduler import LambdaLR, warmup_cosine


def _quadratic_grads(p, target):
    return 2 * (p - target)


def _run(opt_cls, steps=5, **kwargs):
    rng = np.random.default_rng(0)
    p0, target = rng.standard_normal(6), rng.standard_normal(6)
    p = tinyllm.nn.Parameter(p0.copy())
    opt = opt_cls([p], **kwargs)
    for _ in range(steps):
        p.grad = tinyllm.tensor(_quadratic_grads(p.data, target))
        opt.step()
    return p0, target, p.data


def adamw_reference(p, target, steps, lr, b1, b2, eps, wd, decoupled, amsgrad=False):
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    vmax = np.zeros_like(p)
    for t in range(1, steps + 1):
        g = _quadratic_grads(p, target)
        if decoupled:
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vhat = v
        if amsgrad:
            vmax = np.maximum(vmax, v)
            vhat = vmax
        mhat = m / (1 - b1**t)
        p = p - lr * mhat / (np.sqrt(vhat) / math.sqrt(1 - b2**t) + eps)
    return p


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adamw_matches_reference(amsgrad):
    p0, target, got = _run(AdamW, steps=7, lr=0.1, betas=(0.8, 0.95), weight_decay=0.1,
                           amsgrad=amsgrad)  # fmt: skip
    want = adamw_reference(p0, target, 7, 0.1, 0.8, 0.95, 1e-8, 0.1, True, amsgrad)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_adam_uses_coupled_weight_decay():
    p0, target, got = _run(Adam, steps=4, lr=0.05, weight_decay=0.2)
    want = adamw_reference(p0, target, 4, 0.05, 0.9, 0.999, 1e-8, 0.2, False)
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_matches_reference(nesterov):
    p0, target, got = _run(SGD, steps=5, lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=nesterov)
    p, buf = p0.copy(), None
    for _ in range(5):
        g = _quadratic_grads(p, target) + 0.01 * p
        buf = g.copy() if buf is None else 0.9 * buf + g
        p = p - 0.1 * (g + 0.9 * buf if nesterov else buf)
    np.testing.assert_allclose(got, p, rtol=1e-12)


def test_optimizer_state_dict_round_trip_continues_identically():
    rng = np.random.default_rng(1)
    target = rng.standard_normal(4)
    a = tinyllm.nn.Parameter(rng.standard_normal(4))
    b = tinyllm.nn.Parameter(a.data.copy())
    opt_a = AdamW([a], lr=0.1)
    for _ in range(3):
        a.grad = tinyllm.tensor(_quadratic_grads(a.data, target))
        opt_a.step()
    b.data = a.data.copy()
    opt_b = AdamW([b], lr=0.5)
    opt_b.load_state_dict(opt_a.state_dict())
    assert opt_b.param_groups[0]["lr"] == 0.1
    for p, opt in ((a, opt_a), (b, opt_b)):
        p.grad = tinyllm.tensor(_quadratic_grads(p.data, target))
        opt.step()
    np.testing.assert_array_equal(a.data, b.data)


def test_optimizer_load_state_dict_refuses_mismatch_without_changes():
    p = tinyllm.nn.Parameter(np.zeros(3))
    opt = AdamW([p])
    bad = {"state": {0: {"step": 1, "exp_avg": np.zeros(4), "exp_avg_sq": np.zeros(4)}},
           "param_groups": opt.state_dict()["param_groups"]}  # fmt: skip
    with pytest.raises(ValueError, match=r"exp_avg.*shape \(4,\)"):
        opt.load_state_dict(bad)
    assert opt.state == {}


def test_optimizer_argument_errors():
    p = tinyllm.nn.Parameter(np.zeros(3))
    with pytest.raises(ValueError, match="learning rate"):
        SGD([p], lr=-1)
    with pytest.raises(ValueError, match="betas"):
        AdamW([p], betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="empty parameter list"):
        AdamW([])


def test_warmup_cosine_schedule_closed_form():
    p = tinyllm.nn.Parameter(np.zeros(1))
    opt = SGD([p], lr=1.0)
    sched = LambdaLR(opt, warmup_cosine(10, 110, min_ratio=0.1))
    lrs = []
    for _ in range(111):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[110] == pytest.approx(0.1)


def test_clip_grad_norm_returns_pre_clip_norm_and_scales():
    a = tinyllm.nn.Parameter(np.zeros(2))
    b = tinyllm.nn.Parameter(np.zeros(2))
    a.grad, b.grad = tinyllm.tensor(np.array([3.0, 0.0])), tinyllm.tensor(np.array([0.0, 4.0]))
    norm = tinyllm.nn.utils.clip_grad_norm_([a, b], max_norm=1.0)
    assert norm.item() == pytest.approx(5.0)
    total = math.sqrt((a.grad.numpy() ** 2).sum() + (b.grad.numpy() ** 2).sum())
    assert total == pytest.approx(1.0, rel=1e-5)
    norm = tinyllm.nn.utils.clip_grad_norm_([a, b], max_norm=10.0)
    assert norm.item() == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(a.grad.numpy(), [0.6, 0.0], rtol=1e-5)
