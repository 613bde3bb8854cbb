"""Closed forms and float64 gradchecks of every alignment loss."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
from tinyllm.alignment.losses import (
    bradley_terry_loss,
    dpo_loss,
    grpo_loss,
    kl_penalty,
    plackett_luce_loss,
    ppo_policy_loss,
    ppo_value_loss,
)
from tinyllm.alignment.ops import entropy_from_logits, masked_mean
from tinyllm.alignment.pipeline import sequence_logprobs


def t64(a, grad=True):
    return tinyllm.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


# ---------------------------------------------------------------- F.logsigmoid (the losses' log sigma)


def test_logsigmoid_matches_numpy_and_is_stable():
    x = np.array([-800.0, -30.0, -1.0, 0.0, 2.5, 40.0, 800.0])
    y = F.logsigmoid(t64(x, grad=False)).detach().numpy()
    expected = -np.logaddexp(0.0, -x)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=0)
    assert np.isfinite(y).all()


def test_logsigmoid_gradcheck_random_cotangent():
    rng = np.random.default_rng(0)
    x = t64(rng.normal(0, 4, size=(3, 5)))
    assert tinyllm.gradcheck(F.logsigmoid, [x])


def test_logsigmoid_backward_far_tails():
    x = t64([-200.0, 200.0])
    F.logsigmoid(x).sum().backward()
    np.testing.assert_allclose(x.grad.detach().numpy(), [1.0, 0.0], atol=1e-12)


# ---------------------------------------------------------------- DPO family


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_dpo_at_reference_is_ln2_with_gradients_minus_plus_beta_over_2(beta):
    logps = np.array([-12.3, -4.0, -30.5])
    rej = np.array([-9.1, -7.5, -2.25])
    pc, pr = t64(logps), t64(rej)
    losses, cr, rr = dpo_loss(pc, pr, t64(logps, False), t64(rej, False), beta=beta)
    np.testing.assert_allclose(losses.detach().numpy(), math.log(2), rtol=0, atol=1e-15)
    np.testing.assert_allclose(cr.detach().numpy(), 0.0, atol=1e-15)
    np.testing.assert_allclose(rr.detach().numpy(), 0.0, atol=1e-15)
    losses.sum().backward()
    np.testing.assert_allclose(pc.grad.detach().numpy(), -beta / 2, rtol=1e-14)
    np.testing.assert_allclose(pr.grad.detach().numpy(), +beta / 2, rtol=1e-14)


def test_dpo_sigmoid_formula_rewards_and_swap_symmetry():
    rng = np.random.default_rng(1)
    pc, pr, rc, rr = (rng.normal(-10, 3, 6) for _ in range(4))
    beta, eps = 0.3, 0.1
    h = (pc - rc) - (pr - rr)
    losses, cw, cl = dpo_loss(
        *(t64(a, False) for a in (pc, pr, rc, rr)), beta=beta, label_smoothing=eps
    )
    expected = (1 - eps) * np.logaddexp(0, -beta * h) + eps * np.logaddexp(0, beta * h)
    np.testing.assert_allclose(losses.detach().numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(cw.detach().numpy(), beta * (pc - rc), rtol=1e-12)
    np.testing.assert_allclose(cl.detach().numpy(), beta * (pr - rr), rtol=1e-12)
    # swapping chosen and rejected maps l(h) to l(-h)
    plain, _, _ = dpo_loss(*(t64(a, False) for a in (pc, pr, rc, rr)), beta=beta)
    swapped, _, _ = dpo_loss(*(t64(a, False) for a in (pr, pc, rr, rc)), beta=beta)
    np.testing.assert_allclose(swapped.detach().numpy(), np.logaddexp(0, beta * h), rtol=1e-12)
    np.testing.assert_allclose(plain.detach().numpy(), np.logaddexp(0, -beta * h), rtol=1e-12)


def test_ipo_loss_is_squared_distance_to_half_inverse_beta():
    rng = np.random.default_rng(2)
    pc, pr, rc, rr = (rng.normal(-5, 2, 5) for _ in range(4))
    beta = 0.25
    h = (pc - rc) - (pr - rr)
    pct = t64(pc)
    losses, _, _ = dpo_loss(pct, t64(pr), t64(rc, False), t64(rr, False), beta, "ipo")
    np.testing.assert_allclose(losses.detach().numpy(), (h - 1 / (2 * beta)) ** 2, rtol=1e-12)
    losses.sum().backward()
    np.testing.assert_allclose(pct.grad.detach().numpy(), 2 * (h - 1 / (2 * beta)), rtol=1e-12)
    # the minimiser h* = 1 / (2 beta): loss exactly 0 there
    star, _, _ = dpo_loss(t64([1 / (2 * beta)]), t64([0.0]), t64([0.0]), t64([0.0]), beta, "ipo")
    assert star.item() == 0.0


def test_hinge_and_robust_closed_forms():
    h = np.array([-3.0, 0.5, 7.0, 25.0])
    z = np.zeros_like(h)
    beta, eps = 0.2, 0.15
    hinge, _, _ = dpo_loss(
        t64(h, False), t64(z, False), t64(z, False), t64(z, False), beta, "hinge"
    )
    np.testing.assert_allclose(hinge.detach().numpy(), np.maximum(0, 1 - beta * h))
    robust, _, _ = dpo_loss(
        t64(h, False), t64(z, False), t64(z, False), t64(z, False), beta, "robust", eps
    )
    expected = ((1 - eps) * np.logaddexp(0, -beta * h) - eps * np.logaddexp(0, beta * h)) / (
        1 - 2 * eps
    )
    np.testing.assert_allclose(robust.detach().numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize(
    "loss_type,smoothing",
    [("sigmoid", 0.0), ("sigmoid", 0.2), ("robust", 0.1), ("ipo", 0.0), ("hinge", 0.0)],
)
def test_dpo_loss_gradcheck(loss_type, smoothing):
    rng = np.random.default_rng(3)
    pc, pr = t64(rng.normal(-8, 2, 7)), t64(rng.normal(-8, 2, 7))
    rc, rr = t64(rng.normal(-8, 2, 7), False), t64(rng.normal(-8, 2, 7), False)
    if loss_type == "hinge":  # keep beta * h away from the kink at 1
        h = (pc.detach().numpy() - rc.detach().numpy()) - (
            pr.detach().numpy() - rr.detach().numpy()
        )
        assert np.abs(0.1 * h - 1).min() > 1e-3

    def fn(a, b):
        return dpo_loss(a, b, rc, rr, 0.1, loss_type, smoothing)[0]

    assert tinyllm.gradcheck(fn, [pc, pr])


def test_dpo_loss_rejects_bad_arguments():
    x = t64([0.0], False)
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(x, x, x, x, loss_type="nope")
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(x, x, x, x, label_smoothing=0.5)


# ---------------------------------------------------------------- Bradley-Terry, Plackett-Luce


def test_bradley_terry_at_equal_rewards_and_gradcheck():
    r = t64([1.5, -2.0, 0.25])
    s = t64([1.5, -2.0, 0.25])
    loss = bradley_terry_loss(r, s)
    assert abs(loss.item() - math.log(2)) < 1e-15
    loss.backward()
    np.testing.assert_allclose(r.grad.detach().numpy(), -0.5 / 3, rtol=1e-14)
    rng = np.random.default_rng(4)
    a, b = t64(rng.normal(size=6)), t64(rng.normal(size=6))
    margin = rng.random(6)
    assert tinyllm.gradcheck(lambda x, y: bradley_terry_loss(x, y, margin, 0.01), [a, b])


def test_bradley_terry_recovers_known_utilities():
    rng = np.random.default_rng(5)
    n_items, n_pairs = 12, 6000
    true_u = rng.normal(0, 1.5, n_items)
    i = rng.integers(0, n_items, n_pairs)
    j = (i + rng.integers(1, n_items, n_pairs)) % n_items
    i_wins = rng.random(n_pairs) < 1 / (1 + np.exp(-(true_u[i] - true_u[j])))
    winner, loser = np.where(i_wins, i, j), np.where(i_wins, j, i)
    u = tinyllm.tensor(np.zeros(n_items), requires_grad=True)
    opt = tinyllm.optim.Adam([u], lr=0.1)
    for _ in range(300):
        loss = bradley_terry_loss(u[tinyllm.tensor(winner)], u[tinyllm.tensor(loser)])
        opt.zero_grad()
        loss.backward()
        opt.step()
    est = u.detach().numpy()
    assert np.corrcoef(est, true_u)[0, 1] > 0.99
    # recovered up to an additive constant
    np.testing.assert_allclose(est - est.mean(), true_u - true_u.mean(), atol=0.2)


def test_plackett_luce_k2_is_bradley_terry_and_probabilities_sum_to_1():
    rng = np.random.default_rng(6)
    s = rng.normal(size=(5, 2))
    pl = plackett_luce_loss(t64(s, False), reduction="none").detach().numpy()
    bt = np.logaddexp(0, -(s[:, 0] - s[:, 1]))
    np.testing.assert_allclose(pl, bt, rtol=1e-13)
    scores = rng.normal(size=(1, 4))
    perms = np.asarray(list(itertools.permutations(range(4))))
    total = sum(
        math.exp(-plackett_luce_loss(t64(scores, False), perm[None], reduction="sum").item())
        for perm in perms
    )
    assert abs(total - 1.0) < 1e-14


def test_plackett_luce_closed_form_and_gradcheck():
    s = np.array([[2.0, 0.5, -1.0]])
    ranking = np.array([[1, 0, 2]])  # item 1 best
    loss = plackett_luce_loss(t64(s, False), ranking).item()
    expected = -(0.5 - np.log(np.exp(s).sum())) - (2.0 - np.log(np.exp(2.0) + np.exp(-1.0)))
    assert abs(loss - expected) < 1e-13
    rng = np.random.default_rng(7)
    x = t64(rng.normal(size=(3, 4)))
    order = np.stack([rng.permutation(4) for _ in range(3)])
    assert tinyllm.gradcheck(lambda z: plackett_luce_loss(z, order, reduction="none"), [x])


# ---------------------------------------------------------------- KL estimators


def test_k3_zero_at_equal_policies_never_negative_and_unbiased():
    rng = np.random.default_rng(8)
    lp = rng.normal(-3, 1, 1000)
    assert np.all(kl_penalty(t64(lp, False), t64(lp, False), "k3").detach().numpy() == 0.0)
    other = lp + rng.normal(0, 2, 1000)
    assert (kl_penalty(t64(lp, False), t64(other, False), "k3").detach().numpy() >= 0).all()
    # Monte Carlo: mean of k3 under samples from pi equals KL(pi || pi_ref)
    p = np.array([0.5, 0.3, 0.15, 0.05])
    q = np.array([0.25, 0.25, 0.25, 0.25])
    exact = float((p * np.log(p / q)).sum())
    samples = rng.choice(4, size=200_000, p=p)
    k3 = (
        kl_penalty(t64(np.log(p[samples]), False), t64(np.log(q[samples]), False), "k3")
        .detach()
        .numpy()
    )
    assert abs(k3.mean() - exact) < 3 * k3.std() / np.sqrt(k3.size)


def test_kl_penalty_gradcheck_all_kinds():
    rng = np.random.default_rng(9)
    a, b = t64(rng.normal(size=(2, 5))), t64(rng.normal(size=(2, 5)))
    for kind in ("k1", "k2", "k3", "abs"):
        assert tinyllm.gradcheck(lambda x, y, k=kind: kl_penalty(x, y, k), [a, b])


# ---------------------------------------------------------------- PPO


def test_ppo_clip_zero_gradient_outside_the_clip_on_the_covered_side():
    eps = 0.2
    old = np.zeros(4)
    # log-ratios: rho = e^0.5 > 1.2 and rho = e^-0.5 < 0.8
    logp = t64([0.5, -0.5, 0.5, -0.5])
    adv = np.array([1.0, -1.0, -1.0, 1.0])
    mask = np.ones(4)
    loss, stats = ppo_policy_loss(logp, old, adv, mask, eps)
    loss.backward()
    g = logp.grad.detach().numpy()
    # A > 0, rho > 1 + eps and A < 0, rho < 1 - eps: the clip covers them, gradient 0
    assert g[0] == 0.0 and g[1] == 0.0
    # the other side is not clipped: d/dlogp of -A rho / N = -A rho / N
    rho = np.exp(np.array([0.5, -0.5]))
    np.testing.assert_allclose(g[2:], -adv[2:] * rho / 4, rtol=1e-13)
    assert stats["clipfrac"] == 0.5


def test_ppo_at_ratio_one_is_the_vanilla_policy_gradient():
    rng = np.random.default_rng(10)
    lp = rng.normal(-2, 1, (3, 6))
    adv = rng.normal(size=(3, 6))
    mask = (rng.random((3, 6)) < 0.7).astype(float)
    x = t64(lp)
    loss, stats = ppo_policy_loss(x, lp, adv, mask)
    loss.backward()
    np.testing.assert_allclose(x.grad.detach().numpy(), -adv * mask / mask.sum(), rtol=1e-13)
    assert stats["approxkl"] == 0.0 and stats["clipfrac"] == 0.0


def test_ppo_policy_and_value_loss_gradcheck():
    rng = np.random.default_rng(11)
    old = rng.normal(-2, 1, (3, 5))
    logp = t64(old + rng.choice([-0.6, -0.1, 0.05, 0.12, 0.7], size=(3, 5)))  # off the kinks
    adv = rng.normal(size=(3, 5))
    mask = np.ones((3, 5))
    mask[2, 3:] = 0
    assert tinyllm.gradcheck(lambda x: ppo_policy_loss(x, old, adv, mask, 0.2)[0], [logp])
    old_v = rng.normal(size=(3, 5))
    values = t64(old_v + rng.choice([-0.5, -0.1, 0.1, 0.5], size=(3, 5)))
    returns = rng.normal(size=(3, 5))
    assert tinyllm.gradcheck(lambda v: ppo_value_loss(v, old_v, returns, mask, 0.2)[0], [values])


def test_ppo_value_loss_closed_form():
    v, old, ret = np.array([1.0, 0.0]), np.array([0.0, 0.0]), np.array([2.0, -1.0])
    x = t64(v)
    loss, stats = ppo_value_loss(x, old, ret, np.ones(2), 0.2)
    # element 0: unclipped (1-2)^2 = 1, clipped (0.2-2)^2 = 3.24 -> 3.24, gradient 0 (clip)
    # element 1: unclipped (0+1)^2 = 1, clipped (0+1)^2 = 1 (tie, same gradient)
    assert abs(loss.item() - 0.5 * (3.24 + 1.0) / 2) < 1e-14
    loss.backward()
    np.testing.assert_allclose(
        x.grad.detach().numpy(), [0.0, 0.5 * 2 * (0.0 + 1.0) / 2], atol=1e-14
    )
    assert stats["vf_clipfrac"] == 0.5


# ---------------------------------------------------------------- GRPO


def test_grpo_loss_normalizations_by_hand():
    lp = np.array([[-1.0, -2.0, -3.0], [-0.5, -0.5, 0.0]])
    mask = np.array([[1, 1, 1], [1, 1, 0]], dtype=float)
    adv = np.array([1.0, -2.0])
    # rho = 1 everywhere: per-token loss = -A
    expect = {
        "grpo": np.mean([-1.0, 2.0]),  # per-sequence mean, then batch mean
        "bnpo": (3 * -1.0 + 2 * 2.0) / 5,
        "dr_grpo": (3 * -1.0 + 2 * 2.0) / (2 * 4),
    }
    for kind, value in expect.items():
        loss, _ = grpo_loss(t64(lp, False), lp, lp, adv, mask, 0.04, 0.2, kind, 4)
        assert abs(loss.item() - value) < 1e-14, kind
    x = t64(lp)
    loss, stats = grpo_loss(x, lp, lp, adv, mask, beta=0.04)
    loss.backward()  # at pi = pi_old = pi_ref the k3 gradient is 0: -A_i / |o_i| / B
    np.testing.assert_allclose(
        x.grad.detach().numpy(), -adv[:, None] * mask / mask.sum(1, keepdims=True) / 2, rtol=1e-13
    )
    assert stats["kl"] == 0.0


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
def test_grpo_loss_gradcheck(loss_type):
    rng = np.random.default_rng(12)
    old = rng.normal(-2, 1, (4, 5))
    ref = old + rng.normal(0, 0.3, (4, 5))
    x = t64(old + rng.choice([-0.4, -0.1, 0.05, 0.1, 0.4], size=(4, 5)))
    adv = rng.normal(size=4)
    mask = np.ones((4, 5))
    mask[1, 2:] = 0
    assert tinyllm.gradcheck(
        lambda z: grpo_loss(z, old, ref, adv, mask, 0.1, 0.2, loss_type, 6)[0], [x]
    )


# ---------------------------------------------------------------- log-probs, entropy, means


def test_sequence_logprobs_matches_numpy_and_gradchecks():
    rng = np.random.default_rng(13)
    logits = rng.normal(size=(2, 4, 7))
    labels = rng.integers(0, 7, (2, 4))
    mask = np.array([[0, 1, 1, 1], [0, 0, 1, 0]])
    per = sequence_logprobs(t64(logits, False), labels, mask).detach().numpy()
    ref = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ref = np.take_along_axis(ref, labels[..., None], -1)[..., 0] * mask
    np.testing.assert_allclose(per, ref, rtol=1e-13)
    total = sequence_logprobs(t64(logits, False), labels, mask, "sum").detach().numpy()
    np.testing.assert_allclose(total, ref.sum(1), rtol=1e-13)
    mean = sequence_logprobs(t64(logits, False), labels, mask, "mean").detach().numpy()
    np.testing.assert_allclose(mean, ref.sum(1) / mask.sum(1), rtol=1e-13)
    x = t64(logits)
    assert tinyllm.gradcheck(lambda z: sequence_logprobs(z, labels, mask), [x])
    with pytest.raises(ValueError, match="labels"):
        sequence_logprobs(x, labels + 7, mask)


def test_entropy_and_masked_mean():
    rng = np.random.default_rng(14)
    z = rng.normal(size=(3, 6))
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    np.testing.assert_allclose(
        entropy_from_logits(t64(z, False)).detach().numpy(), -(p * np.log(p)).sum(-1), rtol=1e-12
    )
    assert tinyllm.gradcheck(entropy_from_logits, [t64(z)])
    m = np.array([1, 0, 1, 0, 0, 0], dtype=float)
    assert masked_mean(t64([2.0, 100.0, 4.0, 1, 1, 1], False), m).item() == 3.0
    assert masked_mean(t64([2.0], False), np.zeros(1)).item() == 0.0  # no division by zero
    assert tinyllm.gradcheck(lambda a: masked_mean(F.exp(a), m), [t64(z[0])])
