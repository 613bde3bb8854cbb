"""Tools, ReAct and self-consistency driven by scripted policies (no model needed)."""

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyllm.agents.react import react
from tinyllm.agents.self_consistency import extract_answer, majority_vote, self_consistency
from tinyllm.agents.tools import ToolCall, ToolRegistry, parse_react, parse_tool_calls
from tinyllm.agents.validate import validate

ADD_SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
    "required": ["a", "b"],
    "additionalProperties": False,
}


def _registry() -> ToolRegistry:
    reg = ToolRegistry()
    reg.register("add", "Add two numbers.", ADD_SCHEMA, lambda a, b: a + b)

    @reg.tool(
        "lookup",
        "Look up a fact.",
        {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]},
    )
    def lookup(key):
        return {"capital of france": "Paris"}[key.lower()]

    return reg


def _scripted(outputs):
    """A policy that returns the next scripted text and records the prompts it saw."""
    prompts = []

    def generate(prompt):
        prompts.append(prompt)
        return outputs[len(prompts) - 1]

    return generate, prompts


def test_react_uses_tool_results_and_stops_on_final_answer():
    generate, prompts = _scripted(
        [
            'Thought: add them\nAction: add\nAction Input: {"a": 2, "b": 40}\nObservation: 1000',
            "Thought: done\nFinal Answer: 42",
        ]
    )
    result = react(generate, _registry(), "What is 2 + 40?")
    assert result.answer == "42" and result.stop_reason == "final_answer" and result.steps == 2
    # the model's invented observation was cut; the tool's real one reached the next prompt
    assert "Observation: 42" in prompts[1] and "1000" not in prompts[1]
    assert result.calls == [("add", {"a": 2, "b": 40}, True)]


@pytest.mark.parametrize(
    "action, expected",
    [
        ('Action: add\nAction Input: {"a": 1}', "'b' is a required property"),
        ('Action: add\nAction Input: {"a": 1, "b": "x"}', "is not of type 'number'"),
        ('Action: add\nAction Input: {"a": 1, "b": 2, "c": 3}', "Additional properties"),
        ('Action: mul\nAction Input: {"a": 1}', "unknown tool 'mul'"),
        ("Action: add\nAction Input: {a: 1}", "not JSON"),
        ("Action: add", "no 'Action Input:'"),
        ('Action: lookup\nAction Input: {"key": "nowhere"}', "raised KeyError"),
        ("I am thinking", "no action found"),
    ],
)
def test_errors_come_back_as_observations(action, expected):
    generate, prompts = _scripted([action, "Final Answer: gave up"])
    result = react(generate, _registry(), "q")
    assert result.stop_reason == "final_answer"
    observation = prompts[1].rsplit("Observation:", 1)[1]
    assert expected in observation and observation.lstrip().startswith("Error")


def test_repeated_action_is_detected_and_stops():
    call = 'Action: add\nAction Input: {"b": 2, "a": 1}'
    generate, prompts = _scripted([call, call.replace('"b": 2, "a": 1', '"a": 1, "b": 2'), call])
    result = react(generate, _registry(), "q", max_steps=10, max_repeats=2)
    assert result.stop_reason == "repeated_action" and result.steps == 3
    assert "already called" in prompts[2]
    assert len(result.calls) == 1  # the repeats were not re-run


def test_step_budget():
    generate, _ = _scripted([f"Thought: {i}" for i in range(3)])
    result = react(generate, _registry(), "q", max_steps=3)
    assert result.stop_reason == "max_steps" and result.answer is None and result.steps == 3
    with pytest.raises(ValueError, match="max_steps"):
        react(generate, _registry(), "q", max_steps=0)


def test_parsers():
    assert parse_react("Thought: x\nFinal Answer: Paris\n") == ("Paris", None)
    answer, call = parse_react('Action:  lookup \nAction Input: {"key": "k"} trailing')
    assert answer is None and call == ToolCall("lookup", {"key": "k"})
    calls = parse_tool_calls(
        'x <tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call> y '
        "<tool_call>{bad}</tool_call><tool_call>[1]</tool_call>"
    )
    assert calls[0] == ToolCall("add", {"a": 1, "b": 2})
    assert calls[1].error and calls[2].error
    reg = _registry()
    assert reg.call(calls[0]).content == "3" and not reg.call(calls[1]).ok
    with pytest.raises(ValueError, match="already registered"):
        reg.register("add", "", ADD_SCHEMA, lambda a, b: 0)


# ------------------------------------------------------------ own validator vs jsonschema
_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.sampled_from([1.0, 2.5])
    | st.text("ab", max_size=3),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("xyz"), inner, max_size=3)
    ),
    max_leaves=6,
)
_SCHEMA = {
    "type": "object",
    "properties": {
        "x": {"type": "integer"},
        "y": {"type": "array", "items": {"type": "string", "maxLength": 2}, "maxItems": 2},
        "z": {"enum": [None, True, 1, "a"]},
    },
    "required": ["x"],
}


@settings(max_examples=300)
@given(_VALUES)
def test_own_validator_agrees_with_jsonschema(doc):
    jsonschema = pytest.importorskip("jsonschema")
    for schema in (_SCHEMA, _SCHEMA["properties"]["y"], {"type": "number"}, {"const": [1, "a"]}):
        expected = jsonschema.Draft202012Validator(schema).is_valid(doc)
        assert (validate(doc, schema) == []) == expected, (doc, schema)


# ------------------------------------------------------------ self-consistency
def test_self_consistency_majority_vote():
    rng = random.Random(0)

    def noisy(prompt):  # right (42) with probability 0.4, else one of many wrong answers
        assert prompt.endswith("Let's think step by step.\n")
        answer = 42 if rng.random() < 0.4 else rng.randint(0, 100)
        return f"Some reasoning.\nAnswer: {answer}"

    wins_1 = sum(self_consistency(noisy, "q", k=1).answer == "42" for _ in range(200))
    wins_15 = sum(self_consistency(noisy, "q", k=15).answer == "42" for _ in range(200))
    assert wins_15 > wins_1 + 60  # plurality over 15 samples beats one sample (0.4)
    assert majority_vote(["a", "b", None, "b", "a"])[0] == "b"  # first to reach 2
    assert majority_vote([None, None])[0] is None
    assert extract_answer("x = 3, so 7") == "7" and extract_answer("Answer: Paris\nmore") == "Paris"
    assert json.loads(json.dumps(self_consistency(noisy, "q", k=3).votes))


# ------------------------------------------------------------ reflection
def test_reflexion_feeds_failures_back_and_stops_on_success():
    from tinyllm.agents.reflection import reflexion

    def policy(prompt):  # answers 7 until its memory says 7 was wrong, then 12
        return "12" if "'7'" in prompt else "7"

    def check(output):
        return output == "12", f"{output} is not 3 * 4"

    result = reflexion(policy, check, "What is 3 * 4?", max_trials=3)
    assert result.output == "12" and result.trials == 2 and result.outputs == ["7", "12"]
    assert "7 is not 3 * 4" in result.memory[0]
    # without the memory the same policy never succeeds: the loop must feed it back
    stuck = reflexion(lambda p: "7", check, "What is 3 * 4?", max_trials=4, memory_size=2)
    assert stuck.output is None and stuck.trials == 4 and len(stuck.memory) == 4
    with pytest.raises(ValueError, match="max_trials"):
        reflexion(policy, check, "q", max_trials=0)
