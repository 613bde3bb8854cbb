"""BART text infilling: exact mask count, one <mask> per span, Poisson(3) span lengths."""

import numpy as np

from tinyllm.objectives import poisson_span_lengths, text_infill

MASK = 257


def test_inputs_are_the_text_with_one_mask_per_span():
    rng = np.random.default_rng(0)
    for trial in range(200):
        L = int(rng.integers(1, 300))
        tokens = rng.integers(0, 256, L)
        inputs, starts, lengths = text_infill(tokens, rng, mask_id=MASK)
        assert lengths.sum() == round(L * 0.3)  # exactly the masked share
        assert (inputs == MASK).sum() == len(lengths)  # one <mask> per span, 0-length too
        assert len(inputs) == L - lengths.sum() + len(lengths)
        # putting each span's tokens back where its <mask> is gives the text again
        rebuilt, k = [], 0
        for t in inputs.tolist():
            if t == MASK:
                rebuilt.extend(tokens[starts[k] : starts[k] + lengths[k]].tolist())
                k += 1
            else:
                rebuilt.append(t)
        assert rebuilt == tokens.tolist(), trial
        assert (np.diff(starts) >= lengths[:-1]).all()  # spans never overlap


def test_span_lengths_are_poisson_3():
    """Untruncated lengths (all but each call's last) have mean and a zero share within 5
    sigma of Poisson(3)'s: mean 3, variance 3, P(0) = e^-3."""
    rng = np.random.default_rng(1)
    draws = np.concatenate([poisson_span_lengths(300, rng)[:-1] for _ in range(200)])
    n = len(draws)
    assert abs(draws.mean() - 3.0) <= 5 * np.sqrt(3.0 / n), draws.mean()
    p0 = np.exp(-3.0)
    assert abs((draws == 0).sum() - n * p0) <= 5 * np.sqrt(n * p0 * (1 - p0))
