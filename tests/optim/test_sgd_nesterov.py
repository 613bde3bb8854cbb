"""SGD with Nesterov momentum: closed form of the first two steps, and torch.optim.SGD step by
step where torch is installed (tinyllm's sgd.py already had nesterov; this adds the oracle)."""

import numpy as np
import pytest

import tinyllm
from tinyllm.optim import SGD


def _fit(p0, grads, **kwargs):
    p = tinyllm.nn.Parameter(p0.copy())
    opt = SGD([p], **kwargs)
    out = []
    for g in grads:
        p.grad = tinyllm.tensor(g.copy())
        opt.step()
        out.append(p.data.copy())
    return out


def test_nesterov_first_two_steps_closed_form():
    """b1 = g1, step g1 + mu g1; b2 = mu g1 + g2, step g2 + mu b2 (no decay, no dampening)."""
    p0 = np.array([1.0, -2.0])
    g1, g2 = np.array([0.5, 0.25]), np.array([-1.0, 2.0])
    p1, p2 = _fit(p0, [g1, g2], lr=0.5, momentum=0.5, nesterov=True)
    np.testing.assert_array_equal(p1, p0 - 0.5 * (1.5 * g1))  # dyadic values: exact
    np.testing.assert_array_equal(p2, p1 - 0.5 * (g2 + 0.5 * (0.5 * g1 + g2)))


def test_nesterov_requires_momentum_and_no_dampening():
    p = tinyllm.nn.Parameter(np.zeros(2))
    with pytest.raises(ValueError, match="nesterov momentum requires momentum > 0"):
        SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="dampening = 0"):
        SGD([p], lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)


@pytest.mark.parametrize("maximize", [False, True])
def test_nesterov_matches_torch(maximize):
    """Optional oracle: torch.optim.SGD(nesterov=True), float64, 10 steps."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(10)]
    kw = dict(lr=0.05, momentum=0.9, weight_decay=0.01, nesterov=True, maximize=maximize)
    tp = torch.nn.Parameter(torch.tensor(p0))
    topt = torch.optim.SGD([tp], **kw)
    got = _fit(p0, grads, **kw)
    for g, mine in zip(grads, got):
        tp.grad = torch.tensor(g)
        topt.step()
        # float64; torch fuses some multiply-adds (alpha arguments): ulps per step
        np.testing.assert_allclose(mine, tp.detach().numpy(), rtol=1e-13, atol=1e-15)
