"""Beam search: exhaustive search when beams cover every prefix; one beam is greedy."""

import itertools

import numpy as np
import pytest

import tinyllm
from tinyllm.generation.beam import beam_search, model_beam_search
from tinyllm.models import ModelConfig, build_model


class Toy:
    """Logits as a fixed random function of the last two tokens (a trigram table)."""

    def __init__(self, V, seed=0):
        self.table = np.random.default_rng(seed).normal(size=(V + 1, V + 1, V)) * 2
        self.V = V

    def logits(self, hist):
        a = hist[-2] if len(hist) > 1 else self.V
        return self.table[a, hist[-1]]

    def prefill(self, tokens):
        self.hist = [list(r) for r in tokens]
        return np.stack([self.logits(h) for h in self.hist])

    def step(self, tokens):
        for h, t in zip(self.hist, tokens):
            h.append(int(t))
        return np.stack([self.logits(h) for h in self.hist])

    def reorder(self, index):
        self.hist = [list(self.hist[i]) for i in index]


def logp_of(toy, prompt, seq):
    hist, total = list(prompt), 0.0
    for v in seq:
        z = toy.logits(hist)
        total += z[v] - np.log(np.exp(z - z.max()).sum()) - z.max()
        hist.append(v)
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_enough_beams_find_the_exhaustive_best(seed):
    V, L, prompt = 4, 3, [1, 2]
    toy = Toy(V, seed)
    best = max(itertools.product(range(V), repeat=L), key=lambda s: logp_of(toy, prompt, s))
    out = beam_search(toy, prompt, num_beams=V ** (L - 1), max_new_tokens=L, num_return_sequences=3)
    assert out[0][0] == list(best)
    np.testing.assert_allclose(out[0][1], logp_of(toy, prompt, best) / L, rtol=1e-12)
    assert out[0][1] >= out[1][1] >= out[2][1]


def test_eos_and_length_penalty():
    # token 0 is EOS; after the prompt, EOS has p = .4, token 1 .6 then EOS certain-ish
    class Two(Toy):
        def logits(self, hist):
            if hist[-1] == 1:
                return np.log([0.9, 0.05, 0.05])
            return np.log([0.4, 0.6 - 1e-9, 1e-9])

    toy = Two(3)
    # scores: [0] -> log .4 / 1 = -0.916;  [1, 0] -> (log .6 + log .9) / 2 = -0.308
    out = beam_search(
        toy,
        [2],
        num_beams=2,
        max_new_tokens=4,
        eos_token_id=0,
        num_return_sequences=2,
        early_stopping=True,
    )
    assert out[0][0] == [1, 0] and out[1][0] == [0]
    np.testing.assert_allclose(out[0][1], (np.log(0.6 - 1e-9) + np.log(0.9)) / 2, rtol=1e-9)
    # a strong negative length penalty favours the shorter hypothesis: score * L ** 2
    out = beam_search(
        toy,
        [2],
        num_beams=2,
        max_new_tokens=4,
        eos_token_id=0,
        length_penalty=-2.0,
        early_stopping=True,
    )
    assert out[0][0] == [0]


def test_one_beam_is_greedy_on_a_model():
    tinyllm.manual_seed(0)
    m = build_model(
        ModelConfig(arch="llama", vocab_size=20, d_model=16, n_layer=1, n_head=2, block_size=32)
    ).double()
    prompt = [3, 4, 5]
    greedy = m.generate(tinyllm.tensor(np.array([prompt])), 10, temperature=0).data[0, 3:]
    assert model_beam_search(m, prompt, 1, 10)[0][0] == greedy.tolist()
    four = model_beam_search(m, prompt, 4, 10, num_return_sequences=4)
    assert len(four) == 4 and len({tuple(s) for s, _ in four}) == 4
    with pytest.raises(ValueError, match="num_return_sequences"):
        model_beam_search(m, prompt, 2, 3, num_return_sequences=3)


def test_generate_applies_logits_processors():
    from tinyllm.generation import (
        LogitsProcessorList,
        NoBadWordsLogitsProcessor,
        NoRepeatNGramLogitsProcessor,
    )

    tinyllm.manual_seed(0)
    m = build_model(
        ModelConfig(arch="gpt", vocab_size=6, d_model=16, n_layer=1, n_head=2, block_size=64)
    ).double()
    idx = tinyllm.tensor(np.array([[1, 2]]))
    plain = m.generate(idx, 30, temperature=0).data[0].tolist()
    banned = plain[2]  # greedy's first choice
    procs = LogitsProcessorList(
        [NoBadWordsLogitsProcessor([[banned]]), NoRepeatNGramLogitsProcessor(3)]
    )
    out = m.generate(idx, 12, temperature=0, logits_processor=procs).data[0].tolist()
    assert banned not in out[2:]
    trigrams = [tuple(out[i : i + 3]) for i in range(len(out) - 2)]
    assert len(trigrams) == len(set(trigrams))
