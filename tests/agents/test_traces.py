"""Synthetic tool-use traces: the loop parses them, their answers are right (checked without the
tools), the held-out split is disjoint, the loss mask covers exactly what the model writes."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyllm.agents.policy import step_regex
from tinyllm.agents.react import react
from tinyllm.agents.regex import RegexAutomaton
from tinyllm.agents.toolkit import agent_registry, calc
from tinyllm.agents.traces import (
    EOS,
    REACT_TEMPLATE,
    held_out_tasks,
    is_held_out_operand,
    is_held_out_word,
    react_segments,
    sample_tasks,
    training_example,
)
from tinyllm.data.corpus import default_corpus_topics


@pytest.fixture(scope="module")
def registry():
    return agent_registry()


def _independent_answer(question: str) -> str:
    """The right answer from the question text alone: Python's integers, or the one help
    topic whose raw text contains the word (no BM25, no tool)."""
    m = re.fullmatch(r"What is (\d+) ([+*-]) (\d+)\?", question)
    if m:
        a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
        return str(a + b if op == "+" else a - b if op == "-" else a * b)
    word = re.fullmatch(r"Which help topic mentions '([a-z]+)'\?", question).group(1)
    topics = [
        t
        for t, text in default_corpus_topics().items()
        if re.search(r"(?<![a-z])" + word + r"(?![a-z])", text.lower())
    ]
    assert len(topics) == 1, (word, topics)
    return topics[0]


def _model_parts(segments):
    """The texts the model writes between observations, as the loop receives them."""
    parts, current = [], ""
    for text, trained in segments:
        if trained:
            current += text
        elif current:
            parts.append(current)
            current = ""
    parts.append(current)
    return [p.split("Observation:", 1)[0] for p in parts if p]


def test_traces_replay_through_the_react_loop_with_right_answers(registry):
    rng = np.random.default_rng(0)
    tasks = sample_tasks(60, rng) + held_out_tasks(10)
    for task in tasks:
        segments, answer = react_segments(task, registry)
        outputs = iter(_model_parts(segments))
        result = react(lambda prompt: next(outputs), registry, task.question,
                       prompt_template=REACT_TEMPLATE)  # fmt: skip
        assert result.stop_reason == "final_answer"
        assert [ok for _, _, ok in result.calls] == [True]
        # the loop's transcript is the trace byte for byte (what the model was trained on)
        rendered = "".join(text for text, _ in segments)
        assert REACT_TEMPLATE.format(question=task.question) + result.transcript == rendered
        assert result.answer == answer == _independent_answer(task.question)


def test_held_out_questions_are_disjoint_from_training():
    held = held_out_tasks(20)
    assert len({t.question for t in held}) == len(held) == 40
    training = sample_tasks(3000, np.random.default_rng(1))
    train_questions = {t.question for t in training}
    assert not train_questions & {t.question for t in held}
    for t in training:
        if t.kind == "calc":
            assert not any(is_held_out_operand(int(n)) for n in re.findall(r"\d+", t.question))
        else:
            assert not is_held_out_word(t.arguments["query"])
    for t in held:
        if t.kind == "calc":
            assert all(is_held_out_operand(int(n)) for n in re.findall(r"\d+", t.question))
        else:
            assert is_held_out_word(t.arguments["query"])


def test_loss_mask_covers_the_model_text_and_the_eos(registry):
    task = sample_tasks(1, np.random.default_rng(2))[0]
    segments, answer = react_segments(task, registry)
    ids, trained = training_example(task, registry, direct=False)
    assert ids[-1] == EOS and trained[-1]
    text = bytes(int(i) for i in ids[:-1][trained[:-1]]).decode()
    assert text == "".join(t for t, tr in segments if tr)
    assert "Observation:" in text and "Question:" not in text
    assert text.endswith(f"Final Answer: {answer}\n")
    ids, trained = training_example(task, registry, direct=True)
    assert bytes(int(i) for i in ids[:-1][trained[:-1]]).decode() == f" {answer}\n"


def test_every_trace_step_is_in_the_step_grammar(registry):
    automaton = RegexAutomaton(step_regex(registry))
    pattern = re.compile(step_regex(registry), re.ASCII)
    for task in sample_tasks(40, np.random.default_rng(3)):
        segments, _ = react_segments(task, registry)
        for part in _model_parts(segments):
            step = part.rstrip("\n") + "\n"
            assert automaton.fullmatch(step) and pattern.fullmatch(step), step
    bad = 'Thought: x\nAction: calc\nAction Input: {"expr": 3}\n'
    assert not automaton.fullmatch(bad) and not pattern.fullmatch(bad)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.integers(-999, 999).map(str),
        lambda inner: st.tuples(inner, st.sampled_from(["+", "-", "*"]), inner).map(
            lambda t: f"({t[0]}{t[1]}{t[2]})"
        ),
        max_leaves=6,
    )
)
def test_calc_matches_python_arithmetic(expr):
    if len(expr) <= 40:
        assert calc(expr) == str(eval(expr))  # the oracle: Python on a generated expression


@pytest.mark.parametrize(
    "expr", ["__import__('os')", "a+1", "2**10", "1.5*2", "(1).real", "[1]", "1;2", "x" * 41]
)
def test_calc_rejects_anything_but_integer_arithmetic(expr):
    with pytest.raises(ValueError):
        calc(expr)


def test_tool_errors_become_observations(registry):
    from tinyllm.agents.tools import ToolCall

    bad = registry.call(ToolCall("calc", {"expr": "2**3"}))
    assert not bad.ok and "unsupported" in bad.content
    invalid = registry.call(ToolCall("lookup", {"query": "q" * 31}))
    assert not invalid.ok and "invalid arguments" in invalid.content
