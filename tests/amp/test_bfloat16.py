"""round_to_bfloat16 against ml_dtypes (an independent implementation of the same rounding)
on 10^6 random bit patterns, and closed-form ties-to-even anchors that need no ml_dtypes."""

import numpy as np
import pytest

from tinyllm.amp.bfloat16 import round_to_bfloat16


def test_ties_to_even_anchors():
    # 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even mantissa 1.0;
    # 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: ties up to 1.015625
    x = np.array([1 + 2.0**-8, 1 + 3 * 2.0**-8, 1 + 2.0**-8 + 2.0**-20, -(1 + 2.0**-8)], np.float32)
    np.testing.assert_array_equal(round_to_bfloat16(x), [1.0, 1.015625, 1 + 2.0**-7, -1.0])


def test_specials_and_overflow():
    big = np.float32(3.4e38)  # above bfloat16's max 3.3895e38 + half ulp: rounds to inf
    x = np.array([0.0, -0.0, np.inf, -np.inf, big, np.nan], np.float32)
    got = round_to_bfloat16(x)
    np.testing.assert_array_equal(got[:5], [0.0, -0.0, np.inf, -np.inf, np.inf])
    assert np.signbit(got[1]) and np.isnan(got[5])
    nan_low_payload = np.array([0x7F800001], np.uint32).view(np.float32)
    assert np.isnan(round_to_bfloat16(nan_low_payload)).all()  # not inf
    with pytest.raises(TypeError, match="round_to_bfloat16: expected a float32 array"):
        round_to_bfloat16(np.ones(2))


def test_matches_ml_dtypes_bit_for_bit():
    """Optional oracle: ml_dtypes.bfloat16 (round to nearest even), 10^6 random patterns."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2**32, 10**6, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = x[~np.isnan(x)]
    got = round_to_bfloat16(x)
    want = x.astype(ml_dtypes.bfloat16).astype(np.float32)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
