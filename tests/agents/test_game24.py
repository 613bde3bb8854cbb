"""Game of 24: the solvable count, two solvers in agreement, tree-of-thought search."""

import ast
import operator
import random
from fractions import Fraction
from itertools import combinations_with_replacement

import pytest

from tinyllm.agents.game24 import (
    count_solvable,
    initial_state,
    is_goal,
    propose,
    reachable,
    reaches,
    solve,
    value_exact,
    value_heuristic,
)
from tinyllm.agents.tot import tot_bfs, tot_dfs

MULTISETS = list(combinations_with_replacement(range(1, 14), 4))
_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def _evaluate(expr: str) -> tuple[Fraction, list[int]]:
    """Exact value of an expression string and the numbers it uses (own walker over ``ast``)."""
    used = []

    def ev(node):
        if isinstance(node, ast.BinOp):
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):  # "-3" in a step
            return -ev(node.operand)
        assert isinstance(node, ast.Constant) and isinstance(node.value, int)
        used.append(node.value)
        return Fraction(node.value)

    return ev(ast.parse(expr, mode="eval").body), used


def test_1362_of_1820_multisets_are_solvable():
    # The published count (Yao et al. 2023's 4nums.com data; Game of 24 literature): 1,362.
    assert count_solvable(1, 13) == (1362, 1820)


def test_dfs_solver_agrees_with_reachable_sets_and_its_expressions_check():
    for ms in MULTISETS[::15]:  # 122 multisets: the DFS solver costs ~30 ms each
        expr = solve(ms)
        assert (expr is not None) == reaches(ms) == (Fraction(24) in reachable(ms)), ms
        if expr is not None:
            value, used = _evaluate(expr)
            assert value == 24 and sorted(used) == list(ms), (ms, expr)


def test_known_hard_and_impossible_cases():
    assert _evaluate(solve([3, 3, 8, 8]))[0] == 24  # needs the fraction 8/3
    assert _evaluate(solve([1, 5, 5, 5]))[0] == 24  # 5 * (5 - 1/5)
    for impossible in ([1, 1, 1, 1], [1, 1, 1, 2], [13, 13, 13, 13]):
        assert solve(impossible) is None and not reaches(tuple(impossible))


def test_tot_dfs_with_exact_evaluator_is_complete_and_steps_are_valid():
    random.seed(0)
    for ms in random.sample(MULTISETS, 40):
        result = tot_dfs(initial_state(ms), propose, value_exact, is_goal)
        assert (result.goal is not None) == reaches(ms), ms
        if result.goal is not None:
            assert is_goal(result.goal) and len(result.goal[1]) == 3
            for step in result.goal[1]:  # each step "x op y = z" is true arithmetic
                lhs, rhs = step.split(" = ")
                assert _evaluate(lhs)[0] == _evaluate(rhs)[0], step


def test_tot_bfs_heuristic_finds_only_real_solutions_and_breadth_helps():
    random.seed(1)
    solvable = [ms for ms in random.sample(MULTISETS, 60) if reaches(ms)]
    wins = {}
    for breadth in (1, 5):
        found = 0
        for ms in solvable:
            result = tot_bfs(initial_state(ms), propose, value_heuristic, is_goal, breadth, 3)
            if result.goal is not None:
                assert result.goal[0] == (Fraction(24),)
                found += 1
        wins[breadth] = found
    assert wins[5] >= wins[1] and wins[5] > 0
    # with the exact evaluator the beam never loses a solvable instance
    for ms in solvable[:10]:
        assert tot_bfs(initial_state(ms), propose, value_exact, is_goal, 1, 3).goal is not None


def test_tot_arguments_checked():
    with pytest.raises(ValueError, match="tot_bfs"):
        tot_bfs(initial_state([1, 2, 3, 4]), propose, value_exact, is_goal, breadth=0)
