"""Task success of a fine-tuned agent on held-out questions, under several decoding strategies.

A strategy is ``(mode, constrained, k)``:

* ``mode="react"``: the ReAct loop (``react.react``) with real tool execution; the answer is
  the loop's final answer. ``mode="direct"``: the model answers from the question alone
  (``traces.DIRECT_TEMPLATE``), no tools.
* ``constrained``: each ReAct step is sampled under the step grammar's token mask
  (``policy.step_regex``: the action's JSON comes from the tool's schema).
* ``k``: 1 is greedy decoding; k > 1 is self-consistency: k runs sampled at ``temperature``,
  the answer is the majority vote (``self_consistency.majority_vote``).

Success means the answer equals ``traces.expected_answer`` (computed without the tools).
Every generated step is also checked on its own: well-formed when it is a final answer, or an
action whose input parses as JSON, names a registered tool and validates against its schema
(``jsonschema``); under constrained decoding all steps must be well-formed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from tinyllm.agents.policy import ModelPolicy, step_guide
from tinyllm.agents.react import react
from tinyllm.agents.self_consistency import majority_vote
from tinyllm.agents.tools import ToolRegistry, _schema_errors, parse_react
from tinyllm.agents.traces import DIRECT_TEMPLATE, REACT_TEMPLATE, Task, expected_answer

MAX_STEPS = 4


@dataclass(frozen=True)
class Strategy:
    mode: str  # "react" | "direct"
    constrained: bool
    k: int

    @property
    def name(self) -> str:
        parts = [self.mode]
        if self.mode == "react":
            parts.append("constrained" if self.constrained else "free")
        parts.append("greedy" if self.k == 1 else f"sc{self.k}")
        return "/".join(parts)


def default_strategies(k: int = 5) -> list[Strategy]:
    return [
        Strategy("react", False, 1),
        Strategy("react", True, 1),
        Strategy("react", False, k),
        Strategy("react", True, k),
        Strategy("direct", False, 1),
        Strategy("direct", False, k),
    ]


def step_well_formed(text: str, registry: ToolRegistry) -> bool:
    """A final answer, or an action that parses, names a tool and validates."""
    answer, call = parse_react(text)
    if answer is not None:
        return True
    if call is None or call.error is not None or call.name not in registry.tools:
        return False
    return not _schema_errors(call.arguments, registry.tools[call.name].parameters)


@dataclass
class Outcome:
    question: str
    kind: str
    expected: str | None
    answer: str | None
    correct: bool
    steps: int = 0  # generated steps (react), over all k runs
    well_formed: int = 0
    votes: dict = field(default_factory=dict)
    transcript: str = ""


class _Recorder:
    """Wraps a policy and keeps every step it generates."""

    def __init__(self, policy: ModelPolicy) -> None:
        self.policy = policy
        self.texts: list[str] = []

    def __call__(self, prompt: str) -> str:
        text = self.policy(prompt)
        self.texts.append(text.split("Observation:", 1)[0])
        return text


def run_task(
    model,
    registry: ToolRegistry,
    task: Task,
    strategy: Strategy,
    rng: np.random.Generator,
    temperature: float = 0.8,
    guide=None,
) -> Outcome:
    """One question under one strategy (``expected`` is None for a question whose right answer
    is not known: a lookup word found in several topics)."""
    try:
        expected = expected_answer(task)
    except ValueError:
        expected = None
    temp = 0.0 if strategy.k == 1 else temperature
    answers: list[str | None] = []
    steps = well = 0
    transcript = ""
    if strategy.mode == "react":
        policy = ModelPolicy(
            model, registry, constrained=strategy.constrained, temperature=temp, rng=rng,
            guide=guide,
        )  # fmt: skip
        for _ in range(strategy.k):
            recorder = _Recorder(policy)
            result = react(
                recorder, registry, task.question, max_steps=MAX_STEPS,
                prompt_template=REACT_TEMPLATE,
            )  # fmt: skip
            answers.append(result.answer.strip() if result.answer is not None else None)
            steps += len(recorder.texts)
            well += sum(step_well_formed(t, registry) for t in recorder.texts)
            transcript = transcript or REACT_TEMPLATE.format(question=task.question) + (
                result.transcript
            )
    elif strategy.mode == "direct":
        policy = ModelPolicy(model, temperature=temp, rng=rng, stop_at_newline=True)
        prompt = DIRECT_TEMPLATE.format(question=task.question)
        for _ in range(strategy.k):
            text = policy(prompt)
            answers.append(text.strip() or None)
            transcript = transcript or prompt + text
    else:
        raise ValueError(f"run_task: mode must be 'react' or 'direct', got {strategy.mode!r}")
    answer, votes = majority_vote(answers)
    return Outcome(
        task.question, task.kind, expected, answer, expected is not None and answer == expected,
        steps, well,
        dict(votes), transcript,
    )  # fmt: skip


def evaluate_strategies(
    model,
    registry: ToolRegistry,
    tasks: list[Task],
    strategies: list[Strategy],
    seed: int = 0,
    temperature: float = 0.8,
    progress: bool = False,
) -> dict:
    """``{strategy name: summary}`` with success rates (all, per kind), well-formed step rate,
    seconds, and the per-question outcomes."""
    from tqdm import tqdm

    report = {}
    guide = step_guide(registry)  # one automaton and mask cache for every constrained run
    for strategy in strategies:
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        outcomes = [
            run_task(model, registry, t, strategy, rng, temperature, guide)
            for t in tqdm(tasks, desc=strategy.name, disable=not progress, leave=False)
        ]
        by_kind = {}
        for kind in sorted({o.kind for o in outcomes}):
            mine = [o for o in outcomes if o.kind == kind]
            by_kind[kind] = sum(o.correct for o in mine) / len(mine)
        steps = sum(o.steps for o in outcomes)
        report[strategy.name] = {
            "mode": strategy.mode,
            "constrained": strategy.constrained,
            "k": strategy.k,
            "success": sum(o.correct for o in outcomes) / len(outcomes),
            "success_by_kind": by_kind,
            "steps": steps,
            "well_formed_steps": (sum(o.well_formed for o in outcomes) / steps) if steps else None,
            "seconds": time.perf_counter() - t0,
            "outcomes": [o.__dict__ for o in outcomes],
        }
    return report
