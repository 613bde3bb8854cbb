"""GAE, per-token rewards, group-normalized advantages, whitening and KL controllers."""

from __future__ import annotations

import numpy as np
import pytest

from tinyllm.alignment.advantages import (
    AdaptiveKLController,
    FixedKLController,
    compute_gae,
    compute_token_rewards,
    group_advantages,
)
from tinyllm.alignment.ops import masked_whiten


def _random_rollout(seed=0, B=4, T=7):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, T + 1, B)
    mask = (np.arange(T)[None] < lengths[:, None]).astype(float)
    return rng.normal(size=(B, T)) * mask, rng.normal(size=(B, T)) * mask, mask


def test_gae_lambda1_gamma1_is_returns_minus_values():
    r, v, m = _random_rollout(0)
    adv, ret = compute_gae(r, v, m, gamma=1.0, lam=1.0)
    to_go = np.cumsum(r[:, ::-1], axis=1)[:, ::-1] * m  # sum_{k >= t} r_k
    np.testing.assert_allclose(adv, (to_go - v) * m, atol=1e-12)
    np.testing.assert_allclose(ret, to_go, atol=1e-12)


def test_gae_lambda0_is_td_residuals():
    r, v, m = _random_rollout(1)
    gamma = 0.9
    adv, _ = compute_gae(r, v, m, gamma=gamma, lam=0.0)
    next_v = np.concatenate([v[:, 1:] * m[:, 1:], np.zeros((v.shape[0], 1))], axis=1)
    np.testing.assert_allclose(adv, (r + gamma * next_v - v) * m, atol=1e-12)


def test_gae_matches_a_per_sequence_loop_and_ignores_padding():
    r, v, m = _random_rollout(2)
    gamma, lam = 0.97, 0.9
    adv, ret = compute_gae(r, v, m, gamma, lam)
    for b in range(r.shape[0]):
        n = int(m[b].sum())
        a, expected = 0.0, np.zeros(n)
        for t in reversed(range(n)):
            nv = v[b, t + 1] if t + 1 < n else 0.0
            a = r[b, t] + gamma * nv - v[b, t] + gamma * lam * a
            expected[t] = a
        np.testing.assert_allclose(adv[b, :n], expected, atol=1e-12)
        assert (adv[b, n:] == 0).all() and (ret[b, n:] == 0).all()
    # garbage in the padding changes nothing
    v2 = v + (1 - m) * 1e6
    np.testing.assert_allclose(compute_gae(r, v2, m, gamma, lam)[0], adv, atol=1e-9)


def test_token_rewards_score_on_the_last_token_only():
    rng = np.random.default_rng(3)
    _, _, m = _random_rollout(3)
    lp, ref = rng.normal(size=m.shape), rng.normal(size=m.shape)
    scores = np.array([1.0, 0.0, 2.0, -1.0])
    beta = 0.1
    rewards, kl = compute_token_rewards(scores, lp, ref, m, beta)
    np.testing.assert_allclose(rewards.sum(1), scores - beta * ((lp - ref) * m).sum(1), atol=1e-12)
    last = m.sum(1).astype(int) - 1
    without = rewards.copy()
    without[np.arange(4), last] -= scores
    np.testing.assert_allclose(without, -beta * (lp - ref) * m, atol=1e-12)
    assert (rewards[m == 0] == 0).all()
    _, k3 = compute_token_rewards(scores, lp, ref, m, beta, "k3")
    assert (k3 >= 0).all()


@pytest.mark.parametrize("G", [2, 4, 8])
def test_group_advantages_sum_zero_and_squares_g_minus_1(G):
    rng = np.random.default_rng(G)
    rewards = rng.normal(size=5 * G)
    adv = group_advantages(rewards, G, eps=0.0).reshape(5, G)
    np.testing.assert_allclose(adv.sum(1), 0.0, atol=1e-12)
    # unbiased (G - 1) std: sum of squares = G - 1 exactly (population std would give G)
    np.testing.assert_allclose((adv**2).sum(1), G - 1, rtol=1e-12)
    # with TRL's eps = 1e-4 the identity holds to ~eps
    adv_eps = group_advantages(rewards, G).reshape(5, G)
    np.testing.assert_allclose((adv_eps**2).sum(1), G - 1, rtol=1e-3)


def test_group_advantages_equal_rewards_give_zero_not_nan():
    adv = group_advantages(np.array([1.0, 1.0, 1.0, 0.0, 1.0, 0.0]), 3)
    assert np.isfinite(adv).all()
    np.testing.assert_allclose(adv[:3], 0.0)
    with pytest.raises(ValueError):
        group_advantages(np.ones(5), 2)


def test_masked_whiten_zero_mean_unit_unbiased_variance():
    rng = np.random.default_rng(4)
    x = rng.normal(3, 5, (4, 6))
    m = (rng.random((4, 6)) < 0.6).astype(float)
    w = masked_whiten(x, m, eps=0.0)
    vals = w[m == 1]
    assert abs(vals.mean()) < 1e-12
    assert abs(vals.var(ddof=1) - 1) < 1e-12
    assert (w[m == 0] == 0).all()


def test_kl_controllers():
    fixed = FixedKLController(0.05)
    fixed.update(100.0, 10)
    assert fixed.value == 0.05
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    ctl.update(12.0, 100)  # error clipped to +0.2
    assert abs(ctl.value - 0.2 * (1 + 0.2 * 100 / 10000)) < 1e-15
    ctl2 = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    ctl2.update(4.5, 100)  # error -0.25 clipped to -0.2
    assert abs(ctl2.value - 0.2 * (1 - 0.2 * 100 / 10000)) < 1e-15
    ctl3 = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    ctl3.update(6.6, 100)  # error 0.1, inside the clip
    assert abs(ctl3.value - 0.2 * (1 + 0.1 * 100 / 10000)) < 1e-15
