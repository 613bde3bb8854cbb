"""T5 span corruption: the published length arithmetic, exact reconstruction, the format."""

import numpy as np
import pytest

from tinyllm.objectives import (
    SpecialTokens,
    noise_span_counts,
    random_spans_helper,
    random_spans_noise_mask,
    reconstruct,
    span_corrupt,
)

SP = SpecialTokens()


def test_published_length_arithmetic_568_to_512_and_114():
    """T5 (and Hugging Face's run_t5_mlm_flax) at density 0.15, mean span 3: inputs of 512
    tokens come from 568 raw tokens and give targets of 114 tokens (published constants)."""
    assert random_spans_helper(512, 0.15, 3.0) == (568, 114)
    assert noise_span_counts(568, 0.15, 3.0) == (85, 28)  # round(85.2), round(28.33)
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (3, 568))
    inputs, targets = span_corrupt(raw, rng, SP)
    assert inputs.shape == (3, 512) and targets.shape == (3, 114)


@pytest.mark.parametrize("inputs_length", [16, 64, 128, 200, 512])
def test_helper_gives_the_longest_text_that_fits(inputs_length):
    """The helper's raw length corrupts to at most inputs_length inputs, and one more raw token
    gives more (checked by running span_corrupt itself, not the helper's formula)."""
    n, targets_length = random_spans_helper(inputs_length)
    rng = np.random.default_rng(inputs_length)
    inputs, targets = span_corrupt(rng.integers(0, 256, n), rng, SP)
    assert len(inputs) <= inputs_length and len(targets) == targets_length
    longer, _ = span_corrupt(rng.integers(0, 256, n + 1), rng, SP)
    assert len(longer) > inputs_length


def test_exact_reconstruction_over_many_lengths_densities_and_seeds():
    many = SpecialTokens(256, num_sentinels=400)  # up to ~240 spans below
    rng = np.random.default_rng(1)
    for trial in range(300):
        length = int(rng.integers(2, 400))
        density = float(rng.uniform(0.05, 0.6))
        mean_span = float(rng.uniform(1.0, 6.0))
        raw = rng.integers(0, 256, length)
        inputs, targets = span_corrupt(raw, rng, many, density, mean_span)
        np.testing.assert_array_equal(reconstruct(inputs, targets, many), raw, err_msg=str(trial))
        num_noise, num_spans = noise_span_counts(length, density, mean_span)
        assert len(inputs) == length - num_noise + num_spans + 1
        assert len(targets) == num_noise + num_spans + 1
        assert inputs[-1] == targets[-1] == many.eos


def test_format_on_a_given_mask_matches_the_papers_figure():
    """Raffel et al., figure 2: "Thank you <X> me to your party <Y> week." /
    "<X> for inviting <Y> last <Z>" (the code ends with </s> where the figure shows <Z>)."""
    words = "Thank you for inviting me to your party last week .".split()
    ids = np.arange(len(words))
    noise = np.isin(words, ["for", "inviting", "last"])
    inputs, targets = span_corrupt(ids, None, SP, noise_mask=noise)
    x, y = SP.sentinel(0), SP.sentinel(1)
    assert inputs.tolist() == [0, 1, x, 4, 5, 6, 7, y, 9, 10, SP.eos]
    assert targets.tolist() == [x, 2, 3, y, 8, SP.eos]


def test_noise_mask_structure():
    """Starts with kept tokens, ends with a noise span, exactly num_spans spans of the right
    total; and across draws every position but the first is noise sometimes."""
    rng = np.random.default_rng(2)
    hits = np.zeros(141)
    for _ in range(400):
        mask = random_spans_noise_mask(141, rng)
        num_noise, num_spans = noise_span_counts(141)
        starts = mask & ~np.concatenate([[False], mask[:-1]])
        assert not mask[0] and mask[-1]
        assert mask.sum() == num_noise and starts.sum() == num_spans
        hits += mask
    assert hits[0] == 0 and (hits[1:] > 0).all()


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="noise_density"):
        noise_span_counts(10, 1.5)
    with pytest.raises(ValueError, match="data tokens"):
        span_corrupt(np.array([1, 2, 300]), np.random.default_rng(0), SP)
    with pytest.raises(ValueError, match="sentinels"):
        span_corrupt(np.arange(100), np.random.default_rng(0), SpecialTokens(256, 2))
