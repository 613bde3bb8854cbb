"""The RLHF data pipeline: padding, masked forward, log-probs, generation, task, heads."""

from __future__ import annotations

import numpy as np
import pytest

import tinyllm
from tinyllm.alignment.models import CausalLMWithValueHead, RewardModel
from tinyllm.alignment.pipeline import (
    build_batch,
    generate_completions,
    lm_forward,
    pad_sequences,
    policy_logprobs,
    sequence_logprobs,
)
from tinyllm.alignment.tasks import SentenceEndTask, sentence_end_position, sentence_end_reward
from tinyllm.models import ModelConfig, build_model


def tiny(arch="llama", seed=0):
    tinyllm.manual_seed(seed)
    model = build_model(
        ModelConfig(arch=arch, vocab_size=256, d_model=32, n_layer=2, n_head=4, block_size=32)
    )
    model.eval()
    return model


def test_pad_sequences_left_and_right():
    ids, mask = pad_sequences([[5, 6, 7], [8]], pad_id=0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = pad_sequences([[5, 6, 7], [8]], pad_id=0, side="right")
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match="side"):
        pad_sequences([[1]], side="middle")


def test_build_batch_layout():
    b = build_batch([[1, 2, 3], [4]], [[9], [7, 8]])
    assert b.input_ids.tolist() == [[1, 2, 3, 9, 0], [0, 0, 4, 7, 8]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 0], [0, 0, 1, 1, 1]]
    assert b.response_mask.tolist() == [[0, 0, 0, 1, 0], [0, 0, 0, 1, 1]]
    assert b.prompt_length == 3 and b.response_lengths.tolist() == [1, 2]
    assert b.label_mask.tolist() == [[0, 0, 1, 0], [0, 0, 1, 1]]


@pytest.mark.parametrize("arch", ["llama", "gpt"])
def test_lm_forward_without_padding_is_the_model(arch):
    model = tiny(arch)
    idx = np.random.default_rng(0).integers(0, 256, (2, 9))
    with tinyllm.no_grad():
        a = model(tinyllm.tensor(idx)).numpy()
        b = lm_forward(model, idx).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gpt"])
def test_padding_does_not_change_logprobs(arch):
    model = tiny(arch, seed=1)
    rng = np.random.default_rng(1)
    prompts = [rng.integers(0, 256, n).tolist() for n in (6, 3, 5)]
    completions = [rng.integers(0, 256, n).tolist() for n in (2, 5, 4)]
    with tinyllm.no_grad():
        batched = policy_logprobs(model, build_batch(prompts, completions)).numpy().sum(1)
        for i in range(3):
            alone = build_batch([prompts[i]], [completions[i]])
            assert alone.attention_mask.all()  # no padding at all
            single = policy_logprobs(model, alone).numpy().sum()
            assert abs(single - batched[i]) < 1e-4, (arch, i)
            # and by hand: log-softmax of model(idx) at the completion's positions
            ids = np.asarray(prompts[i] + completions[i])
            z = model(tinyllm.tensor(ids[None, :-1])).numpy()[0].astype(np.float64)
            logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
            P = len(prompts[i])
            manual = sum(logp[P - 1 + t, completions[i][t]] for t in range(len(completions[i])))
            assert abs(manual - single) < 1e-4


def test_policy_logprobs_backward_reaches_the_weights():
    model = tiny()
    model.train()
    b = build_batch([[1, 2, 3], [4, 5]], [[6, 7], [8]])
    policy_logprobs(model, b).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert np.abs(model.lm_head.weight.grad.numpy()).sum() > 0


def test_generate_completions_groups_lengths_and_stops():
    model = tiny()
    prompts = [[65, 66, 67], [68, 69], [70, 71, 72]]
    stop = lambda ids: 2 if len(ids) >= 2 else None  # noqa: E731
    a = generate_completions(model, prompts, 5, np.random.default_rng(3), stop=stop)
    b = generate_completions(model, prompts, 5, np.random.default_rng(3), stop=stop)
    assert a == b and all(len(c) == 2 for c in a)
    full = generate_completions(model, prompts, 5, np.random.default_rng(3))
    assert all(len(c) == 5 for c in full)
    # the first two tokens of each are the same draws (same rng stream)
    assert [c[:2] for c in full] == a


