"""HNSW: recall against exact search, structural invariants, persistence, incremental adds."""

import math
import time

import numpy as np
import pytest

from tinyllm.rag.exact import exact_search
from tinyllm.rag.hnsw import HNSWIndex
from tinyllm.rag.persistence import load_index


def gaussian(n, d, seed):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def recall_at_k(found, truth):
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k]) & set(t)) / k for f, t in zip(found, truth)]))


@pytest.fixture(scope="module")
def built_2000():
    x = gaussian(2000, 32, 0)
    index = HNSWIndex(32, M=16, ef_construction=100, ef=50, seed=100)
    index.add(x)
    return x, index


def check_invariants(index):
    """Degree bounds, valid and unique neighbour ids, layer membership, entry point."""
    levels = index.levels
    n = len(index)
    assert index.max_level == levels.max()
    assert levels[index.entry_point] == index.max_level
    for layer in range(index.max_level + 1):
        bound = 2 * index.M if layer == 0 else index.M
        members = np.flatnonzero(levels >= layer)
        degrees = index.degrees(layer)
        assert degrees.shape == members.shape
        assert degrees.max(initial=0) <= bound
        if members.size > 1:
            assert degrees.min() >= 1, f"isolated node on layer {layer}"
        for node in members:
            nbrs = index.neighbours(int(node), layer)
            assert len(set(nbrs.tolist())) == nbrs.size, "duplicate neighbour"
            assert node not in nbrs, "self loop"
            assert ((nbrs >= 0) & (nbrs < n)).all()
            assert (levels[nbrs] >= layer).all(), "neighbour not on this layer"


def test_recall_2000_d32(built_2000):
    x, index = built_2000
    queries = gaussian(200, 32, 1)
    _, truth = exact_search(x, queries, 10)
    _, ids = index.search(queries, 10, ef=50)
    assert recall_at_k(ids, truth) >= 0.95  # hnswlib: 0.988 at these settings


def test_recall_2000_d384():
    x = gaussian(2000, 384, 2)
    queries = gaussian(100, 384, 3)
    index = HNSWIndex(384, M=16, ef_construction=100)
    index.add(x)
    _, truth = exact_search(x, queries, 10)
    _, ids = index.search(queries, 10, ef=200)
    assert recall_at_k(ids, truth) >= 0.95


def test_structural_invariants(built_2000):
    check_invariants(built_2000[1])


def test_level_distribution_geometric():
    """P(level >= l) = M^-l: check l = 1, 2 within 4 standard deviations."""
    index = HNSWIndex(8, M=16)
    assert index.mL == pytest.approx(1 / math.log(16))
    n = 200_000
    levels = index.sample_levels(n)
    assert levels.min() == 0
    for l in (1, 2):
        p = 16.0**-l
        frac = float((levels >= l).mean())
        assert abs(frac - p) <= 4 * math.sqrt(p * (1 - p) / n), (l, frac, p)


def test_built_levels_match_sampler(built_2000):
    _, index = built_2000
    frac = float((index.levels >= 1).mean())
    n, p = len(index), 1 / 16
    assert abs(frac - p) <= 4 * math.sqrt(p * (1 - p) / n)


def test_entry_point_promotion(monkeypatch):
    """The entry point moves to each new node whose level exceeds the current top level."""
    forced = iter([0, 0, 2, 1, 3, 0, 3])
    index = HNSWIndex(4, M=4, ef_construction=16)
    monkeypatch.setattr(
        index, "sample_levels", lambda n: np.array([next(forced) for _ in range(n)], np.int32)
    )
    x = gaussian(7, 4, 5)
    expected_entry = [0, 0, 2, 2, 4, 4, 4]  # a later node of equal level does not take over
    for i in range(7):
        index.add(x[i : i + 1])
        assert index.entry_point == expected_entry[i]
        assert index.max_level == index.levels.max()
    check_invariants(index)


def test_full_beam_is_exact():
    """ef >= N on a connected graph visits everything: recall 1."""
    x = gaussian(300, 16, 6)
    index = HNSWIndex(16, M=4, ef_construction=32)
    index.add(x)
    _, truth = exact_search(x, x[:50], 5)
    _, ids = index.search(x[:50], 5, ef=300)
    assert recall_at_k(ids, truth) == 1.0


@pytest.mark.parametrize("metric", ["ip", "cosine"])
def test_similarity_metrics(metric):
    x = gaussian(1000, 16, 7)
    queries = gaussian(50, 16, 8)
    index = HNSWIndex(16, metric=metric, M=12, ef_construction=80)
    index.add(x)
    ref_scores, truth = exact_search(x if metric == "ip" else x, queries, 10, metric)
    scores, ids = index.search(queries, 10, ef=100)
    assert recall_at_k(ids, truth) >= 0.95
    assert np.all(np.diff(scores, axis=1) <= 1e-6), "similarities must be descending"
    hit = ids[:, 0] == truth[:, 0]
    np.testing.assert_allclose(scores[hit, 0], ref_scores[hit, 0], rtol=1e-4, atol=1e-5)


