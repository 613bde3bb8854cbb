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


@pytest.mark.parametrize("maximize", [False, True])
def test_adamw_step_is_one_multi_tensor_update_per_group_bit_identical(monkeypatch, maximize):
    """AdamW.step calls kernels.adamw_step_multi once per group (and per step count within
    it: a parameter whose grad was None has fallen behind), with the group's hyperparameters,
    and lands on exactly what one kernels.adamw_step per parameter gives."""
    from tinyllm import kernels

    calls = []
    multi = kernels.adamw_step_multi

    def spy(params, grads, exp_avgs, exp_avg_sqs, **hyper):
        calls.append((len(params), hyper))
        multi(params, grads, exp_avgs, exp_avg_sqs, **hyper)

    monkeypatch.setattr(kernels, "adamw_step_multi", spy)
    rng = np.random.default_rng(0)
    shapes = [(5, 7), (30,), (3, 4, 2), (6,)]
    dtypes = [np.float32, np.float32, np.float64, np.float32]
    init = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]
    ps = [tinyllm.nn.Parameter(a.copy()) for a in init]
    groups = [{"params": ps[:2], "lr": 0.1, "weight_decay": 0.2},
              {"params": ps[2:], "betas": (0.8, 0.9), "eps": 1e-6}]  # fmt: skip
    hypers = [dict(lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.2),
              dict(lr=0.01, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.01)]  # fmt: skip
    opt = AdamW(groups, lr=0.01, maximize=maximize)
    want = [a.copy() for a in init]
    moments = [(np.zeros_like(a), np.zeros_like(a)) for a in init]
    steps = [0] * 4
    skipped = {(1, 1), (2, 3)}  # (step, parameter) without a gradient
    # per call: (parameters updated, group); a batch has one step count and one dtype
    batches = [[(2, 0), (1, 1), (1, 1)], [(1, 0), (1, 1), (1, 1)], [(1, 0), (1, 0), (1, 1)],
               [(1, 0), (1, 0), (1, 1), (1, 1)]]  # fmt: skip
    for k in range(4):
        grads = [None if (k, i) in skipped else rng.standard_normal(a.shape).astype(a.dtype)
                 for i, a in enumerate(init)]  # fmt: skip
        for p, g in zip(ps, grads):
            p.grad = None if g is None else tinyllm.tensor(g)
        calls.clear()
        opt.step()
        assert [n for n, _ in calls] == [n for n, _ in batches[k]]
        for (_, hyper), (_, group) in zip(calls, batches[k]):
            assert {key: hyper[key] for key in hypers[group]} == hypers[group]
        for i, g in enumerate(grads):
            if g is not None:
                steps[i] += 1
                g = -g if maximize else g
                kernels.adamw_step(want[i], g, *moments[i], step=steps[i], **hypers[i // 2])
    assert [opt.state[id(p)]["step"] for p in ps] == [4, 3, 4, 3]
    for p, w in zip(ps, want):
        assert p.data.dtype == w.dtype
        np.testing.assert_array_equal(p.data, w)


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


def _two_groups(lr0=0.5, lr1=0.02):
    a, b = tinyllm.nn.Parameter(np.zeros(1)), tinyllm.nn.Parameter(np.zeros(1))
    return SGD([{"params": [a], "lr": lr0}, {"params": [b], "lr": lr1}], lr=1.0)


def _lrs(opt, sched, epochs):
    """lr of each group at epochs 0..epochs-1 (read before each step, as a loop does)."""
    out = []
    for _ in range(epochs):
        out.append([g["lr"] for g in opt.param_groups])
        sched.step()
    return np.array(out)


def test_cosine_annealing_matches_pytorch_closed_form_per_group():
    """PyTorch's CosineAnnealingLR closed form, per group, continuing past T_max:
    lr_g(t) = eta_min + (base_g - eta_min)(1 + cos(pi t / T_max)) / 2. Two groups with
    different base lrs: eta_min is absolute, not scaled by group 0's lr."""
    from tinyllm.optim.lr_scheduler import CosineAnnealingLR

    T_max, eta_min, bases = 10, 0.01, (0.5, 0.02)
    opt = _two_groups(*bases)
    got = _lrs(opt, CosineAnnealingLR(opt, T_max=T_max, eta_min=eta_min), 26)
    t = np.arange(26)[:, None]
    want = eta_min + (np.array(bases) - eta_min) * (1 + np.cos(np.pi * t / T_max)) / 2
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    assert got[10, 1] == pytest.approx(eta_min) and got[20, 0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="T_max must be positive, got 0"):
        CosineAnnealingLR(opt, T_max=0)


def test_lambda_lr_matches_pytorch_closed_form_per_group_and_round_trips():
    """LambdaLR: lr_g(t) = base_g * lambda_g(t), one lambda or one per group."""
    opt = _two_groups()
    fns = [lambda e: 0.9**e, lambda e: 1.0 / (1 + e)]
    sched = LambdaLR(opt, fns)
    got = _lrs(opt, sched, 7)
    t = np.arange(7)
    want = np.stack([0.5 * 0.9**t, 0.02 / (1 + t)], axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    state = sched.state_dict()
    opt2 = _two_groups()
    sched2 = LambdaLR(opt2, fns)
    sched2.load_state_dict(state)
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
    with pytest.raises(ValueError, match="expected 2 lr_lambdas"):
        LambdaLR(_two_groups(), fns[:1])


def test_warmup_cosine_closed_form_every_step():
    """factor(t) = (t + 1) / W for t < W, then m + (1 - m)(1 + cos(pi s)) / 2,
    s = (t - W) / (N - W) clipped to [0, 1] (tinyllm's own schedule; no PyTorch twin)."""
    W, N, m = 4, 20, 0.1
    f = warmup_cosine(W, N, m)
    for t in range(30):
        s = min(max((t - W) / (N - W), 0.0), 1.0)
        want = (t + 1) / W if t < W else m + (1 - m) * (1 + math.cos(math.pi * s)) / 2
        assert f(t) == pytest.approx(want, rel=1e-12)


def test_schedulers_match_torch_when_installed():
    """Optional oracle: PyTorch itself (skipped where torch is absent)."""
    torch = pytest.importorskip("torch")
    from tinyllm.optim.lr_scheduler import CosineAnnealingLR

    bases, T_max, eta_min = (0.5, 0.02), 10, 0.01
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in bases]
    topt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, bases)], lr=1.0)
    tsched = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=T_max, eta_min=eta_min)
    want = []
    for _ in range(26):
        want.append([g["lr"] for g in topt.param_groups])
        topt.step()
        tsched.step()
    opt = _two_groups(*bases)
    got = _lrs(opt, CosineAnnealingLR(opt, T_max=T_max, eta_min=eta_min), 26)
    # torch's default is the recursive form: equal to the closed form within rounding
    np.testing.assert_allclose(got, np.array(want), rtol=1e-9, atol=1e-12)
