"""Similarities, top-k selection and exact search (against brute force and faiss)."""

import numpy as np
import pytest

from tinyllm.rag.exact import ExactIndex, exact_search, top_k
from tinyllm.rag.persistence import load_index
from tinyllm.rag.similarity import (
    cosine_similarity,
    dot_similarity,
    l2_distance,
    normalize,
    pairwise_scores,
)


def data(n, d, seed, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)


def test_similarities_match_definitions():
    a, b = data(5, 7, 0), data(6, 7, 1)
    dot = np.array([[x @ y for y in b] for x in a])
    cos = np.array([[x @ y / np.linalg.norm(x) / np.linalg.norm(y) for y in b] for x in a])
    l2 = np.array([[((x - y) ** 2).sum() for y in b] for x in a])
    np.testing.assert_allclose(dot_similarity(a, b), dot, rtol=1e-12)
    np.testing.assert_allclose(cosine_similarity(a, b), cos, rtol=1e-12)
    np.testing.assert_allclose(l2_distance(a, b), l2, rtol=1e-10)
    np.testing.assert_allclose(l2_distance(a, b, squared=False), np.sqrt(l2), rtol=1e-10)
    assert dot_similarity(a[0], b).shape == (1, 6)


def test_unit_vectors_rank_identically_under_all_metrics():
    base, queries = normalize(data(300, 16, 2)), normalize(data(10, 16, 3))
    ids = [exact_search(base, queries, 10, m)[1] for m in ("l2", "ip", "cosine")]
    np.testing.assert_array_equal(ids[0], ids[1])
    np.testing.assert_array_equal(ids[0], ids[2])


@pytest.mark.parametrize("largest", [True, False])
def test_top_k_equals_full_argsort(largest):
    scores = data(20, 500, 4)
    values, idx = top_k(scores, 7, largest=largest)
    full = np.argsort(-scores if largest else scores, axis=1)[:, :7]
    np.testing.assert_array_equal(idx, full)
    np.testing.assert_array_equal(values, np.take_along_axis(scores, full, 1))


def test_top_k_ties_are_broken_by_index():
    scores = np.array([[1.0, 3.0, 3.0, 0.0, 3.0, 3.0]])
    assert top_k(scores, 3)[1].tolist() == [[1, 2, 4]]
    assert top_k(scores, 10)[1].tolist() == [[1, 2, 4, 5, 0, 3]]
    assert top_k(np.zeros(6), 2)[1].tolist() == [0, 1]


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_exact_search_equals_bruteforce_argsort(metric):
    base, queries = data(2000, 24, 5), data(30, 24, 6)
    if metric == "l2":
        full = ((queries[:, None, :] - base[None, :, :]) ** 2).sum(-1)
        order = np.argsort(full, axis=1)
    elif metric == "ip":
        full = queries @ base.T
        order = np.argsort(-full, axis=1)
    else:
        full = (queries @ base.T) / np.linalg.norm(queries, axis=1)[:, None]
        full = full / np.linalg.norm(base, axis=1)[None, :]
        order = np.argsort(-full, axis=1)
    scores, ids = exact_search(base, queries, 10, metric)
    np.testing.assert_array_equal(ids, order[:, :10])
    np.testing.assert_allclose(scores, np.take_along_axis(full, order[:, :10], 1), rtol=1e-9)


def test_exact_index_float32_close_to_float64_and_round_trip(tmp_path):
    base, queries = data(1000, 16, 7), data(20, 16, 8)
    index = ExactIndex(16, "l2")
    index.add(base[:600])
    index.add(base[600:])  # adding after build
    _, ids64 = exact_search(base, queries, 5)
    scores, ids = index.search(queries, 5)
    assert (ids == ids64).mean() > 0.99
    loaded = load_index(index.save(tmp_path / "exact.npz"))
    assert isinstance(loaded, ExactIndex)
    np.testing.assert_array_equal(loaded.search(queries, 5)[1], ids)
    assert len(ExactIndex.load(tmp_path / "exact.npz")) == 1000


def test_exact_pads_when_k_exceeds_n():
    scores, ids = exact_search(data(3, 2, 9), data(2, 2, 10), 5)
    assert (ids[:, 3:] == -1).all() and np.isinf(scores[:, 3:]).all()


def test_errors():
    with pytest.raises(
        ValueError, match=r"exact_search: queries must have 4 columns, got shape \(2, 3\)"
    ):
        exact_search(np.zeros((5, 4)), np.zeros((2, 3)), 1)
    with pytest.raises(ValueError, match="metric must be one of"):
        pairwise_scores(np.zeros((1, 2)), np.zeros((1, 2)), "manhattan")
    with pytest.raises(ValueError, match="NaN"):
        ExactIndex(2).add(np.array([[np.nan, 0.0]]))


def test_faiss_exact_oracle():
    faiss = pytest.importorskip("faiss")
    base, queries = data(3000, 32, 11, np.float32), data(50, 32, 12, np.float32)
    flat = faiss.IndexFlatL2(32)
    flat.add(base)
    ref_d, ref_i = flat.search(queries, 10)
    index = ExactIndex(32, "l2")
    index.add(base)
    scores, ids = index.search(queries, 10)
    assert (ids == ref_i).mean() > 0.995  # float32 rounding may swap near-ties
    np.testing.assert_allclose(scores, ref_d, rtol=1e-3, atol=1e-3)
    ip = faiss.IndexFlatIP(32)
    ip.add(base)
    _, ref_ip = ip.search(queries, 10)
    index_ip = ExactIndex(32, "ip")
    index_ip.add(base)
    assert (index_ip.search(queries, 10)[1] == ref_ip).mean() > 0.995
