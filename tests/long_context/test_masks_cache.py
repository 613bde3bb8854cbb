"""Sliding-window and attention-sink masks, and the evicting KV cache.

Oracles: a NumPy softmax over exactly the keys each pattern allows (written per query, no
mask), the existing ``window=`` path of scaled_dot_product_attention, and recomputation over
the tokens the cache kept."""

import tracemalloc

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
from tinyllm.nn.long_context import (
    SinkKVCache,
    attention_sink_mask,
    long_context_mask,
    longformer_mask,
    sliding_window_attention,
    sliding_window_mask,
)

# float64 throughout; the paths compared do the same sums in different orders: 1e-12
TOL = {"rtol": 1e-12, "atol": 1e-12}


def _qkv(rng, B=2, H=3, T=11, D=4):
    return [rng.standard_normal((B, H, T, D)) for _ in range(3)]


def _naive(q, k, v, visible):
    """softmax over the keys visible(p, j) says, query by query (no mask array)."""
    out = np.zeros(q.shape[:-1] + (v.shape[-1],))
    Tq, Tk = q.shape[-2], k.shape[-2]
    for i in range(Tq):
        p = Tk - Tq + i
        js = [j for j in range(Tk) if visible(p, j)]
        s = np.einsum("bhd,bhjd->bhj", q[..., i, :], k[..., js, :]) / np.sqrt(q.shape[-1])
        w = np.exp(s - s.max(-1, keepdims=True))
        out[..., i, :] = np.einsum("bhj,bhjd->bhd", w / w.sum(-1, keepdims=True), v[..., js, :])
    return out


@pytest.mark.parametrize("window", [1, 3, 11, 20])
def test_sliding_window_mask_equals_naive_and_sdpa_window(window):
    q, k, v = _qkv(np.random.default_rng(window))
    tq, tk, tv = (tinyllm.tensor(a) for a in (q, k, v))
    masked = F.scaled_dot_product_attention(
        tq, tk, tv, attn_mask=sliding_window_mask(11, window=window)
    )
    np.testing.assert_allclose(
        masked.data, _naive(q, k, v, lambda p, j: p - window < j <= p), **TOL
    )
    native = F.scaled_dot_product_attention(tq, tk, tv, window=window)
    np.testing.assert_allclose(masked.data, native.data, **TOL)


@pytest.mark.parametrize("sinks,window", [(1, 2), (4, 3), (0, 5), (2, 1), (20, 3)])
def test_attention_sink_mask_equals_naive(sinks, window):
    q, k, v = _qkv(np.random.default_rng(sinks * 10 + window), T=12)
    mask = attention_sink_mask(12, sinks=sinks, window=window)
    out = F.scaled_dot_product_attention(*(tinyllm.tensor(a) for a in (q, k, v)), attn_mask=mask)
    visible = lambda p, j: j <= p and (j < sinks or j > p - window)  # noqa: E731
    np.testing.assert_allclose(out.data, _naive(q, k, v, visible), **TOL)


def test_masks_bottom_right_aligned_for_decoding():
    # 2 new queries after 5 cached keys sit at positions 5, 6
    m = attention_sink_mask(2, 7, sinks=1, window=2).numpy()
    np.testing.assert_array_equal(m, [[1, 0, 0, 0, 1, 1, 0], [1, 0, 0, 0, 0, 1, 1]])
    np.testing.assert_array_equal(
        sliding_window_mask(2, 7, window=2).numpy(), m * [0, 1, 1, 1, 1, 1, 1]
    )


@pytest.mark.parametrize(
    "sinks,window,chunks",
    [
        (2, 3, [4, 1, 1, 1, 1, 1, 1, 1]),
        (0, 4, [1] * 10),
        (3, 2, [5, 3, 1, 2, 1]),
        (1, 6, [9, 1, 1]),
    ],
)
def test_cached_decoding_with_eviction_equals_full_and_recomputed(sinks, window, chunks):
    rng = np.random.default_rng(len(chunks) + sinks)
    T = sum(chunks)
    q, k, v = _qkv(rng, B=1, H=2, T=T, D=3)
    tq, tk, tv = (tinyllm.tensor(a) for a in (q, k, v))
    full = F.scaled_dot_product_attention(
        tq, tk, tv, attn_mask=attention_sink_mask(T, sinks=sinks, window=window)
    ).data
    cache, start = SinkKVCache(window, sinks), 0
    for n in chunks:
        sl = slice(start, start + n)
        ck, cv, mask = cache.update(tk[..., sl, :], tv[..., sl, :])
        out = F.scaled_dot_product_attention(tq[..., sl, :], ck, cv, attn_mask=mask).data
        np.testing.assert_allclose(out, full[..., sl, :], **TOL)
        # bounded memory: only what these queries may read, plus the new tokens
        assert len(cache) <= sinks + window - 1 + n
        # the kept keys are the tokens at cache.positions, in order
        np.testing.assert_array_equal(ck.data, k[..., cache.positions, :])
        # recompute over the kept tokens alone, query by query, with no mask at all
        for i in range(n):
            p = start + i
            keep = [j for j in range(p + 1) if j < sinks or j > p - window]
            assert set(keep) <= set(cache.positions.tolist())
            ref = F.scaled_dot_product_attention(
                tq[..., p : p + 1, :],
                tinyllm.tensor(k[..., keep, :]),
                tinyllm.tensor(v[..., keep, :]),
            ).data
            np.testing.assert_allclose(out[..., i : i + 1, :], ref, **TOL)
        start += n
    assert cache.seen == T
    np.testing.assert_array_equal(cache.cache_positions(), np.arange(len(cache)))


