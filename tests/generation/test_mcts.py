"""MCTS-guided generation: finds the exhaustive optimum with budget; stays within budget."""

import itertools

import numpy as np
import pytest

from tinyllm.generation.mcts import CountingPolicy, best_of_n, mcts_generate


def toy_policy(V, seed):
    rng = np.random.default_rng(seed)
    table = {}

    def probs(prefix):
        if prefix not in table:
            table[prefix] = rng.dirichlet(np.ones(V))
        return table[prefix]

    return probs


def ascending(seq):
    """Program-checked reward: the fraction of steps that add 1 (mod 5)."""
    return sum((b - a) % 5 == 1 for a, b in zip(seq, seq[1:])) / (len(seq) - 1)


def test_mcts_reaches_the_exhaustive_best_and_respects_the_budget():
    V, L = 5, 5
    best = max(ascending((0, *s)) for s in itertools.product(range(V), repeat=L - 1))
    policy = CountingPolicy(toy_policy(V, 0))
    seq, r = mcts_generate(policy, (0,), L, ascending, max_calls=400, seed=0)
    assert r == best == 1.0 and seq == (0, 1, 2, 3, 4)
    assert policy.calls <= 400
    policy = CountingPolicy(toy_policy(V, 0))
    _, r = best_of_n(policy, (0,), L, ascending, max_calls=50, seed=0)
    assert policy.calls <= 50 and 0.0 <= r <= 1.0


def test_mcts_beats_best_of_n_at_equal_calls_on_average():
    V, L, budget = 5, 8, 120
    m, b = [], []
    for seed in range(8):
        m.append(
            mcts_generate(
                CountingPolicy(toy_policy(V, seed)), (0,), L, ascending, budget, seed=seed
            )[1]
        )
        b.append(
            best_of_n(CountingPolicy(toy_policy(V, seed)), (0,), L, ascending, budget, seed=seed)[1]
        )
    assert np.mean(m) > np.mean(b), (m, b)


@pytest.mark.parametrize("budget", [1, 7, 30, 90])
@pytest.mark.parametrize("backup", ["max", "mean"])
def test_no_search_spends_more_than_its_budget(budget, backup):
    """A call is a distinct prefix; memoized ones are free. Neither method passes the budget,
    and each search that returns a sequence returns its true reward."""
    for seed in range(3):
        policy = CountingPolicy(toy_policy(6, seed))
        seq, r = mcts_generate(policy, (0,), 7, ascending, budget, backup=backup, seed=seed,
                               prior_temperature=2.0)  # fmt: skip
        assert policy.calls <= budget and len(policy.memo) == policy.calls
        assert seq is None or (len(seq) == 7 and r == ascending(seq))
        policy = CountingPolicy(toy_policy(6, seed))
        seq, r = best_of_n(policy, (0,), 7, ascending, budget, temperature=1.5, seed=seed)
        assert policy.calls <= budget and (seq is None or r == ascending(seq))


def test_mcts_errors_name_the_argument():
    policy = CountingPolicy(toy_policy(3, 0))
    with pytest.raises(ValueError, match="mcts_generate: length 1 must exceed"):
        mcts_generate(policy, (0,), 1, ascending, 10)
    with pytest.raises(ValueError, match="mcts_generate: backup must be 'max' or 'mean'"):
        mcts_generate(policy, (0,), 3, ascending, 10, backup="sum")
    with pytest.raises(ValueError, match="best_of_n: max_calls must be >= 1"):
        best_of_n(policy, (0,), 3, ascending, 0)
    with pytest.raises(ValueError, match="best_of_n: temperature must be > 0, got 0"):
        best_of_n(policy, (0,), 3, ascending, 10, temperature=0)
    with pytest.raises(ValueError, match="mcts_generate: rollout_temperature must be > 0"):
        mcts_generate(policy, (0,), 3, ascending, 10, rollout_temperature=-1.0)
    with pytest.raises(ValueError, match="mcts_generate: fpu must be a number or 'parent'"):
        mcts_generate(policy, (0,), 3, ascending, 10, fpu="Parent")
    assert policy.calls == 0  # every check runs before the first model call
