"""The fine-tuned agent: masked loss, the policy's decoding, and a tiny fine-tune + ReAct run.

The success rate of a tiny run is not asserted (a few steps teach nothing); the invariant is:
under constrained decoding every step is complete, in the step grammar (checked with Python's
``re``), and every action parses and validates against its tool's schema (``jsonschema``).
"""

import re

import jsonschema
import numpy as np
import pytest

import tinyllm
from tinyllm.agents.evaluate import MAX_STEPS, Strategy, run_task
from tinyllm.agents.finetune import (
    IGNORE,
    AgentTrainConfig,
    build_batch,
    finetune,
    load_agent,
    masked_lm_loss,
    save_agent,
)
from tinyllm.agents.policy import ModelPolicy, step_regex
from tinyllm.agents.react import react
from tinyllm.agents.toolkit import agent_registry
from tinyllm.agents.tools import parse_react
from tinyllm.agents.traces import EOS, REACT_TEMPLATE, held_out_tasks, sample_tasks

TINY = dict(steps=3, batch_size=4, d_model=32, n_layer=1, n_head=2, warmup=1)


@pytest.fixture(scope="module")
def registry():
    return agent_registry()


@pytest.fixture(scope="module")
def tiny():
    result = finetune(AgentTrainConfig(seed=0, **TINY), progress=False, echo=None)
    return result


def test_masked_loss_matches_numpy(tiny, registry):
    from tinyllm.agents.traces import training_example

    tasks = sample_tasks(3, np.random.default_rng(5))
    x, y = build_batch([training_example(t, registry, d) for t, d in zip(tasks, [0, 1, 0])])
    assert (y != IGNORE).sum() > 0 and (y == IGNORE).sum() > 0
    loss = masked_lm_loss(tiny.model, x, y).item()
    with tinyllm.no_grad():
        logits = tiny.model(tinyllm.tensor(x)).numpy().astype(np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    keep = y != IGNORE
    reference = -logp[keep, y[keep]].mean()
    assert abs(loss - reference) < 1e-5 * max(1.0, reference)  # float32 logits, float64 ref


def test_fine_tuning_lowers_the_loss(tiny):
    assert len(tiny.losses) == TINY["steps"] and tiny.losses[-1] < tiny.losses[0]


def test_policy_greedy_equals_generate_and_reuses_its_cache(tiny):
    model = tiny.model
    prompt = "Question: What is 12 * 34?\n"
    policy = ModelPolicy(model, max_new_tokens=24)
    out = policy(prompt)
    ids = list(prompt.encode())
    ref = model.generate(tinyllm.tensor(np.array([ids])), max_new_tokens=25, temperature=0)
    ref = ref.numpy()[0, len(ids) :].tolist()
    got = policy.last_ids
    assert got == ref[: len(got)]
    if policy.last_stop == "eos":
        assert ref[len(got)] == EOS
    longer = prompt + out + "Observation: 408\n"
    warm = policy(longer)  # reuses the cached prefix
    assert warm == ModelPolicy(model, max_new_tokens=24)(longer)


def test_constrained_react_steps_always_parse_and_validate(tiny, registry):
    pattern = re.compile(step_regex(registry), re.ASCII)
    for temperature in (0.0, 1.5):
        policy = ModelPolicy(
            tiny.model, registry, constrained=True, temperature=temperature,
            rng=np.random.default_rng(7),
        )  # fmt: skip
        steps = []

        def generate(prompt, policy=policy, steps=steps):
            text = policy(prompt)
            assert policy.last_stop == "accept"
            steps.append(text)
            return text

        for task in held_out_tasks(1):
            react(generate, registry, task.question, max_steps=MAX_STEPS,
                  prompt_template=REACT_TEMPLATE)  # fmt: skip
        assert steps
        for text in steps:
            assert pattern.fullmatch(text), text
            answer, call = parse_react(text)
            if answer is None:
                assert call is not None and call.error is None
                jsonschema.validate(call.arguments, registry.tools[call.name].parameters)


def test_run_task_counts_well_formed_steps(tiny, registry):
    task = held_out_tasks(1)[0]
    outcome = run_task(tiny.model, registry, task, Strategy("react", True, 2),
                       np.random.default_rng(0))  # fmt: skip
    assert outcome.steps >= 2 and outcome.well_formed == outcome.steps
    direct = run_task(tiny.model, registry, task, Strategy("direct", False, 1),
                      np.random.default_rng(0))  # fmt: skip
    assert direct.transcript.startswith("Question: " + task.question)


def test_save_and_load_give_the_same_model(tiny, tmp_path):
    path = save_agent(tmp_path / "agent.safetensors", tiny.model, tiny.config)
    model, config = load_agent(path)
    assert config == tiny.config
    x = tinyllm.tensor(np.array([list(b"Question: What is 2 + 2?\n")]))
    with tinyllm.no_grad():
        np.testing.assert_array_equal(model(x).numpy(), tiny.model(x).numpy())
