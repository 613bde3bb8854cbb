"""Reflection (Reflexion, Shinn et al., 2023): retry a task with a memory of failed attempts.

Trial t: ``output = generate(prompt_t)`` where ``prompt_t`` is the task followed by the
reflections of trials 1..t-1; ``ok, feedback = check(output)`` (an external evaluator: tests,
a validator, an exact answer); on failure ``reflect(task, output, feedback)`` (by default a
plain summary; with a model, a prompt asking it what went wrong) is appended to the memory.
Stops at the first success or after ``max_trials``; the memory keeps the last ``memory_size``
reflections (the paper keeps 1-3).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


def default_reflect(task: str, output: str, feedback: str) -> str:
    return f"A previous attempt answered {output.strip()!r}, which was wrong: {feedback}"


def reflection_prompt(task: str, memory: list[str]) -> str:
    if not memory:
        return task
    notes = "\n".join(f"- {m}" for m in memory)
    return f"{task}\nLessons from earlier attempts:\n{notes}\n"


@dataclass
class ReflectionResult:
    output: str | None  # the successful output, or None
    trials: int
    memory: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


def reflexion(
    generate: Callable[[str], str],
    check: Callable[[str], tuple[bool, str]],
    task: str,
    max_trials: int = 3,
    reflect: Callable[[str, str, str], str] = default_reflect,
    memory_size: int = 3,
) -> ReflectionResult:
    """Retry ``task`` until ``check`` passes, feeding reflections on failures back."""
    if max_trials < 1 or memory_size < 1:
        raise ValueError(
            f"reflexion: max_trials and memory_size must be >= 1, got {max_trials}, {memory_size}"
        )
    memory: list[str] = []
    outputs: list[str] = []
    for trial in range(1, max_trials + 1):
        output = generate(reflection_prompt(task, memory[-memory_size:]))
        outputs.append(output)
        ok, feedback = check(output)
        if ok:
            return ReflectionResult(output, trial, memory, outputs)
        memory.append(reflect(task, output, feedback))
    return ReflectionResult(None, max_trials, memory, outputs)
