"""The Numba math helpers against float64 references: the error bounds their docstrings state."""

import numpy as np
import pytest
import scipy.special

numba = pytest.importorskip("numba")

from tinyllm.kernels.numba_math import fast_exp, normal_cdf  # noqa: E402


@numba.njit
def _apply_exp(x, out):
    for i in range(x.shape[0]):
        out[i] = fast_exp(x[i])


@numba.njit
def _apply_cdf(x, out):
    for i in range(x.shape[0]):
        out[i] = normal_cdf(x[i])


def _ulps(got, want, dtype):
    """|got - want| in units of the last place of ``want`` in ``dtype``."""
    return np.abs(got - want) / np.spacing(np.abs(want).astype(dtype)).astype(np.float64)


@pytest.mark.parametrize("dtype, lo", [(np.float32, -87.0), (np.float64, -708.0)])
def test_fast_exp_within_one_ulp_and_flushes_below_range(dtype, lo):
    x = np.linspace(lo, 80.0 if dtype == np.float32 else 700.0, 200_001).astype(dtype)
    out = np.empty_like(x)
    _apply_exp(x, out)
    assert _ulps(out, np.exp(x.astype(np.float64)), dtype).max() <= 1.0
    special = np.array([lo - 1, -np.inf, np.nan, 0.0], dtype)
    out = np.empty_like(special)
    _apply_exp(special, out)
    assert out[0] == 0 and out[1] == 0 and np.isnan(out[2]) and out[3] == 1


def test_normal_cdf_float32_error_bounds():
    x = np.linspace(-12.0, 12.0, 400_001).astype(np.float32)
    out = np.empty_like(x)
    _apply_cdf(x, out)
    want = scipy.special.ndtr(x.astype(np.float64))
    # the approximation's 1.2e-7 relative error plus float32 rounding: within 4 float32 ulps
    # of 1/2 everywhere, and in the lower tail accurate relative to the tiny value itself
    # (the libm route 0.5 (1 + erf) loses it all to cancellation: Phi(-5) = 2.9e-7)
    assert np.abs(out - want).max() < 2.5e-7
    tail = x < 0
    assert (np.abs(out - want)[tail] / want[tail]).max() < 2e-5
    assert np.all(np.diff(out) >= 0)  # monotone, as Phi is
    assert out[0] > 0 and out[-1] == 1


def test_normal_cdf_float64_is_libm_erf():
    x = np.linspace(-9.0, 9.0, 10_001)
    out = np.empty_like(x)
    _apply_cdf(x, out)
    np.testing.assert_allclose(out, scipy.special.ndtr(x), rtol=1e-15, atol=3e-16)
