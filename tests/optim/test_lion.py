"""Lion against its closed-form first step, an invariant (|step| = lr per coordinate), an
independent NumPy transcription of the paper's Algorithm 2, and lion-pytorch when installed."""

import numpy as np
import pytest

import tinyllm
from tinyllm.optim import Lion


def _fit(opt_cls, p0, grads, **kwargs):
    p = tinyllm.nn.Parameter(p0.copy())
    opt = opt_cls([p], **kwargs)
    out = []
    for g in grads:
        p.grad = tinyllm.tensor(g.copy())
        opt.step()
        out.append(p.data.copy())
    return out, opt, p


def lion_paper(p, grads, lr, b1, b2, wd):
    """Chen et al. 2023, Algorithm 2 (decoupled decay applied to the old p, as lion-pytorch)."""
    m = np.zeros_like(p)
    out = []
    for g in grads:
        update = np.sign(b1 * m + (1 - b1) * g) + wd * p
        p = p - lr * update
        m = b2 * m + (1 - b2) * g
        out.append(p)
    return out


def test_lion_first_step_closed_form():
    """m_0 = 0, so c = (1 - b1) g and the first step is p - lr sign(g) - lr wd p."""
    rng = np.random.default_rng(0)
    p0, g = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    (p1,), _, _ = _fit(Lion, p0, [g], lr=0.01, betas=(0.9, 0.99), weight_decay=0.3)
    # float64, two roundings of values of size ~1: a few ulps
    np.testing.assert_allclose(p1, p0 - 0.01 * np.sign(g) - 0.01 * 0.3 * p0, rtol=0, atol=1e-15)


def test_lion_every_coordinate_moves_by_exactly_lr_without_decay():
    """|p_{t+1} - p_t| = lr for every coordinate whose c is non-zero (the sign update)."""
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal(40)
    grads = [rng.standard_normal(40) for _ in range(6)]
    traj, _, _ = _fit(Lion, p0, grads, lr=0.125, betas=(0.8, 0.95))
    prev = p0
    for p in traj:
        # lr = 2^-3 and |p| < 8: p - lr is exact up to one rounding of p's last bit
        np.testing.assert_allclose(np.abs(p - prev), 0.125, rtol=0, atol=4e-15)
        prev = p


def test_lion_sign_of_zero_leaves_parameter_unchanged():
    p0 = np.array([1.0, -2.0, 3.0])
    g = np.array([0.0, 1.0, 0.0])
    (p1,), _, _ = _fit(Lion, p0, [g], lr=0.1)
    np.testing.assert_array_equal(p1, [1.0, -2.1, 3.0])


@pytest.mark.parametrize("wd", [0.0, 0.1])
@pytest.mark.parametrize("maximize", [False, True])
def test_lion_matches_paper_transcription(wd, maximize):
    rng = np.random.default_rng(2)
    p0 = rng.standard_normal((4, 3))
    grads = [rng.standard_normal((4, 3)) for _ in range(10)]
    got, _, _ = _fit(Lion, p0, grads, lr=3e-3, betas=(0.9, 0.99), weight_decay=wd,
                     maximize=maximize)  # fmt: skip
    want = lion_paper(p0, [-g if maximize else g for g in grads], 3e-3, 0.9, 0.99, wd)
    for a, b in zip(got, want):
        # float64; the two orders of the decay (p*(1-lr wd) vs p - lr wd p) differ by ulps
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


def test_lion_float32_keeps_dtype():
    rng = np.random.default_rng(3)
    p0 = rng.standard_normal(7).astype(np.float32)
    (p1,), opt, p = _fit(Lion, p0, [rng.standard_normal(7).astype(np.float32)], lr=1e-2,
                         weight_decay=0.1)  # fmt: skip
    assert p1.dtype == np.float32 and opt.state[id(p)]["exp_avg"].dtype == np.float32


def test_lion_state_dict_round_trip_continues_identically():
    rng = np.random.default_rng(4)
    p0 = rng.standard_normal(5)
    grads = [rng.standard_normal(5) for _ in range(4)]
    _, opt_a, a = _fit(Lion, p0, grads[:2], lr=0.01, weight_decay=0.05)
    b = tinyllm.nn.Parameter(a.data.copy())
    opt_b = Lion([b], lr=0.5)
    opt_b.load_state_dict(opt_a.state_dict())
    for g in grads[2:]:
        for p, opt in ((a, opt_a), (b, opt_b)):
            p.grad = tinyllm.tensor(g.copy())
            opt.step()
    np.testing.assert_array_equal(a.data, b.data)


def test_lion_argument_errors():
    p = tinyllm.nn.Parameter(np.zeros(3))
    with pytest.raises(ValueError, match="Lion: invalid learning rate"):
        Lion([p], lr=-1)
    with pytest.raises(ValueError, match="Lion: invalid betas"):
        Lion([p], betas=(1.5, 0.9))
    with pytest.raises(ValueError, match="Lion: invalid weight_decay"):
        Lion([p], weight_decay=-0.1)


def test_lion_matches_lion_pytorch_when_installed():
    """Optional oracle: lucidrains' lion-pytorch (skipped where it is absent)."""
    torch = pytest.importorskip("torch")
    lion_pytorch = pytest.importorskip("lion_pytorch")
    rng = np.random.default_rng(5)
    p0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(10)]
    tp = torch.nn.Parameter(torch.tensor(p0))
    topt = lion_pytorch.Lion([tp], lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    want = []
    for g in grads:
        tp.grad = torch.tensor(g)
        topt.step()
        want.append(tp.detach().numpy().copy())
    got, _, _ = _fit(Lion, p0, grads, lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)  # same operations, float64
