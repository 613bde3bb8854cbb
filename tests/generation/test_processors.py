"""Logits processors: hand-computed vectors, HF's definitions, and composition."""

import math

import numpy as np
import pytest

from tinyllm.generation.processors import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    FrequencyPresencePenaltyLogitsProcessor,
    LogitsProcessorList,
    MinPLogitsWarper,
    NoBadWordsLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
    build_processors,
    greedy,
    sample_from_uniforms,
    seeded_uniforms,
)

IDS = np.zeros((1, 1), dtype=np.int64)


def kept(scores):
    return np.isfinite(scores[0]).tolist()


def test_top_p_keeps_the_crossing_token():
    # [.5, .3, .2], p = 0.75: .5 < .75, .5 + .3 crosses -> two kept
    z = np.log([[0.5, 0.3, 0.2]])
    assert kept(TopPLogitsWarper(0.75)(IDS, z)) == [True, True, False]
    assert kept(TopPLogitsWarper(0.4)(IDS, z)) == [True, False, False]
    assert kept(TopPLogitsWarper(1.0)(IDS, z)) == [True, True, True]


def test_top_k_keeps_ties_at_the_kth():
    z = np.array([[3.0, 1.0, 2.0, 2.0, 0.0]])
    assert kept(TopKLogitsWarper(2)(IDS, z)) == [True, False, True, True, False]
    assert kept(TopKLogitsWarper(1)(IDS, z)) == [True, False, False, False, False]


def test_min_p_keeps_two_of_four():
    # threshold 0.5 * 0.5 = 0.25: .5 and .25 stay (not < .25), .15 and .1 go
    z = np.log([[0.5, 0.25, 0.15, 0.1]])
    assert kept(MinPLogitsWarper(0.5)(IDS, z)) == [True, True, False, False]


def test_repetition_penalty_vector_from_the_issue():
    z = np.array([[2.0, -2.0, 1.0, 5.0]])
    ids = np.array([[0, 1, 2, 2]])
    out = RepetitionPenaltyLogitsProcessor(2.0)(ids, z)
    np.testing.assert_array_equal(out, [[1.0, -4.0, 0.5, 5.0]])


def test_frequency_and_presence_penalties_count_only_the_output():
    z = np.zeros((1, 4))
    ids = np.array([[3, 3, 1, 1, 1, 2]])  # prompt [3, 3], output [1, 1, 1, 2]
    out = FrequencyPresencePenaltyLogitsProcessor(0.5, 0.25, prompt_length=2)(ids, z)
    np.testing.assert_allclose(out, [[0.0, -(3 * 0.5 + 0.25), -(0.5 + 0.25), 0.0]])


def test_temperature_divides():
    z = np.array([[1.0, -2.0]])
    np.testing.assert_array_equal(TemperatureLogitsWarper(0.5)(IDS, z), [[2.0, -4.0]])
    with pytest.raises(ValueError, match="temperature"):
        TemperatureLogitsWarper(0.0)


def test_epsilon_and_eta_by_hand():
    p = np.array([0.6, 0.3, 0.07, 0.03])
    z = np.log(p)[None]
    assert kept(EpsilonLogitsWarper(0.05)(IDS, z)) == [True, True, True, False]
    H = -(p * np.log(p)).sum()
    eta = min(0.2, math.sqrt(0.2) * math.exp(-H))  # = 0.1266... by hand: below .3, above .07
    assert 0.07 < eta < 0.3
    assert kept(EtaLogitsWarper(0.2)(IDS, z)) == [True, True, False, False]
    # min_tokens_to_keep overrides a threshold that removes everything
    assert kept(EpsilonLogitsWarper(0.9, min_tokens_to_keep=1)(IDS, z)) == [
        True,
        False,
        False,
        False,
    ]


def test_typical_by_hand():
    # p = [.4, .3, .2, .1]: H = 1.2799; |-log p - H| = [.364, .076, .330, 1.023];
    # ascending order 1, 2, 0, 3 with cumulative masses .3, .5, .9: the shortest prefix
    # reaching the mass (HF: count of cumulative < mass, plus one)
    z = np.log([[0.4, 0.3, 0.2, 0.1]])
    assert kept(TypicalLogitsWarper(0.25)(IDS, z)) == [False, True, False, False]
    assert kept(TypicalLogitsWarper(0.45)(IDS, z)) == [False, True, True, False]
    assert kept(TypicalLogitsWarper(0.6)(IDS, z)) == [True, True, True, False]


