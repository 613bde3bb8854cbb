"""Parallel samples (n > 1) by copy-on-write: one prefill, forked block tables, a block copied
exactly when a sample first writes into a shared partial block; the samples equal
independent runs; every block comes back."""

import numpy as np
import pytest

import tinyllm
from tinyllm.models import ModelConfig, build_model
from tinyllm.serve.engine import LLMEngine, SamplingParams


@pytest.fixture(scope="module")
def model():
    tinyllm.manual_seed(0)
    m = build_model(
        ModelConfig(
            arch="llama", vocab_size=40, d_model=16, n_layer=2, n_head=4, n_kv_head=2, block_size=48
        )  # fmt: skip
    ).double()  # float64: no argmax near-ties
    return m.eval()


def invariants(engine):
    a, tables = engine.cache.allocator, engine.cache.tables
    assert sum(a.ref) == sum(len(t) for t in tables.values())
    assert a.num_free + sum(r > 0 for r in a.ref) == a.num_blocks
    assert set(a.free).isdisjoint(b for t in tables.values() for b in t)


def refs(engine, rid):
    return [engine.cache.allocator.ref[b] for b in engine.cache.tables[rid]]


def test_fork_shares_then_copies_the_partial_block_on_the_first_write(model):
    S, n = 4, 3
    engine = LLMEngine(model, num_blocks=20, block_size=S, prefix_sharing=False)
    rid = engine.add_request([1, 2, 3, 4, 5, 6], SamplingParams(max_tokens=5, n=n, seed=3))
    ids = [r.id for r in engine.samples(rid)]
    assert ids == [rid, (rid, 1), (rid, 2)]
    engine.step()  # prefill sample 0 once, fork the others: nothing copied yet
    invariants(engine)
    assert engine.stats["batched_tokens"] == 6 and engine.stats["forks"] == n - 1
    assert engine.cache.copies == 0 and engine.cache.allocator.num_free == 20 - 2
    tables = [engine.cache.tables[i] for i in ids]
    assert tables[0] == tables[1] == tables[2] and refs(engine, rid) == [n, n]
    full, partial = tables[0]
    engine.step()  # each sample writes position 6, inside the shared partial block
    invariants(engine)
    assert engine.cache.copies == n - 1  # the last writer keeps the original
    tables = [engine.cache.tables[i] for i in ids]
    assert all(t[0] == full for t in tables) and engine.cache.allocator.ref[full] == n
    assert len({t[1] for t in tables}) == n and partial in {t[1] for t in tables}
    for t in tables:  # each copy carried the prompt's slots 4, 5 of the block
        for layer in range(2):
            np.testing.assert_array_equal(engine.cache.K[layer, t[1], :, :2],
                                          engine.cache.K[layer, partial, :, :2])  # fmt: skip
    while engine.has_unfinished():
        engine.step()
        invariants(engine)
    assert engine.cache.copies == n - 1  # no further copies: later blocks are private
    assert engine.cache.allocator.num_free == 20 and not engine.cache.tables


def test_a_prompt_of_whole_blocks_is_never_copied(model):
    engine = LLMEngine(model, num_blocks=20, block_size=4)
    rid = engine.add_request(list(range(1, 9)), SamplingParams(max_tokens=6, n=4, seed=0))
    while engine.has_unfinished():
        engine.step()
        invariants(engine)
    assert engine.cache.copies == 0 and engine.stats["forks"] == 3
    assert engine.stats["batched_tokens"] == 8 + 4 * 5  # one prefill, then 4 decode streams
    assert len(engine.samples(rid)) == 4 and engine.cache.allocator.num_free == 20


@pytest.mark.parametrize("num_blocks", [40, 9])  # 9: too few for 4 samples, preemption
def test_samples_equal_independent_runs(model, num_blocks):
    prompt = [5, 1, 7, 2, 9, 3, 3]
    p = SamplingParams(max_tokens=10, temperature=1.0, top_p=0.95, seed=11, n=4)
    engine = LLMEngine(model, num_blocks=num_blocks, block_size=4)
    other = engine.add_request([8, 8, 8], SamplingParams(max_tokens=6, temperature=0))
    rid = engine.add_request(prompt, p)
    while engine.has_unfinished():
        engine.step()
        invariants(engine)
    got = [r.output for r in engine.samples(rid)]
    want = []
    for i in range(4):  # sample i alone, with seed 11 + i, in an engine of its own
        solo = SamplingParams(**{**p.__dict__, "seed": 11 + i, "n": 1})
        want.append(
            LLMEngine(model, num_blocks=40, block_size=4).generate([prompt], solo)[0].output
        )
    assert got == want
    assert len({tuple(o) for o in got}) > 1  # the samples differ (they are not one stream)
    alone = LLMEngine(model, num_blocks=40, block_size=4)
    assert engine.requests[other].output == alone.generate([[8, 8, 8]], SamplingParams(
        max_tokens=6, temperature=0))[0].output  # fmt: skip
    assert engine.cache.allocator.num_free == num_blocks
    if num_blocks == 9:
        assert engine.stats["preemptions"] > 0


def test_greedy_samples_equal_generate_and_n_is_checked(model):
    engine = LLMEngine(model, num_blocks=30, block_size=4, max_num_seqs=4)
    out = engine.generate([[3, 4, 5]], SamplingParams(max_tokens=7, temperature=0, n=3))
    solo = model.generate(tinyllm.tensor(np.array([[3, 4, 5]])), 7, temperature=0)
    assert [r.output for r in out] == [solo.data[0, 3:].tolist()] * 3
    with pytest.raises(ValueError, match=r"LLMEngine.add_request: n must be an int in \[1, max"):
        engine.add_request([1], SamplingParams(n=5))
    with pytest.raises(ValueError, match="n must be"):
        engine.add_request([1], SamplingParams(n=0))
    for bad in (-1, 2.5):
        with pytest.raises(ValueError, match="LLMEngine.add_request: logprobs must be None or"):
            engine.add_request([1], SamplingParams(logprobs=bad))
