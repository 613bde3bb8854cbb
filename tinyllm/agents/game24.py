"""Game of 24: combine four numbers with + - * / (each used once) to make 24.

Exact arithmetic with ``fractions.Fraction`` (``8 / (3 - 8 / 3) = 24`` needs it).

* ``solve(numbers)``: depth-first search over "pick two, replace them by a op b" (the state
  space tree of thought searches); returns an expression string or None.
* ``count_solvable(lo, hi)``: the number of solvable multisets of four numbers from lo..hi by a
  different method, values reachable from sub-multisets (``reachable``, cached on integer
  multisets) and the top operation solved for its left operand (``reaches``); 1..13 gives
  1,362 of 1,820.
* ``propose`` / ``value_exact`` / ``value_heuristic`` / ``is_goal``: the pieces ``tree_of_thought``
  needs (``tot.py``). A state is ``(numbers, steps)``: the remaining numbers (sorted Fractions)
  and the steps taken (``"4 * 6 = 24"``).
"""

from __future__ import annotations

from fractions import Fraction
from functools import cache
from itertools import combinations_with_replacement

TARGET = Fraction(24)


def _combine(a: Fraction, b: Fraction) -> list[tuple[Fraction, str]]:
    """Every value of a op b and b op a (division by zero skipped), with the op's symbol."""
    out = [(a + b, "+"), (a * b, "*"), (a - b, "-"), (b - a, "-r")]
    if b != 0:
        out.append((a / b, "/"))
    if a != 0:
        out.append((b / a, "/r"))
    return out


