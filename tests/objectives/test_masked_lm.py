"""BERT masking: 15 % selected, 80/10/10, specials never masked, whole words, seeding.

Statistical checks use 5-sigma binomial bounds: |X - n p| <= 5 sqrt(n p (1 - p)) for a count
X ~ Binomial(n, p); a correct sampler fails one with probability < 6e-7, and the seeds are
fixed, so a run is deterministic."""

import numpy as np

from tinyllm.objectives import IGNORE_INDEX, byte_word_ids, mask_tokens

MASK = 257


def within_5_sigma(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= 5 * np.sqrt(n * p * (1 - p))


def test_masking_statistics_over_1e5_tokens_with_specials():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 256, 100_000)
    special = rng.random(ids.shape) < 0.1  # 10 % of positions hold special ids
    ids[special] = rng.integers(256, 259, int(special.sum()))
    inputs, labels = mask_tokens(ids, np.random.default_rng(1), mask_id=MASK, n_data=256)
    selected = labels != IGNORE_INDEX
    assert not selected[special].any()  # special tokens are never selected
    np.testing.assert_array_equal(inputs[special], ids[special])
    np.testing.assert_array_equal(labels[selected], ids[selected])
    np.testing.assert_array_equal(inputs[~selected], ids[~selected])  # the rest untouched
    n, k = int((~special).sum()), int(selected.sum())
    assert within_5_sigma(k, n, 0.15), (k, n)
    masked = int((inputs[selected] == MASK).sum())
    kept = int((inputs[selected] == ids[selected]).sum())
    other = k - masked - kept  # a different data token
    assert within_5_sigma(masked, k, 0.8), masked / k
    # a random replacement equals the original with probability 1/256
    assert within_5_sigma(kept, k, 0.1 + 0.1 / 256), kept / k
    assert within_5_sigma(other, k, 0.1 * 255 / 256), other / k
    replaced = inputs[selected & (inputs != MASK)]
    assert replaced.min() >= 0 and replaced.max() < 256  # only data tokens are drawn


def test_whole_word_masking_selects_words_all_or_nothing():
    text = (b"the quick brown fox jumps over the lazy dog\n" * 2500)[:100_000]
    ids = np.frombuffer(text, dtype=np.uint8).astype(np.int64).reshape(10, 10_000)
    words = byte_word_ids(ids)
    _, labels = mask_tokens(ids, np.random.default_rng(3), mask_id=MASK, n_data=256,
                            word_ids=words)  # fmt: skip
    selected = labels != IGNORE_INDEX
    n_words = k_words = 0
    for row in range(ids.shape[0]):
        for w in np.unique(words[row]):
            s = selected[row][words[row] == w]
            assert s.all() or not s.any()  # a word is selected whole or not at all
            n_words, k_words = n_words + 1, k_words + int(s[0])
    assert within_5_sigma(k_words, n_words, 0.15), (k_words, n_words)


def test_byte_words():
    ids = np.frombuffer(b"ab  cd\ne", dtype=np.uint8)
    assert byte_word_ids(ids).tolist() == [0, 0, 1, 2, 3, 3, 4, 5]


def test_a_seed_fixes_the_batch():
    ids = np.random.default_rng(0).integers(0, 256, (4, 64))
    a = mask_tokens(ids, np.random.default_rng(5), mask_id=MASK, n_data=256)
    b = mask_tokens(ids, np.random.default_rng(5), mask_id=MASK, n_data=256)
    c = mask_tokens(ids, np.random.default_rng(6), mask_id=MASK, n_data=256)
    assert all((x == y).all() for x, y in zip(a, b))
    assert not (a[1] == c[1]).all()
