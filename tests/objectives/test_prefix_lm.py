"""PrefixLM: the mask pattern, the labels, and that the mask reaches the attention."""

import numpy as np
import pytest

import tinyllm
from tinyllm.models.encoder_decoder import BidirectionalLM, EncoderDecoderConfig
from tinyllm.objectives import IGNORE_INDEX, prefix_lm_labels, prefix_lm_mask


def test_mask_pattern_against_a_loop():
    T, prefix = 7, np.array([1, 3, 7, 0])
    mask = prefix_lm_mask(prefix, T)
    assert mask.shape == (4, 1, T, T) and mask.dtype == bool
    for b, P in enumerate(prefix):
        for i in range(T):
            for j in range(T):
                assert mask[b, 0, i, j] == (j < P or j <= i), (b, i, j)
    # P = 3 drawn out: a full 3 x 3 block, lower-triangular after it
    expected = """
        1110000
        1110000
        1110000
        1111000
        1111100
        1111110
        1111111"""
    rows = [[c == "1" for c in line.strip()] for line in expected.strip().splitlines()]
    np.testing.assert_array_equal(mask[1, 0], np.array(rows))


def test_labels_cover_the_continuation_only():
    y = np.arange(10, 16)[None].repeat(2, 0)
    labels = prefix_lm_labels(y, np.array([1, 4]))
    assert labels[0].tolist() == [10, 11, 12, 13, 14, 15]  # P = 1: every position
    assert labels[1].tolist() == [IGNORE_INDEX] * 3 + [13, 14, 15]  # t >= P - 1 = 3


def run(model, idx, attn_mask=None) -> np.ndarray:
    with tinyllm.no_grad():
        return model(tinyllm.tensor(idx), attn_mask=attn_mask).numpy()


def _model():
    config = EncoderDecoderConfig(vocab_size=13, d_model=16, n_layer=2, n_head=2)
    tinyllm.manual_seed(0)
    return BidirectionalLM(config).double()


def test_extreme_prefixes_equal_the_causal_and_the_bidirectional_model():
    """P = 1 is a causal LM, P = T a bidirectional encoder: the same weights run with
    ``causal=True`` attention and with no mask must give the same logits (float64; 1e-12
    leaves room for summation order only)."""
    model = _model()
    idx = np.random.default_rng(0).integers(0, 13, (2, 9))
    full = run(model, idx)
    np.testing.assert_allclose(run(model, idx, prefix_lm_mask([9, 9], 9)), full, rtol=0,
                               atol=1e-12)  # fmt: skip
    with_mask = run(model, idx, prefix_lm_mask([1, 1], 9))
    assert np.abs(with_mask - full).max() > 1e-6  # the mask does change something
    for layer in model.layers:
        layer.attn.causal = True
    np.testing.assert_allclose(with_mask, run(model, idx), rtol=0, atol=1e-12)


@pytest.mark.parametrize("j", [1, 4, 6, 8])
def test_a_token_influences_exactly_the_positions_allowed_to_see_it(j):
    """Change input token j: logits at position i change iff j < P or j <= i (P = 4). So no
    position in the loss (t >= P - 1) sees the token it predicts (t + 1)."""
    model, P, T = _model(), 4, 9
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 13, (1, T))
    other = ids.copy()
    other[0, j] = (ids[0, j] + 1) % 13
    mask = prefix_lm_mask([P], T)
    a, b = run(model, ids, mask)[0], run(model, other, mask)[0]
    change = np.abs(a - b).max(axis=-1)
    sees = np.array([j < P or j <= i for i in range(T)])
    assert (change[~sees] < 1e-12).all(), change  # float64: unchanged up to rounding
    assert (change[sees] > 1e-6).all(), change  # a real change (N(0, 0.02) weights: ~1e-3)


def test_bad_prefix_lengths_raise():
    with pytest.raises(ValueError, match="prefix lengths"):
        prefix_lm_mask([5], 4)
    with pytest.raises(ValueError, match="2 prefix lengths for 3 rows"):
        prefix_lm_labels(np.zeros((3, 4), np.int64), np.array([1, 2]))
