"""ReAct (Yao et al., 2023): interleave Thought / Action / Observation until a final answer.

The loop is driven by any ``generate(prompt: str) -> str``: a tinyllm model, a remote API, or
a scripted policy in the tests. Each step:

1. ``text = generate(prompt + transcript)``; the text is cut at ``Observation:``;
2. ``Final Answer: ...`` ends the loop (``stop_reason = "final_answer"``);
3. ``Action: name`` + ``Action Input: {json}`` runs the tool through the registry; its result,
   or its error (unknown tool, invalid arguments, an exception), is appended as
   ``Observation: ...``;
4. text with neither gets a format reminder as its observation.

Stops: a final answer; ``max_steps`` generations (``"max_steps"``); the same call (name and
arguments) issued again: it is not re-run, the model is told so, and after ``max_repeats``
such repeats the loop stops (``"repeated_action"``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from tinyllm.agents.tools import ToolRegistry, parse_react

PROMPT = """Answer the question. You can use these tools:
{tools}

Use this format:
Thought: what to do next
Action: a tool name
Action Input: the arguments as a JSON object
Observation: the tool's result (written for you)
... (Thought/Action/Action Input/Observation may repeat)
Thought: I know the answer
Final Answer: the answer

Question: {question}
"""


@dataclass
class ReActResult:
    answer: str | None
    stop_reason: str  # "final_answer" | "max_steps" | "repeated_action"
    steps: int
    transcript: str
    calls: list[tuple[str, dict, bool]] = field(default_factory=list)  # (name, args, ok)


def react(
    generate: Callable[[str], str],
    registry: ToolRegistry,
    question: str,
    max_steps: int = 8,
    max_repeats: int = 2,
    prompt_template: str = PROMPT,
) -> ReActResult:
    """Run the ReAct loop; see the module docstring."""
    if max_steps < 1:
        raise ValueError(f"react: max_steps must be >= 1, got {max_steps}")
    prompt = prompt_template.format(tools=registry.describe(), question=question)
    transcript = ""
    seen: set[str] = set()
    repeats = 0
    calls: list[tuple[str, dict, bool]] = []
    for step in range(1, max_steps + 1):
        text = generate(prompt + transcript).split("Observation:", 1)[0].rstrip()
        transcript += text + "\n"
        answer, call = parse_react(text)
        if answer is not None:
            return ReActResult(answer, "final_answer", step, transcript, calls)
        if call is None:
            observation = (
                "Error: write 'Action:' and 'Action Input:' or 'Final Answer:' (no action found)"
            )
        else:
            key = json.dumps([call.name, call.arguments], sort_keys=True)
            if call.error is None and key in seen:
                repeats += 1
                if repeats >= max_repeats:
                    transcript += "Observation: repeated action; stopping\n"
                    return ReActResult(None, "repeated_action", step, transcript, calls)
                observation = (
                    "Error: you already called this tool with these arguments; "
                    "use the earlier observation or try something else"
                )
            else:
                seen.add(key)
                result = registry.call(call)
                if call.error is None:
                    calls.append((call.name, call.arguments, result.ok))
                observation = result.content
        transcript += f"Observation: {observation}\n"
    return ReActResult(None, "max_steps", max_steps, transcript, calls)