def test_cache_after_one_token_steps_holds_sinks_plus_window():
    cache = SinkKVCache(window=3, sinks=2)
    for _ in range(10):
        cache.update(tinyllm.zeros(1, 1, 1, 2), tinyllm.zeros(1, 1, 1, 2))
    assert len(cache) == 5
    assert cache.positions.tolist() == [0, 1, 7, 8, 9]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="window must be >= 1"):
        SinkKVCache(window=0)
    with pytest.raises(ValueError, match="sinks"):
        long_context_mask(np.arange(2), np.arange(2), 2, sinks=-1)
    with pytest.raises(ValueError, match="longformer_mask: window must be even"):
        longformer_mask(4, 3)
    with pytest.raises(ValueError, match="global_tokens"):
        longformer_mask(4, 2, [4])
    with pytest.raises(ValueError, match="Tk=2 must be >= Tq=3"):
        sliding_window_mask(3, 2, window=1)
    cache = SinkKVCache(window=2)
    cache.update(tinyllm.zeros(1, 2, 3), tinyllm.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="does not extend"):
        cache.update(tinyllm.zeros(1, 1, 4), tinyllm.zeros(1, 1, 4))
    with pytest.raises(ValueError, match="share their leading dims"):
        cache.update(tinyllm.zeros(1, 1, 3), tinyllm.zeros(2, 1, 3))


@pytest.mark.parametrize("window,global_tokens", [(2, [0]), (4, [0, 7]), (0, []), (30, [3])])
def test_longformer_mask_equals_naive(window, global_tokens):
    q, k, v = _qkv(np.random.default_rng(window), T=10)
    mask = longformer_mask(10, window, global_tokens)
    out = F.scaled_dot_product_attention(*(tinyllm.tensor(a) for a in (q, k, v)), attn_mask=mask)

    def visible(i, j):  # _naive's p is i here (Tq == Tk)
        return abs(i - j) <= window // 2 or i in global_tokens or j in global_tokens

    np.testing.assert_allclose(out.data, _naive(q, k, v, visible), **TOL)


def test_streaming_llm_rope_positions_inside_the_cache():
    """StreamingLLM: keys cached before RoPE, rotated at their index in the cache; decoding
    token by token equals attention over the kept tokens re-numbered 0 .. n-1."""
    sinks, window, T, D = 2, 3, 12, 4
    q, k, v = _qkv(np.random.default_rng(7), B=1, H=2, T=T, D=D)
    cache = SinkKVCache(window, sinks)
    for p in range(T):
        ck, cv, mask = cache.update(
            tinyllm.tensor(k[..., p : p + 1, :]), tinyllm.tensor(v[..., p : p + 1, :])
        )
        assert mask.numpy().all()  # decoding: every kept token is visible
        pos = cache.cache_positions()
        kr = F.rotary_embedding(ck, positions=pos)
        qr = F.rotary_embedding(tinyllm.tensor(q[..., p : p + 1, :]), positions=pos[-1:])
        out = F.scaled_dot_product_attention(qr, kr, cv, attn_mask=mask).data
        keep = [j for j in range(p + 1) if j < sinks or j > p - window]
        n = len(keep)
        kk = F.rotary_embedding(tinyllm.tensor(k[..., keep, :]), positions=np.arange(n))
        qq = F.rotary_embedding(tinyllm.tensor(q[..., p : p + 1, :]), positions=[n - 1])
        ref = F.scaled_dot_product_attention(qq, kk, tinyllm.tensor(v[..., keep, :])).data
        np.testing.assert_allclose(out, ref, **TOL)
        assert len(cache) == min(p + 1, sinks + window)


@pytest.mark.parametrize("sinks,window,chunk", [(0, 4, 5), (2, 3, 4), (1, 7, 1), (0, 30, 8)])
def test_chunked_sliding_window_attention_equals_masked_with_gradients(sinks, window, chunk):
    rng = np.random.default_rng(window)
    arrays = _qkv(rng, B=1, H=2, T=23, D=3)
    cot = tinyllm.tensor(rng.standard_normal((1, 2, 23, 3)))
    full = [tinyllm.tensor(a, requires_grad=True) for a in arrays]
    out = F.scaled_dot_product_attention(
        *full, attn_mask=attention_sink_mask(23, sinks=sinks, window=window)
    )
    out.backward(cot)
    blocks = [tinyllm.tensor(a, requires_grad=True) for a in arrays]
    out_b = sliding_window_attention(*blocks, window=window, sinks=sinks, chunk_size=chunk)
    out_b.backward(cot)
    np.testing.assert_allclose(out_b.data, out.data, **TOL)
    for a, b in zip(full, blocks):
        np.testing.assert_allclose(b.grad.data, a.grad.data, **TOL)


def test_chunked_sliding_window_attention_memory_is_linear_in_T():
    """T = 4096, window 64: forward + backward allocate far less than one [T, T] array."""
    T = 4096
    rng = np.random.default_rng(0)
    ts = [
        tinyllm.tensor(rng.standard_normal((1, 1, T, 8)).astype(np.float32), requires_grad=True)
        for _ in range(3)
    ]
    tracemalloc.start()
    sliding_window_attention(*ts, window=64, chunk_size=64).sum().backward()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < T * T * 4 / 8, f"peak {peak / 1e6:.1f} MB vs one [T, T]: {T * T * 4 / 1e6} MB"