def test_l2_scores_are_squared_distances(built_2000):
    x, index = built_2000
    scores, ids = index.search(x[:5] + 0.01, 3)
    direct = ((x[ids] - (x[:5] + 0.01)[:, None, :]) ** 2).sum(-1)
    np.testing.assert_allclose(scores, direct, rtol=1e-4, atol=1e-4)
    assert (ids[:, 0] == np.arange(5)).all()


def test_add_after_build_and_save_load_round_trip(tmp_path):
    x = gaussian(1500, 24, 9)
    queries = gaussian(100, 24, 10)
    index = HNSWIndex(24, M=8, ef_construction=64, ef=64, seed=3)
    index.add(x[:1000])
    path = index.save(tmp_path / "hnsw.npz")
    loaded = HNSWIndex.load(path)
    assert isinstance(load_index(path), HNSWIndex)
    for a, b in ((index.search(queries, 10), loaded.search(queries, 10)),):
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[0], b[0])
    # adding after build (and after load) works and gives the same graph either way
    index.add(x[1000:])
    loaded.add(x[1000:])
    np.testing.assert_array_equal(index.levels, loaded.levels)
    np.testing.assert_array_equal(index.search(queries, 10)[1], loaded.search(queries, 10)[1])
    _, truth = exact_search(x, queries, 10)
    assert recall_at_k(index.search(queries, 10)[1], truth) >= 0.9
    assert index.search(x[1200:1201], 1)[1][0, 0] == 1200
    check_invariants(index)


def test_save_is_atomic_and_pickle_free(tmp_path):
    index = HNSWIndex(4, M=4)
    index.add(gaussian(50, 4, 11))
    path = index.save(tmp_path / "a.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz"], "temp file left behind"
    with np.load(path, allow_pickle=False) as archive:
        assert all(archive[name].dtype != object for name in archive.files)


def test_errors_name_function_and_shape():
    index = HNSWIndex(8)
    with pytest.raises(ValueError, match=r"HNSWIndex.add: vectors must have 8 columns.*\(3, 5\)"):
        index.add(np.zeros((3, 5)))
    assert len(index) == 0
    with pytest.raises(ValueError, match="HNSWIndex: M must be"):
        HNSWIndex(8, M=1)
    empty_scores, empty_ids = index.search(np.zeros((2, 8)), 3)
    assert (empty_ids == -1).all()


def test_fewer_vectors_than_k():
    index = HNSWIndex(3, M=4)
    index.add(gaussian(4, 3, 12))
    scores, ids = index.search(gaussian(1, 3, 13), 6)
    assert sorted(ids[0, :4].tolist()) == [0, 1, 2, 3]
    assert (ids[0, 4:] == -1).all() and np.isinf(scores[0, 4:]).all()


@pytest.mark.slow
@pytest.mark.parametrize("d, M, ef", [(32, 16, 100), (384, 16, 400)])
def test_recall_10000(d, M, ef):
    """The full-size check: 10,000 Gaussian vectors, efC = 200; hnswlib reaches 0.987 (d=32,
    ef=100) and 0.97 (d=384, ef=400) with the same settings."""
    x = gaussian(10_000, d, 20 + d)
    queries = gaussian(200, d, 21 + d)
    index = HNSWIndex(d, M=M, ef_construction=200)
    start = time.perf_counter()
    index.add(x)
    build = time.perf_counter() - start
    _, truth = exact_search(x, queries, 10)
    start = time.perf_counter()
    _, ids = index.search(queries, 10, ef=ef)
    search = time.perf_counter() - start
    recall = recall_at_k(ids, truth)
    print(
        f"\nHNSW N=10000 d={d} M={M} efC=200 ef={ef}: recall@10={recall:.3f} "
        f"build {build:.1f}s, {len(queries) / search:.0f} QPS"
    )
    assert recall >= 0.95
    check_invariants(index)


def test_hnswlib_oracle_recall_printed():
    hnswlib = pytest.importorskip("hnswlib")
    x = gaussian(2000, 32, 0)
    queries = gaussian(200, 32, 1)
    _, truth = exact_search(x, queries, 10)
    ref = hnswlib.Index("l2", 32)
    ref.init_index(2000, M=16, ef_construction=100, random_seed=100)
    ref.set_num_threads(1)
    ref.add_items(x)
    ref.set_ef(50)
    ref_ids, _ = ref.knn_query(queries, 10)
    ours = HNSWIndex(32, M=16, ef_construction=100)
    ours.add(x)
    r_ours = recall_at_k(ours.search(queries, 10, ef=50)[1], truth)
    r_ref = recall_at_k(ref_ids, truth)
    print(f"\nrecall@10 N=2000 d=32 M=16 efC=100 ef=50: tinyllm {r_ours:.3f}, hnswlib {r_ref:.3f}")
    assert r_ours >= r_ref - 0.03
