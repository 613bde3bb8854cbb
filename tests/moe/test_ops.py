"""Closed forms and argument checks of the MoE ops (the registry gradchecks them)."""

import math

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
from tinyllm.functional.moe import expert_permutation


def t(a):
    return tinyllm.tensor(np.asarray(a))


@pytest.mark.parametrize("E", [2, 4, 8])
def test_switch_loss_is_one_when_balanced(E):
    # every expert gets N/E tokens and every token spreads its probability evenly
    N = 4 * E
    probs = np.full((N, E), 1 / E)
    idx = np.arange(N)[:, None] % E
    assert float(F.switch_load_balancing_loss(t(probs), t(idx)).data) == pytest.approx(
        1.0, abs=1e-12
    )


@pytest.mark.parametrize("E", [2, 4, 8])
def test_switch_loss_is_E_when_collapsed(E):
    N = 10
    probs = np.zeros((N, E))
    probs[:, 3 % E] = 1.0
    idx = np.full((N, 1), 3 % E)
    assert float(F.switch_load_balancing_loss(t(probs), t(idx)).data) == pytest.approx(E, abs=1e-12)


def test_switch_loss_top2_balanced_is_one_and_ignores_dropped_slots():
    E, N = 4, 8
    idx = np.stack([np.arange(N) % E, (np.arange(N) + 1) % E], axis=1)
    probs = np.full((N, E), 1 / E)
    assert float(F.switch_load_balancing_loss(t(probs), t(idx)).data) == pytest.approx(1.0)
    dropped = idx.copy()
    dropped[0, 1] = -1  # f is over the kept slots: one expert now has 3/15 of them
    f = np.bincount(dropped[dropped >= 0], minlength=E) / 15
    got = float(F.switch_load_balancing_loss(t(probs), t(dropped)).data)
    assert got == pytest.approx(E * np.sum(f / E))


@pytest.mark.parametrize("E", [1, 2, 8, 64])
def test_z_loss_of_zero_logits_is_log_E_squared(E):
    assert float(F.router_z_loss(tinyllm.zeros(5, E, dtype="float64")).data) == pytest.approx(
        math.log(E) ** 2, abs=1e-12
    )


def test_z_loss_is_shift_sensitive_by_the_closed_form():
    # lse(l + c) = lse(l) + c: the z-loss of zeros shifted by c is (log E + c)^2
    E, c = 4, 1.5
    got = float(F.router_z_loss(tinyllm.tensor(np.full((3, E), c))).data)
    assert got == pytest.approx((math.log(E) + c) ** 2, abs=1e-12)


def test_dispatch_then_combine_with_unit_weights_sums_the_copies():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3))
    idx = np.array([[0, 2], [1, 2], [2, 0], [1, -1], [0, 1]])
    order, counts = expert_permutation(idx, 3)
    assert counts.tolist() == [3, 3, 3]
    # sorted by expert, token order within an expert
    assert (idx.reshape(-1)[order]).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    ti = order // 2
    assert ti.tolist() == [0, 2, 4, 1, 3, 4, 0, 1, 2]
    rows = F.moe_dispatch(t(x), t(ti))
    out = F.moe_combine(rows, tinyllm.ones(len(ti), dtype="float64"), t(ti), 5)
    kept = (idx >= 0).sum(axis=1)
    np.testing.assert_allclose(out.data, x * kept[:, None], rtol=0, atol=1e-15)


def test_errors_name_the_op_argument_and_shapes():
    x = tinyllm.randn(4, 3)
    with pytest.raises(ValueError, match=r"moe_dispatch: x must be \[N, C\], got \(4, 3, 1\)"):
        F.moe_dispatch(x.reshape(4, 3, 1), t([0]))
    with pytest.raises(IndexError, match=r"moe_dispatch: token_index values must lie in \[0, 4\)"):
        F.moe_dispatch(x, t([4]))
    with pytest.raises(TypeError, match="moe_dispatch: token_index must hold integers"):
        F.moe_dispatch(x, tinyllm.tensor([0.0]))
    with pytest.raises(ValueError, match=r"moe_combine: y must be \[M, C\] and weights \[M\]"):
        F.moe_combine(x, tinyllm.ones(3), t([0, 0, 0, 0]), 2)
    with pytest.raises(ValueError, match=r"switch_load_balancing_loss: expert_index \(3, 1\)"):
        F.switch_load_balancing_loss(tinyllm.ones(4, 2), t([[0], [1], [0]]))
    with pytest.raises(IndexError, match="switch_load_balancing_loss: expert_index values"):
        F.switch_load_balancing_loss(tinyllm.ones(2, 2), t([[0], [2]]))
    with pytest.raises(ValueError, match=r"router_z_loss: router_logits must be a non-empty"):
        F.router_z_loss(tinyllm.ones(3))
