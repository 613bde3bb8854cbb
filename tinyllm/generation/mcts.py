"""MCTS-guided generation: PUCT search over next-token children, valued by a reward a program
checks (AlphaZero's selection rule with the language model as the prior).

A node is a prefix; its children are next tokens with priors P(v | prefix) from the model.
Each simulation:

    select   from the root, child a = argmax Q(a) + c_puct P(a) sqrt(N) / (1 + N(a))
             (an unvisited child's Q is ``fpu``: a number, or "parent" for its parent's Q)
    rollout  from the reached prefix, sample tokens from the model (at
             ``rollout_temperature``) to the full length; every prefix on the way joins the
             tree with its priors (the rollout already paid the model call that gives them)
    evaluate reward(sequence), a program
    backup   along the path: N += 1, W += r, B = max(B, r); Q = W / N ("mean") or B ("max")

Priors are the model's next-token distribution, optionally flattened: P ~ p^(1 / tau),
tau = ``prior_temperature``. "max" backup (a subtree is worth its best leaf, as in
single-player MCTS) is offered beside AlphaZero's mean.

The defaults were chosen on a development set of digit tasks with a trained byte model
(``python experiments/serving.py --part mcts``: 32 settings, 6 tasks x 3 seeds): a small
exploration constant (c_puct 0.25: near the leaves a new sequence costs one or two calls,
so exploiting the best prefix found is cheap local search), unvisited children valued 0
(``fpu`` "parent" spent the budget breadth-first), mean backup (max was within noise).
On held-out tasks this beats best-of-N at equal calls; the previous defaults (c_puct 1.5)
did not. Another task may want other settings: tune them on its own development set.

Budget: ``max_calls`` model calls in all. A call is one next-token distribution of a prefix
not seen before in this search (``CountingPolicy`` memoizes; memoized prefixes are free,
for MCTS and best-of-N alike). A sequence whose rollout would pass the budget is not
evaluated. The answer is the best complete sequence any rollout reached.
``best_of_n`` spends the same budget on independent samples (at ``temperature``) and keeps
the best by reward.
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

    def would_call(self, prefix: tuple) -> bool:
        """True when ``prefix`` is not memoized (asking for it costs a call)."""
        return prefix not in self.memo


class _Node:
    __slots__ = ("prior", "children", "N", "W", "B")

    def __init__(self) -> None:
        self.prior: np.ndarray | None = None
        self.children: dict[int, _Node] = {}
        self.N = 0
        self.W = 0.0
        self.B = -math.inf  # best reward below this node


def _sample(p: np.ndarray, rng: np.random.Generator) -> int:
    return int(min(np.searchsorted(np.cumsum(p), rng.random() * p.sum(), "right"), len(p) - 1))


def _tempered(p: np.ndarray, temperature: float) -> np.ndarray:
    """p^(1 / T), renormalized (T = 1: p itself)."""
    if temperature == 1.0:
        return p
    logp = np.log(np.maximum(p, 1e-300)) / temperature
    q = np.exp(logp - logp.max())
    return q / q.sum()


def _check(name: str, prompt: tuple, length: int, max_calls: int, **temperatures) -> None:
    if length <= len(prompt):
        raise ValueError(f"{name}: length {length} must exceed the prompt's {len(prompt)}")
    if max_calls < 1:
        raise ValueError(f"{name}: max_calls must be >= 1, got {max_calls}")
    for arg, value in temperatures.items():
        if not value > 0:
            raise ValueError(f"{name}: {arg} must be > 0, got {value}")


def _rollout(policy, prefix, length, rng, temperature, start, max_calls):
    """Sample to ``length``; None when that would pass the budget (calls already spent)."""
    seq = list(prefix)
    while len(seq) < length:
        if policy.would_call(tuple(seq)) and policy.calls - start >= max_calls:
            return None
        seq.append(_sample(_tempered(policy(tuple(seq)), temperature), rng))
    return tuple(seq)


def mcts_generate(
    policy: CountingPolicy,
    prompt: tuple,
    length: int,
    reward: Callable[[tuple], float],
    max_calls: int,
    c_puct: float = 0.25,
    backup: str = "mean",
    prior_temperature: float = 1.0,
    rollout_temperature: float = 1.0,
    fpu: float | str = 0.0,
    seed: int = 0,
) -> tuple[tuple, float]:
    """(best full sequence found, its reward), spending at most ``max_calls`` model calls."""
    _check("mcts_generate", prompt, length, max_calls, prior_temperature=prior_temperature,
           rollout_temperature=rollout_temperature)  # fmt: skip
    if backup not in ("max", "mean"):
        raise ValueError(f"mcts_generate: backup must be 'max' or 'mean', got {backup!r}")
    if fpu != "parent" and not isinstance(fpu, (int, float)):
        raise ValueError(f"mcts_generate: fpu must be a number or 'parent', got {fpu!r}")
    rng = np.random.default_rng(seed)
    root, best = _Node(), (None, -math.inf)
    start = policy.calls

    def q(node: _Node) -> float:
        return node.B if backup == "max" else node.W / node.N

    # memoized prefixes are free, so a small tree could loop forever: cap the simulations
    for _ in range(20 * max_calls):
        if policy.calls - start >= max_calls:
            break
        node, seq, path = root, list(prompt), [root]
        while node.prior is not None and len(seq) < length:
            sqrt_n = math.sqrt(max(node.N, 1))
            unvisited = (q(node) if node.N else 0.0) if fpu == "parent" else float(fpu)
            best_a, best_score = 0, -math.inf
            for a in np.flatnonzero(node.prior):
                child = node.children.get(int(a))
                n_a = child.N if child is not None else 0
                value = q(child) if n_a else unvisited
                score = value + c_puct * node.prior[a] * sqrt_n / (1 + n_a)
                if score > best_score:
                    best_a, best_score = int(a), score
            node = node.children.setdefault(best_a, _Node())
            seq.append(best_a)
            path.append(node)
        # rollout: each prefix on the way joins the tree with the priors its call gave
        stopped = False
        while len(seq) < length:
            if policy.would_call(tuple(seq)) and policy.calls - start >= max_calls:
                stopped = True
                break
            p = policy(tuple(seq))
            node.prior = _tempered(p, prior_temperature)
            a = _sample(_tempered(p, rollout_temperature), rng)
            node = node.children.setdefault(a, _Node())
            seq.append(a)
            path.append(node)
        if stopped:
            break
        r = float(reward(tuple(seq)))
        if r > best[1]:
            best = (tuple(seq), r)
        for n in path:
            n.N += 1
            n.W += r
            n.B = max(n.B, r)
    return best


def best_of_n(
    policy: CountingPolicy,
    prompt: tuple,
    length: int,
    reward: Callable[[tuple], float],
    max_calls: int,
    temperature: float = 1.0,
    seed: int = 0,
) -> tuple[tuple, float]:
    """Independent samples (at ``temperature``) until the budget is spent; the best by
    reward."""
    _check("best_of_n", prompt, length, max_calls, temperature=temperature)
    rng = np.random.default_rng(seed)
    best, start = (None, -math.inf), policy.calls
    for _ in range(20 * max_calls):  # memoized prefixes are free: cap the samples too
        if policy.calls - start >= max_calls:
            break
        full = _rollout(policy, prompt, length, rng, temperature, start, max_calls)
        if full is None:
            break
        r = float(reward(full))
        if r > best[1]:
            best = (full, r)
    return best
