"""FlashAttention (the Numba tier) equals naive attention to 1e-12 in float64 -- causal and
not, Tq != Tk, odd tile sizes, key padding masks, fully masked rows, GQA -- and never
allocates a Tq x Tk array."""

import math
import tracemalloc

import numpy as np
import pytest

import tinyllm.kernels as K

pytest.importorskip("numba")


def make(rng, B, H, Hkv, Tq, Tk, D, dtype=np.float64):
    q = rng.standard_normal((B, H, Tq, D)).astype(dtype)
    k = rng.standard_normal((B, Hkv, Tk, D)).astype(dtype)
    v = rng.standard_normal((B, Hkv, Tk, D)).astype(dtype)
    do = rng.standard_normal((B, H, Tq, D)).astype(dtype)
    return q, k, v, do


def both_tiers(q, k, v, do, **kw):
    """((o, lse, dq, dk, dv) naive, (...) flash), checking the tiers that ran."""
    out = []
    for tier in ("reference", "numba"):
        with K.use(tier):
            o, lse = K.attention_forward(q, k, v, **kw)
            grads = K.attention_backward(do, q, k, v, o, lse, **kw)
        assert K.last_tier("attention_forward") == tier
        assert K.last_tier("attention_backward") == tier
        out.append((o, lse, *grads))
    return out


def assert_match(naive, flash, tol):
    o, lse, *grads = naive
    o2, lse2, *grads2 = flash
    np.testing.assert_array_equal(np.isneginf(lse), np.isneginf(lse2))
    finite = np.isfinite(lse)
    assert np.max(np.abs(lse[finite] - lse2[finite]), initial=0) <= tol
    for a, b in zip([o, *grads], [o2, *grads2]):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert np.max(np.abs(a - b), initial=0) <= tol, np.max(np.abs(a - b))


CASES = [
    # B, H, Hkv, Tq, Tk, D, block_q, block_k
    (2, 4, 4, 37, 37, 8, 7, 11),
    (1, 4, 2, 37, 53, 16, 16, 16),  # GQA, Tq < Tk
    (2, 6, 1, 53, 29, 8, 64, 64),  # MQA, Tq > Tk, one tile
    (1, 2, 2, 1, 40, 4, 1, 3),  # a single query (decode-like)
    (1, 2, 1, 65, 65, 5, 13, 1),  # one key per tile
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("causal", [False, True])
def test_flash_equals_naive_float64(case, causal):
    B, H, Hkv, Tq, Tk, D, bq, bk = case
    rng = np.random.default_rng(hash(case) % 2**32)
    q, k, v, do = make(rng, B, H, Hkv, Tq, Tk, D)
    naive, flash = both_tiers(q, k, v, do, causal=causal, block_q=bq, block_k=bk)
    assert_match(naive, flash, 1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_flash_padding_masks_and_fully_masked_rows(causal):
    rng = np.random.default_rng(11)
    B, H, Hkv, Tq, Tk, D = 3, 4, 2, 29, 31, 8
    q, k, v, do = make(rng, B, H, Hkv, Tq, Tk, D)
    keep = rng.random((B, Tk)) > 0.4
    keep[1] = False  # every key of batch 1 masked: all its rows are empty
    keep[2, 0] = False  # causal: query 0 of batch 2 sees no key
    for mask in (keep, keep[:, None, None, :]):
        naive, flash = both_tiers(q, k, v, do, causal=causal, key_padding_mask=mask,
                                  block_q=8, block_k=5)  # fmt: skip
        assert_match(naive, flash, 1e-12)
        o, lse, dq, dk, dv = flash
        assert np.all(o[1] == 0) and np.all(np.isneginf(lse[1]))
        assert np.all(dq[1] == 0) and np.all(dk[1] == 0) and np.all(dv[1] == 0)
        assert np.all(dk[:, :, ~keep[0]][0] == 0)  # masked keys get no gradient
        if causal:
            assert np.isneginf(lse[2, :, 0]).all() and np.all(o[2, :, 0] == 0)


def test_flash_custom_scale_and_non_contiguous_inputs():
    rng = np.random.default_rng(12)
    q, k, v, do = make(rng, 2, 2, 2, 19, 23, 8)
    qt = np.ascontiguousarray(q.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)  # [B, T, H, D] storage
    assert not qt.flags.c_contiguous
    naive, flash = both_tiers(qt, k, v, do, causal=True, scale=0.3, block_q=5, block_k=6)
    assert_match(naive, flash, 1e-12)


def test_flash_float32_close_to_naive():
    rng = np.random.default_rng(13)
    q, k, v, do = make(rng, 1, 4, 2, 70, 70, 16, np.float32)
    naive, flash = both_tiers(q, k, v, do, causal=True, block_q=32, block_k=32)
    assert_match(naive, flash, 2e-5)


def test_flash_lse_is_the_logsumexp_of_scores():
    rng = np.random.default_rng(14)
    q, k, v, _ = make(rng, 1, 1, 1, 9, 12, 4)
    with K.use("numba"):
        _, lse = K.attention_forward(q, k, v, block_q=4, block_k=5)
    s = q[0, 0] @ k[0, 0].T / math.sqrt(4)
    want = np.log(np.exp(s - s.max(1, keepdims=True)).sum(1)) + s.max(1)
    np.testing.assert_allclose(lse[0, 0], want, atol=1e-13)


def _peak_bytes(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


def test_flash_allocates_no_tq_by_tk_array():
    """Peak extra memory (tracemalloc sees NumPy's allocations) of flash forward + backward
    stays far below one [B, H, Tq, Tk] array; the naive path needs several."""
    rng = np.random.default_rng(15)
    B, H, T, D = 1, 2, 1024, 16
    q, k, v, do = make(rng, B, H, H, T, T, D)
    scores_bytes = B * H * T * T * 8

    def run(tier):
        def go():
            with K.use(tier):
                o, lse = K.attention_forward(q, k, v, causal=True)
                K.attention_backward(do, q, k, v, o, lse, causal=True)

        return go

    run("numba")()  # compile outside the measurement
    flash = _peak_bytes(run("numba"))
    naive = _peak_bytes(run("reference"))
    assert naive >= 2 * scores_bytes  # the oracle materializes S and P
    # flash: the outputs o, dq, dk, dv (4 x q.nbytes), lse and D (T each), per-tile scratch
    assert flash < 6 * q.nbytes, (flash, q.nbytes)
    assert flash < 0.1 * scores_bytes, (flash, scores_bytes)


def test_attention_argument_errors():
    q = np.zeros((1, 3, 4, 8))
    with pytest.raises(ValueError, match="must divide"):
        K.attention_forward(q, np.zeros((1, 2, 4, 8)), np.zeros((1, 2, 4, 8)))
    with pytest.raises(ValueError, match="key_padding_mask"):
        K.attention_forward(q, q, q, key_padding_mask=np.ones((1, 5), bool))
    with pytest.raises(TypeError, match="boolean"):
        K.attention_forward(q, q, q, key_padding_mask=np.ones((1, 4)))
