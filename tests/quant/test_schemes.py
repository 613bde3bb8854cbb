"""Schemes: INT absmax/zero-point, pack/unpack, NF4 (+ double quantization), FP8."""

import numpy as np
import pytest

from tinyllm.quant import fp8, nf4, schemes


def heavy(rng, shape):
    return (rng.standard_t(3, shape) * 0.02).astype(np.float32)


def test_nf4_levels_regenerated_from_scipy_equal_published_table():
    np.testing.assert_allclose(nf4.nf4_levels(), nf4.NF4_LEVELS, atol=1e-6, rtol=0)
    assert nf4.NF4_LEVELS[7] == 0 and (nf4.NF4_LEVELS > 0).sum() == 8


@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_unpack_round_trip_every_bit_width(bits):
    rng = np.random.default_rng(bits)
    for K in (1, 7, 16, 33):
        q = rng.integers(0, 2**bits, (5, K)).astype(np.uint8)
        packed = schemes.pack_codes(q, bits)
        assert packed.shape == (5, -(-K * bits // 8)) and packed.dtype == np.uint8
        np.testing.assert_array_equal(schemes.unpack_codes(packed, bits, K), q)


def test_int4_packing_is_high_nibble_first():
    q = np.array([[1, 2, 15, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(schemes.pack_codes(q, 4), [[0x12, 0xF0]])


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [8, 4, 3])
@pytest.mark.parametrize("gran,g", [("tensor", None), ("channel", None), ("group", 16)])
def test_error_bound_and_idempotence(symmetric, bits, gran, g):
    rng = np.random.default_rng(0)
    w = heavy(rng, (6, 50))
    scale, zero, gs = schemes.compute_qparams(w, bits, gran, g, symmetric)
    q = schemes.quantize_codes(w, scale, zero, bits, gs)
    w_hat = schemes.dequantize_codes(q, scale, zero, gs)
    s_full = np.repeat(scale, gs, axis=1)[:, :50]
    assert np.all(np.abs(w - w_hat) <= s_full / 2 * (1 + 1e-5) + 1e-9)
    again = schemes.quantize_codes(w_hat, scale, zero, bits, gs)
    np.testing.assert_array_equal(again, q)
    qw = schemes.quantize_weight(w, bits, gran, g, symmetric)
    np.testing.assert_array_equal(qw.dequantize(), w_hat)


def test_absmax_int8_matches_closed_form():
    w = np.array([[0.5, -1.27, 0.01]], dtype=np.float32)
    q = schemes.quantize_weight(w, 8, "channel", symmetric=True)
    np.testing.assert_allclose(q.scales, [[1.27 / 127]], rtol=1e-6)
    np.testing.assert_array_equal(q.codes.astype(int) - 128, [[50, -127, 1]])


@pytest.mark.parametrize("gran", ["channel", "group", "tensor"])
def test_qparams_of_a_vector_are_those_of_one_row(gran):
    w = heavy(np.random.default_rng(3), (40,))
    for symmetric in (True, False):
        one = schemes.compute_qparams(w, 4, gran, 16, symmetric)
        row = schemes.compute_qparams(w[None], 4, gran, 16, symmetric)
        for a, b in zip(one, row):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"\[N, K\] or \[K\]"):
        schemes.compute_qparams(w.reshape(2, 4, 5), 4, gran, 16)


def test_error_monotone_in_granularity():
    rng = np.random.default_rng(1)
    w = heavy(rng, (64, 256)) * np.exp(rng.standard_normal((64, 1)))
    err = {
        gran: np.abs(w - schemes.fake_quantize(w, 4, gran, 32)).mean()
        for gran in ("tensor", "channel", "group")
    }
    assert err["group"] < err["channel"] < err["tensor"]


def test_nf4_round_trip_bound_idempotence_and_double_quant_bytes():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((32, 200)).astype(np.float32)
    q = nf4.quantize_nf4(w, 64, double_quant=True)
    np.testing.assert_allclose(q.dequantize(), w, atol=0.2 * np.abs(w).max())
    plain, double = nf4.quantize_nf4(w, 64, False), nf4.quantize_nf4(w, 64, True)
    n = w.size
    assert plain.nbytes * 8 / n == pytest.approx(4 + 32 / 64, abs=0.01)
    assert double.nbytes * 8 / n < 4 + 0.13 + 0.01
    # double quantization changes the block constants a little
    rel = np.abs(double.block_scales() - plain.block_scales()) / plain.block_scales()
    assert rel.max() < 0.02


def test_nf4_exact_bound_without_double_quant():
    rng = np.random.default_rng(3)
    w = rng.standard_normal(1000).astype(np.float32)
    q = nf4.quantize_nf4(w, 64, double_quant=False)
    c1 = np.repeat(q.absmax, 64)[: w.size]
    assert np.all(np.abs(w - q.dequantize()) <= c1 * np.diff(nf4.NF4_LEVELS).max() / 2 + 1e-6)
    np.testing.assert_array_equal(nf4.quantize_nf4(q.dequantize(), 64, False).codes, q.codes)


def test_dynamic_map_has_256_sorted_values_in_unit_range():
    m = nf4.dynamic_map()
    assert m.size == 256 and np.all(np.diff(m) >= 0) and m[0] > -1 and m[-1] == 1.0


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_fp8_equals_ml_dtypes_cast(fmt):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    dt = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2}[fmt]
    rng = np.random.default_rng(4)
    mx = fp8.FP8_FORMATS[fmt].max_finite
    x = rng.standard_normal(20000) * 10.0 ** rng.uniform(-9, 5, 20000)
    x = np.concatenate([x, np.linspace(-mx, mx, 4001), [0.0, -0.0]]).astype(np.float32)
    x = np.clip(x, -mx, mx)
    ref = x.astype(dt)
    np.testing.assert_array_equal(fp8.fp8_round(x, fmt), ref.astype(np.float32))
    np.testing.assert_array_equal(fp8.fp8_encode(x, fmt), ref.view(np.uint8))
    codes = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(fp8.fp8_decode(codes, fmt), codes.view(dt).astype(np.float32))


def test_fp8_saturates_instead_of_nan():
    assert fp8.fp8_round(np.array([500.0, -1e9]), "e4m3").tolist() == [448.0, -448.0]
    q = fp8.quantize_fp8(np.array([[1.0, -3.0], [0.5, 0.25]]), "e4m3", "channel")
    np.testing.assert_allclose(np.abs(q.dequantize()).max(axis=1), [3.0, 0.5])
