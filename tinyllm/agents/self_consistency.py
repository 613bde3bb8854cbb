"""Self-consistency (Wang et al., 2023): sample k reasoning chains, majority-vote the answers.

``answer = argmax_a #{i : extract(sample_i) = a}`` over the samples whose answer could be
extracted; ties go to the answer that reached the top count first (deterministic). Chains of
thought are prompted with ``COT_SUFFIX`` ("Let's think step by step.", Kojima et al., 2022).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

COT_SUFFIX = "\nLet's think step by step.\n"

_ANSWER = re.compile(r"(?:Final Answer|Answer)\s*:\s*(.+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def extract_answer(text: str) -> str | None:
    """The text after the last ``Answer:`` (first line), else the last number, else None."""
    found = _ANSWER.findall(text)
    if found:
        return found[-1].strip().splitlines()[0].strip() or None
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


@dataclass
class Vote:
    answer: str | None
    votes: Counter
    samples: list[str]


def majority_vote(answers: list[str | None]) -> tuple[str | None, Counter]:
    """The most common non-None answer (ties: the one that first reached the top count)."""
    counts: Counter = Counter()
    best, best_count = None, 0
    for a in answers:
        if a is None:
            continue
        counts[a] += 1
        if counts[a] > best_count:
            best, best_count = a, counts[a]
    return best, counts


def self_consistency(
    generate: Callable[[str], str],
    prompt: str,
    k: int = 5,
    extract: Callable[[str], str | None] = extract_answer,
    chain_of_thought: bool = True,
) -> Vote:
    """Call ``generate`` k times on the (chain-of-thought) prompt and vote on the answers."""
    if k < 1:
        raise ValueError(f"self_consistency: k must be >= 1, got {k}")
    full = prompt + COT_SUFFIX if chain_of_thought else prompt
    samples = [generate(full) for _ in range(k)]
    answer, votes = majority_vote([extract(s) for s in samples])
    return Vote(answer, votes, samples)
