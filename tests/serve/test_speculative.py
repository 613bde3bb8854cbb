"""Speculative sampling: the output distribution is the target's."""

import numpy as np
import pytest
from scipy.stats import chisquare

import tinyllm
from tinyllm.models import ModelConfig, build_model
from tinyllm.serve.speculative import emitted_distribution, speculative_generate, verify


def test_closed_form_equals_the_target():
    rng = np.random.default_rng(0)
    for _ in range(20):
        p, q = rng.dirichlet(np.ones(10) * 0.5), rng.dirichlet(np.ones(10) * 0.5)
        np.testing.assert_allclose(emitted_distribution(p, q), p, atol=1e-15)


def test_chi_square_of_verify_first_token():
    rng = np.random.default_rng(1)
    V, gamma, n = 6, 2, 20000
    p = rng.dirichlet(np.ones(V), size=gamma + 1)
    q = rng.dirichlet(np.ones(V), size=gamma)
    counts = np.zeros(V)
    for _ in range(n):
        drafts = np.array([rng.choice(V, p=q[i]) for i in range(gamma)])
        out = verify(drafts, q, p, rng)
        counts[out[0]] += 1
    # p-value > 1e-4 at a fixed seed: a deterministic test of the law (not of luck)
    assert chisquare(counts, n * p[0]).pvalue > 1e-4


@pytest.fixture(scope="module")
def pair():
    tinyllm.manual_seed(0)
    target = (
        build_model(
            ModelConfig(arch="llama", vocab_size=30, d_model=16, n_layer=2, n_head=4, block_size=64)
        )
        .double()
        .eval()
    )
    draft = (
        build_model(
            ModelConfig(arch="gpt", vocab_size=30, d_model=8, n_layer=1, n_head=2, block_size=64)
        )
        .double()
        .eval()
    )
    return target, draft


@pytest.mark.parametrize("gamma", [1, 3, 5])
def test_greedy_speculative_equals_greedy(pair, gamma):
    target, draft = pair
    prompt = [3, 1, 4, 1, 5]
    new, stats = speculative_generate(target, draft, prompt, 25, gamma=gamma, temperature=0)
    ref = target.generate(tinyllm.tensor(np.array([prompt])), 25, temperature=0)
    assert new == ref.data[0, len(prompt) :].tolist()
    # the target as its own draft accepts everything
    new, stats = speculative_generate(target, target, prompt, 12, gamma=gamma, temperature=0)
    assert stats["acceptance_rate"] == 1.0 and new == ref.data[0, 5:17].tolist()


def test_sampled_speculative_first_token_law(pair):
    """The first new token over many seeds follows softmax of the target's logits."""
    target, draft = pair
    prompt = [2, 7]
    from tinyllm.models.decoder import Decoder

    logits = Decoder(target, 1, 8).prefill(np.array([prompt]))[0]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    n = 1500
    counts = np.zeros(30)
    for s in range(n):
        counts[speculative_generate(target, draft, prompt, 1, gamma=2, seed=s)[0][0]] += 1
    keep = n * p >= 5  # chi-square needs expected counts >= 5: pool the rest
    obs, exp = counts[keep], n * p[keep]
    if not keep.all():
        obs, exp = np.append(obs, counts[~keep].sum()), np.append(exp, n * p[~keep].sum())
    assert chisquare(obs, exp).pvalue > 1e-4
