"""Continuous batching: each request's greedy output equals running it alone."""

import numpy as np
import pytest

import tinyllm
from tinyllm.models import ModelConfig, build_model
from tinyllm.serve.engine import LLMEngine, SamplingParams


def model(arch="llama"):
    tinyllm.manual_seed(0)
    kv = dict(n_kv_head=2) if arch == "llama" else {}
    m = build_model(
        ModelConfig(arch=arch, vocab_size=40, d_model=16, n_layer=2, n_head=4, block_size=48, **kv)
    ).double()  # float64: no argmax near-ties
    return m.eval()


def alone(m, prompt, n):
    out = m.generate(tinyllm.tensor(np.array([prompt])), n, temperature=0)
    return out.data[0, len(prompt) :].tolist()


def check_invariants(engine):
    a, tables = engine.cache.allocator, engine.cache.tables
    assert sum(a.ref) == sum(len(t) for t in tables.values())
    assert a.num_free + sum(r > 0 for r in a.ref) == a.num_blocks


@pytest.mark.parametrize(
    "arch,seed,kernel", [("llama", 0, "reference"), ("gpt", 1, "reference"), ("llama", 2, "numba")]
)
def test_random_arrivals_equal_solo_runs(arch, seed, kernel):
    m = model(arch)
    rng = np.random.default_rng(seed)
    # few blocks: forces preemption by recompute; shared first tokens: prefix sharing
    common = list(rng.integers(0, 40, 8))
    jobs = []
    for _ in range(7):
        prompt = (common if rng.random() < 0.5 else []) + list(
            rng.integers(0, 40, rng.integers(1, 12))
        )
        jobs.append((int(rng.integers(0, 6)), prompt, int(rng.integers(1, 12))))
    engine = LLMEngine(m, num_blocks=14, block_size=4, kernel=kernel)
    ids, step = {}, 0
    while len(ids) < len(jobs) or engine.has_unfinished():
        for j, (arrive, prompt, n) in enumerate(jobs):
            if arrive == step and j not in ids:
                ids[j] = engine.add_request(prompt, SamplingParams(max_tokens=n, temperature=0))
        engine.step()
        check_invariants(engine)
        step += 1
    for j, (_, prompt, n) in enumerate(jobs):
        assert engine.requests[ids[j]].output == alone(m, prompt, n), j
    assert engine.cache.allocator.num_free == 14  # everything returned
    if seed == 0:
        assert engine.stats["preemptions"] > 0 and engine.stats["shared_blocks"] > 0


def test_seeded_sampling_is_reproducible_and_independent_of_batching():
    m = model()
    p = SamplingParams(max_tokens=8, temperature=1.0, top_p=0.9, seed=5)
    a = LLMEngine(m, num_blocks=40, block_size=4).generate([[1, 2, 3]], p)[0].output
    b = LLMEngine(m, num_blocks=40, block_size=4).generate([[7, 7], [1, 2, 3], [9]], p)[1].output
    assert a == b


def test_stop_string_and_errors():
    m = model()
    engine = LLMEngine(m, num_blocks=40, block_size=4, token_bytes=lambda i: bytes([97 + i % 26]))
    full = engine.generate([[1, 2]], SamplingParams(max_tokens=10, temperature=0))[0]
    stop = full.text[3:5]
    cut = engine.generate([[1, 2]], SamplingParams(max_tokens=10, temperature=0, stop=[stop]))[0]
    assert cut.finish_reason == "stop" and cut.text == full.text[: full.text.find(stop)]
    with pytest.raises(ValueError, match="exceeds the context length"):
        engine.add_request([1] * 40, SamplingParams(max_tokens=20))
    with pytest.raises(ValueError, match="token ids"):
        engine.add_request([99], SamplingParams(max_tokens=2))
