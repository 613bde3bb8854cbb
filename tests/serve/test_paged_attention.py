"""Paged attention through a shuffled block table equals contiguous attention."""

import math

import numpy as np
import pytest

from tinyllm.kernels import use as use_tier
from tinyllm.kernels.paged_attention import paged_attention_forward, paged_prefill_attention


def contiguous(q, K, V):
    """q [H, D] against K, V [Hkv, L, D]: the decoder's formulation, written out."""
    Hkv, L, D = K.shape
    H = q.shape[0]
    qg = q.reshape(Hkv, H // Hkv, D)
    s = (qg @ K.swapaxes(-1, -2)) * (1.0 / math.sqrt(D))
    s -= s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    return (p @ V).reshape(H, D)


def scatter(rng, seqs, S, num_blocks):
    """A cache holding each sequence's K/V [Hkv, L, D] in randomly permuted blocks."""
    Hkv, D = seqs[0][0].shape[0], seqs[0][0].shape[2]
    k_cache = rng.normal(size=(num_blocks, Hkv, S, D))  # garbage in unused slots
    v_cache = rng.normal(size=(num_blocks, Hkv, S, D))
    free = list(rng.permutation(num_blocks))
    tables = []
    for K, V in seqs:
        L = K.shape[1]
        table = [free.pop() for _ in range(-(-L // S))]
        for t in range(L):
            k_cache[table[t // S], :, t % S] = K[:, t]
            v_cache[table[t // S], :, t % S] = V[:, t]
        tables.append(table)
    width = max(map(len, tables))
    bt = np.zeros((len(tables), width), dtype=np.int64)
    for i, t in enumerate(tables):
        bt[i, : len(t)] = t
    return k_cache, v_cache, bt


@pytest.mark.parametrize("S", [1, 4, 16])
@pytest.mark.parametrize("H,Hkv", [(4, 4), (4, 2), (6, 1)])
def test_decode_equals_contiguous_exactly(S, H, Hkv):
    rng = np.random.default_rng(S * 10 + H + Hkv)
    D, lens = 8, [1, 5, 17, 33]
    seqs = [(rng.normal(size=(Hkv, L, D)), rng.normal(size=(Hkv, L, D))) for L in lens]
    k_cache, v_cache, bt = scatter(rng, seqs, S, num_blocks=sum(-(-L // S) for L in lens) + 3)
    q = rng.normal(size=(len(lens), H, D))
    with use_tier("reference"):
        out = paged_attention_forward(q, k_cache, v_cache, bt, lens)
    for n, (K, V) in enumerate(seqs):
        np.testing.assert_array_equal(out[n], contiguous(q[n], K, V))  # exact: a gather


def test_numba_tier_matches_the_reference():
    from tinyllm.kernels import last_tier

    rng = np.random.default_rng(1)
    Hkv, H, D, S, lens = 2, 4, 8, 4, [3, 9, 16]
    seqs = [(rng.normal(size=(Hkv, L, D)), rng.normal(size=(Hkv, L, D))) for L in lens]
    k_cache, v_cache, bt = scatter(rng, seqs, S, num_blocks=12)
    q = rng.normal(size=(3, H, D))
    with use_tier("reference"):
        ref = paged_attention_forward(q, k_cache, v_cache, bt, lens)
    with use_tier("numba"):
        got = paged_attention_forward(q, k_cache, v_cache, bt, np.array(lens))
    assert last_tier("paged_attention_forward") == "numba"
    # float64, different summation order (online softmax): 1e-12 is ~1e4 ulps of O(1) values
    np.testing.assert_allclose(got, ref, atol=1e-12)


def test_prefill_chunk_is_causal_bottom_right():
    rng = np.random.default_rng(2)
    Hkv, H, D, S, L, Tq = 2, 4, 8, 4, 11, 5
    K, V = rng.normal(size=(Hkv, L, D)), rng.normal(size=(Hkv, L, D))
    k_cache, v_cache, bt = scatter(rng, [(K, V)], S, num_blocks=6)
    q = rng.normal(size=(Tq, H, D))
    out = paged_prefill_attention(q, k_cache, v_cache, bt[0], L)
    for j in range(Tq):  # query j sits at position L - Tq + j and sees keys 0 .. that
        end = L - Tq + j + 1
        np.testing.assert_allclose(out[j], contiguous(q[j], K[:, :end], V[:, :end]), atol=1e-14)


def test_errors_name_the_function_and_shapes():
    with pytest.raises(ValueError, match="paged_attention_forward: k_cache and v_cache"):
        paged_attention_forward(
            np.zeros((1, 2, 4)), np.zeros((2, 2, 4)), np.zeros((2, 2, 4)), [[0]], [1]
        )
