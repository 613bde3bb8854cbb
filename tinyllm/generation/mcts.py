"""MCTS-guided generation: PUCT search over next-token children, valued by a reward a program
checks (AlphaZero's selection rule with the language model as the prior).

A node is a prefix; its children are next tokens with priors P(v | prefix) from the model
(one model call per expanded node). Each simulation:

    select   from the root, child a = argmax Q(a) + c_puct P(a) sqrt(N) / (1 + N(a))
             (Q = W / N, 0 for unvisited children)
    expand   the reached leaf: one model call gives its children's priors
    evaluate a rollout: sample tokens from the model to the full length, reward(sequence)
    backup   N += 1, W += reward along the path

Budget: ``max_calls`` model calls in all (expansions and rollout steps; a prefix already
evaluated is memoized and free, for MCTS and best-of-N alike). The answer is the best
complete sequence any rollout reached: the reward is a program, so the search may keep its
best find. ``best_of_n`` spends the same budget on independent samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


class CountingPolicy:
    """Wraps ``probs(prefix tuple) -> [V]`` with a memo and a count of real calls."""

    def __init__(self, probs: Callable[[tuple], np.ndarray]) -> None:
        self.probs, self.memo, self.calls = probs, {}, 0

    def __call__(self, prefix: tuple) -> np.ndarray:
        if prefix not in self.memo:
            self.calls += 1
            self.memo[prefix] = np.asarray(self.probs(prefix), dtype=np.float64)
        return self.memo[prefix]


class _Node:
    __slots__ = ("prior", "children", "N", "W")

    def __init__(self) -> None:
        self.prior: np.ndarray | None = None
        self.children: dict[int, _Node] = {}
        self.N = 0
        self.W = 0.0


def _sample(p: np.ndarray, rng: np.random.Generator) -> int:
    return int(min(np.searchsorted(np.cumsum(p), rng.random() * p.sum(), "right"), len(p) - 1))


def _rollout(policy, prefix, length, rng):
    seq = list(prefix)
    while len(seq) < length:
        seq.append(_sample(policy(tuple(seq)), rng))
    return tuple(seq)


def mcts_generate(
    policy: CountingPolicy,
    prompt: tuple,
    length: int,
    reward: Callable[[tuple], float],
    max_calls: int,
    c_puct: float = 1.5,
    seed: int = 0,
) -> tuple[tuple, float]:
    """(best full sequence found, its reward), spending at most ``max_calls`` model calls."""
    if length <= len(prompt):
        raise ValueError(f"mcts_generate: length {length} must exceed the prompt's {len(prompt)}")
    rng = np.random.default_rng(seed)
    root, best = _Node(), (None, -math.inf)
    start = policy.calls
    # memoized calls are free, so a small tree could loop forever: cap the simulations too
    for _ in range(20 * max_calls):
        if policy.calls - start >= max_calls:
            break
        node, seq, path = root, list(prompt), [root]
        while node.prior is not None and len(seq) < length:
            sqrt_n = math.sqrt(max(node.N, 1))
            scores = [
                (node.children[a].W / node.children[a].N if a in node.children and
                 node.children[a].N else 0.0)
                + c_puct * node.prior[a] * sqrt_n / (1 + (node.children[a].N if a in
                                                           node.children else 0))
                for a in range(len(node.prior))
            ]  # fmt: skip
            a = int(np.argmax(scores))
            node = node.children.setdefault(a, _Node())
            seq.append(a)
            path.append(node)
        if len(seq) < length:
            before = policy.calls
            node.prior = policy(tuple(seq))
            if policy.calls - start > max_calls and before - start >= max_calls:
                break
        full = _rollout(policy, seq, length, rng) if len(seq) < length else tuple(seq)
        if policy.calls - start > max_calls:
            break  # this rollout went over the budget: not counted
        r = float(reward(full))
        if r > best[1]:
            best = (full, r)
        for n in path:
            n.N += 1
            n.W += r
    return best


def best_of_n(
    policy: CountingPolicy,
    prompt: tuple,
    length: int,
    reward: Callable[[tuple], float],
    max_calls: int,
    seed: int = 0,
) -> tuple[tuple, float]:
    """Independent samples until the budget is spent; the best by reward."""
    rng = np.random.default_rng(seed)
    best, start = (None, -math.inf), policy.calls
    for _ in range(20 * max_calls):  # memoized prefixes are free: cap the samples too
        if policy.calls - start >= max_calls:
            break
        full = _rollout(policy, prompt, length, rng)
        if policy.calls - start > max_calls:
            break
        r = float(reward(full))
        if r > best[1]:
            best = (full, r)
    return best