def test_no_repeat_ngram_bans_the_completion():
    ids = np.array([[1, 2, 3, 1, 2]])  # bigram "1 2" was followed by 3; trigram ban
    out = NoRepeatNGramLogitsProcessor(3)(ids, np.zeros((1, 5)))
    assert kept(out) == [True, True, True, False, True]
    out = NoRepeatNGramLogitsProcessor(2)(ids, np.zeros((1, 5)))  # after 2: 3 was seen
    assert kept(out) == [True, True, True, False, True]


def test_bad_words_single_and_multi_token():
    ids = np.array([[4, 1, 2]])
    out = NoBadWordsLogitsProcessor([[0], [1, 2, 3], [2, 4]])(ids, np.zeros((1, 5)))
    assert kept(out) == [False, True, True, False, False]
    with pytest.raises(ValueError, match="bad_words_ids"):
        NoBadWordsLogitsProcessor([[]])


def test_list_composes_in_order_and_errors_name_the_processor():
    z = np.log([[0.5, 0.3, 0.2]])
    procs = LogitsProcessorList([TemperatureLogitsWarper(1.0), TopKLogitsWarper(2)])
    assert kept(procs(IDS, z)) == [True, True, False]
    with pytest.raises(ValueError, match="TopKLogitsWarper: scores must be"):
        TopKLogitsWarper(2)(IDS, np.zeros(3))
    assert len(build_processors(temperature=0.7, top_k=5, top_p=0.9, min_p=0.1)) == 4


def test_greedy_and_inverse_cdf_sampling():
    z = np.log([[0.1, 0.6, 0.3]])
    assert greedy(z).tolist() == [1]
    # cdf [.1, .7, 1.0]: u in [0, .1) -> 0, [.1, .7) -> 1, [.7, 1) -> 2
    for u, want in [(0.0, 0), (0.099, 0), (0.101, 1), (0.69, 1), (0.701, 2), (0.999, 2)]:
        assert sample_from_uniforms(z, [u]).tolist() == [want]
    # a -inf token is never drawn
    assert sample_from_uniforms(np.array([[0.0, -np.inf]]), [0.9999999]).tolist() == [0]


def test_seeded_uniforms_are_a_function_of_seed_and_step():
    a = seeded_uniforms(7, 3, 4)
    np.testing.assert_array_equal(a, seeded_uniforms(7, 3, 4))
    assert not np.array_equal(a, seeded_uniforms(7, 4, 4))
    assert not np.array_equal(a, seeded_uniforms(8, 3, 4))
    assert ((a >= 0) & (a < 1)).all()


def test_sampling_frequencies_match_the_filtered_distribution():
    """Monte Carlo over seeded uniforms: top-p 0.75 on [.5, .3, .2] samples 5/8, 3/8, 0."""
    from scipy.stats import chisquare

    z = np.log([[0.5, 0.3, 0.2]])
    f = TopPLogitsWarper(0.75)(IDS, z)
    u = seeded_uniforms(0, 0, 20000)
    draws = np.array([sample_from_uniforms(f, [x])[0] for x in u[:4000]])
    counts = np.bincount(draws, minlength=3)
    assert counts[2] == 0
    # p-value threshold 1e-4: a fixed seed, the test is deterministic; this checks the law
    assert chisquare(counts[:2], 4000 * np.array([5 / 8, 3 / 8])).pvalue > 1e-4


def test_equal_to_hugging_face_processors_when_installed():
    transformers = pytest.importorskip("transformers")
    import torch as th

    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, 17))
    ids = rng.integers(0, 17, (3, 6))
    pairs = [
        (TopKLogitsWarper(4), transformers.TopKLogitsWarper(4)),
        (TopPLogitsWarper(0.8), transformers.TopPLogitsWarper(0.8)),
        (TypicalLogitsWarper(0.7), transformers.TypicalLogitsWarper(0.7)),
        (MinPLogitsWarper(0.2), transformers.MinPLogitsWarper(0.2)),
        (EpsilonLogitsWarper(0.05), transformers.EpsilonLogitsWarper(0.05)),
        (EtaLogitsWarper(0.05), transformers.EtaLogitsWarper(0.05)),
        (RepetitionPenaltyLogitsProcessor(1.5), transformers.RepetitionPenaltyLogitsProcessor(1.5)),
        (NoRepeatNGramLogitsProcessor(2), transformers.NoRepeatNGramLogitsProcessor(2)),
    ]
    for ours, theirs in pairs:
        want = theirs(th.tensor(ids), th.tensor(z)).numpy()
        np.testing.assert_allclose(ours(ids, z), want, rtol=1e-12, err_msg=type(ours).__name__)