def test_sentence_end_reward_and_task_prompts():
    enc = lambda s: list(s.encode())  # noqa: E731
    assert sentence_end_position(enc("and so on. Next")) == 11
    assert sentence_end_position(enc("os.path is")) is None
    assert sentence_end_position(enc("value 3.14\n")) is None
    assert sentence_end_reward(enc("yes!\nok"), 32) == 1.0
    assert sentence_end_reward(enc("x" * 40 + ". "), 32) == 0.0  # too late
    assert sentence_end_reward(enc("abc."), 32) == 0.0  # no whitespace after: not an end
    assert sentence_end_reward(enc(". and more"), 32, min_bytes=8) == 0.0  # too early
    assert sentence_end_reward(enc("1234567. x"), 32, min_bytes=8) == 1.0  # the '.' is byte 8
    assert sentence_end_reward(enc("x" * 31 + ". "), 32, min_bytes=8) == 1.0  # '.' is byte 32
    assert sentence_end_reward(enc("x" * 32 + ". "), 32, min_bytes=8) == 0.0
    task = SentenceEndTask.from_corpus(prompt_bytes=24, max_bytes=16)
    prompts = task.prompts(20, np.random.default_rng(0))
    assert all(len(p) == 24 and sentence_end_position(p) is None for p in prompts)
    held = task.eval_prompts(10)
    assert all(bytes(p) in task.eval_text for p in held)


def test_reward_model_reads_the_last_real_token():
    rm = RewardModel(tiny())
    b1 = build_batch([[1, 2, 3]], [[4, 5]])
    b2 = build_batch([[1, 2, 3], [9]], [[4, 5], [6, 7, 8, 9, 10]])  # row 0 now has right padding
    b3 = build_batch([[1, 2, 3], [9, 9, 9, 9, 9]], [[4, 5], [6]])  # row 0 now has left padding
    with tinyllm.no_grad():
        r1 = rm.score_batch(b1).numpy()[0]
        r2 = rm.score_batch(b2).numpy()[0]
        r3 = rm.score_batch(b3).numpy()[0]
    assert abs(r1 - r2) < 1e-5 and abs(r1 - r3) < 1e-5
    # the reward depends on the completion
    with tinyllm.no_grad():
        r4 = rm.score_batch(build_batch([[1, 2, 3]], [[4, 6]])).numpy()[0]
    assert abs(r4 - r1) > 1e-6


def test_value_head_model_shares_the_policy():
    lm = tiny()
    vm = CausalLMWithValueHead(lm)
    b = build_batch([[1, 2, 3]], [[4, 5]])
    with tinyllm.no_grad():
        logp, values, _ = vm.batch_forward(b)
        np.testing.assert_allclose(logp.numpy(), policy_logprobs(lm, b).numpy(), atol=1e-6)
    assert values.shape == (1, 4) and np.all(values.numpy() == 0)  # zero-initialized head
    names = {n for n, _ in vm.named_parameters()}
    assert "v_head.weight" in names and any(n.startswith("pretrained_model.") for n in names)


def test_sequence_logprobs_of_a_policy_gradchecks_in_float64():
    model = tiny()
    b = build_batch([[1, 2, 3], [4]], [[6, 7], [8, 9, 10]])
    with tinyllm.no_grad():
        logits = lm_forward(model, b.input_ids[:, :-1], b.attention_mask[:, :-1]).numpy()
    x = tinyllm.tensor(logits.astype(np.float64), requires_grad=True)
    assert tinyllm.gradcheck(lambda z: sequence_logprobs(z, b.labels, b.label_mask, "sum"), [x])
