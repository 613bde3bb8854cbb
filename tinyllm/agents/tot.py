"""Tree of thought (Yao et al., 2023): search over partial solutions with a proposer and an
evaluator, both plain callables (an LLM prompt each in the paper; functions in the tests).

* BFS: keep the ``breadth`` best states (by ``evaluate``) of each depth's children, for
  ``depth`` levels; succeed if a goal appears.
* DFS: expand children best-first, prune those with ``evaluate(child) < threshold``, backtrack;
  stop at a goal or after ``max_nodes`` evaluated states.

Both return a ``SearchResult`` with the goal state (or None) and the number of states
evaluated (the cost an LLM evaluator would pay per call).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class SearchResult:
    goal: Any | None
    evaluated: int


def tot_bfs(
    root: Any,
    propose: Callable[[Any], list],
    evaluate: Callable[[Any], float],
    is_goal: Callable[[Any], bool],
    breadth: int = 5,
    depth: int = 3,
) -> SearchResult:
    """Breadth-first tree of thought with a beam of ``breadth`` states per level."""
    if breadth < 1 or depth < 1:
        raise ValueError(f"tot_bfs: breadth and depth must be >= 1, got {breadth}, {depth}")
    frontier = [root]
    evaluated = 0
    for _ in range(depth):
        children = [c for s in frontier for c in propose(s)]
        for c in children:
            if is_goal(c):
                return SearchResult(c, evaluated)
        scored = []
        for k, c in enumerate(children):
            scored.append((-evaluate(c), k, c))
            evaluated += 1
        scored.sort(key=lambda t: (t[0], t[1]))  # best first; ties by proposal order
        frontier = [c for _, _, c in scored[:breadth]]
        if not frontier:
            break
    return SearchResult(None, evaluated)


def tot_dfs(
    root: Any,
    propose: Callable[[Any], list],
    evaluate: Callable[[Any], float],
    is_goal: Callable[[Any], bool],
    threshold: float = 0.5,
    max_nodes: int = 10_000,
) -> SearchResult:
    """Depth-first tree of thought: best child first, prune below ``threshold``, backtrack."""
    evaluated = 0
    stack = [root]
    while stack:
        state = stack.pop()
        if is_goal(state):
            return SearchResult(state, evaluated)
        scored = []
        for k, c in enumerate(propose(state)):
            if evaluated >= max_nodes:
                return SearchResult(None, evaluated)
            v = evaluate(c)
            evaluated += 1
            if v >= threshold:
                scored.append((v, -k, c))
        scored.sort(key=lambda t: (t[0], t[1]))  # ascending: the best child is popped first
        stack.extend(c for _, _, c in scored)
    return SearchResult(None, evaluated)