def _fmt(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"({x.numerator}/{x.denominator})"


State = tuple[tuple[Fraction, ...], tuple[str, ...]]


def initial_state(numbers) -> State:
    return tuple(sorted(Fraction(n) for n in numbers)), ()


def propose(state: State) -> list[State]:
    """All children: pick i < j, replace numbers i and j by one value of ``_combine``."""
    nums, steps = state
    children = []
    seen = set()
    for i in range(len(nums)):
        for j in range(i + 1, len(nums)):
            rest = nums[:i] + nums[i + 1 : j] + nums[j + 1 :]
            for value, op in _combine(nums[i], nums[j]):
                new = tuple(sorted(rest + (value,)))
                if new in seen:
                    continue
                seen.add(new)
                x, y = (nums[j], nums[i]) if op.endswith("r") else (nums[i], nums[j])
                step = f"{_fmt(x)} {op[0]} {_fmt(y)} = {_fmt(value)}"
                children.append((new, steps + (step,)))
    return children


def is_goal(state: State) -> bool:
    return len(state[0]) == 1 and state[0][0] == TARGET


def solve(numbers) -> str | None:
    """An expression over ``numbers`` equal to 24, or None (exhaustive depth-first search)."""
    exprs = [(Fraction(n), str(n)) for n in numbers]
    return _solve(exprs)


def _solve(items: list[tuple[Fraction, str]]) -> str | None:
    if len(items) == 1:
        return items[0][1] if items[0][0] == TARGET else None
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            (a, ea), (b, eb) = items[i], items[j]
            rest = [items[k] for k in range(len(items)) if k not in (i, j)]
            for value, op in _combine(a, b):
                if op.endswith("r"):
                    expr = f"({eb} {op[0]} {ea})"
                else:
                    expr = f"({ea} {op} {eb})"
                found = _solve(rest + [(value, expr)])
                if found is not None:
                    return found
    return None


@cache
def reachable(multiset: tuple[int, ...]) -> frozenset[Fraction]:
    """Every value an expression using each number of ``multiset`` (sorted ints) once can take:
    the union over splits into two non-empty parts A, B of {a op b : a in R(A), b in R(B)}."""
    if len(multiset) == 1:
        return frozenset({Fraction(multiset[0])})
    values: set[Fraction] = set()
    n = len(multiset)
    for mask in range(1, (1 << n) - 1):
        if mask & 1 == 0:  # each unordered split once: part A holds element 0
            continue
        a = tuple(multiset[k] for k in range(n) if mask >> k & 1)
        b = tuple(multiset[k] for k in range(n) if not mask >> k & 1)
        for x in reachable(a):
            for y in reachable(b):
                values.update(v for v, _ in _combine(x, y))
    return frozenset(values)


def reaches(multiset: tuple[int, ...], target: Fraction = TARGET) -> bool:
    """Whether some expression over ``multiset`` equals ``target``, without building the top
    level's value set: for a split A | B and y in R(B), solve ``x op y = target`` for x and look
    x up in R(A) (both operand orders; division only by non-zero)."""
    multiset = tuple(sorted(multiset))
    n = len(multiset)
    if n == 1:
        return Fraction(multiset[0]) == target
    for mask in range(1, (1 << n) - 1):
        a = tuple(multiset[k] for k in range(n) if mask >> k & 1)
        b = tuple(multiset[k] for k in range(n) if not mask >> k & 1)
        ra = reachable(a)
        for y in reachable(b):
            if target - y in ra or target + y in ra or y - target in ra:  # x + y, x - y, y - x
                return True
            if y != 0 and target / y in ra:  # x * y
                return True
            if y == 0 and target == 0:  # x * 0 = 0
                return True
            if y != 0 and target * y in ra:  # x / y
                return True
            if target != 0 and y != 0 and y / target in ra:  # y / x, x = y / t != 0
                return True
            if target == 0 and y == 0 and any(x != 0 for x in ra):  # 0 / x
                return True
    return False


def count_solvable(lo: int = 1, hi: int = 13, size: int = 4) -> tuple[int, int]:
    """(solvable, total) multisets of ``size`` numbers from lo..hi."""
    total = solvable = 0
    for ms in combinations_with_replacement(range(lo, hi + 1), size):
        total += 1
        solvable += reaches(ms)
    return solvable, total


def value_exact(state: State) -> float:
    """1 if 24 is still reachable from the state's numbers, else 0 (an oracle evaluator)."""
    nums = state[0]
    return float(_solve([(x, "") for x in nums]) is not None)


def value_heuristic(state: State) -> float:
    """A cheap evaluator, as an LLM's "sure / likely / impossible" would be: exact for one or two
    numbers; for more, 1 if some number divides 24 or makes it with another by one op, else 0.3.
    """
    nums = state[0]
    if len(nums) <= 2:
        return value_exact(state)
    for i in range(len(nums)):
        for j in range(i + 1, len(nums)):
            if any(v == TARGET for v, _ in _combine(nums[i], nums[j])):
                return 1.0
    return 0.6 if any(x != 0 and TARGET / x == int(TARGET / x) for x in nums) else 0.3


def main(argv: list[str] | None = None) -> None:
    """``python -m tinyllm.agents.game24``: the solvable count and tree-of-thought success rates
    (BFS with the heuristic evaluator at several breadths, DFS with it) on random solvable
    multisets."""
    import argparse
    import random
    import time

    from tinyllm.agents.tot import tot_bfs, tot_dfs

    parser = argparse.ArgumentParser(description="Game of 24: solver and tree of thought")
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    solvable, total = count_solvable()
    print(
        f"solvable multisets of 4 from 1..13: {solvable} / {total} "
        f"({time.perf_counter() - t0:.2f} s)"
    )
    pool = [ms for ms in combinations_with_replacement(range(1, 14), 4) if reaches(ms)]
    sample = random.Random(args.seed).sample(pool, args.instances)
    print("| search | evaluator | solved | mean states evaluated |")
    print("|---|---|---|---|")
    runs = [
        (f"BFS b={b}", lambda s, b=b: tot_bfs(s, propose, value_heuristic, is_goal, b, 3))
        for b in (1, 3, 5)
    ]
    runs.append(("DFS t=0.5", lambda s: tot_dfs(s, propose, value_heuristic, is_goal, 0.5)))
    for name, search in runs:
        results = [search(initial_state(ms)) for ms in sample]
        solved = sum(r.goal is not None for r in results)
        mean_eval = sum(r.evaluated for r in results) / len(results)
        print(f"| {name} | heuristic | {solved}/{len(sample)} | {mean_eval:.0f} |")


if __name__ == "__main__":
    main()
