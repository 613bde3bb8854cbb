"""IVF and LSH: recall grows with nprobe / tables; k-means; persistence; adds after build."""

import math

import numpy as np
import pytest

from tinyllm.rag.exact import exact_search
from tinyllm.rag.ivf import IVFIndex
from tinyllm.rag.kmeans import kmeans
from tinyllm.rag.lsh import LSHIndex, collision_probability, hamming_masks
from tinyllm.rag.persistence import load_index


def gaussian(n, d, seed):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def recall_at_k(found, truth):
    k = truth.shape[1]
    return float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth)]))


@pytest.fixture(scope="module")
def dataset():
    x, q = gaussian(5000, 32, 0), gaussian(100, 32, 1)
    return x, q, exact_search(x, q, 10)[1], exact_search(x, q, 10, "cosine")[1]


def test_kmeans_recovers_separated_clusters():
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((5, 8)) * 20
    labels_true = rng.integers(5, size=1000)
    x = centres[labels_true] + rng.standard_normal((1000, 8))
    centroids, labels, inertia = kmeans(x, 5, seed=0)
    # every true cluster maps to exactly one found cluster
    pairs = set(zip(labels_true.tolist(), labels.tolist()))
    assert len(pairs) == 5
    assert inertia / 1000 < 8 * 1.5  # about the noise variance per point


def test_ivf_recall_rises_with_nprobe(dataset):
    x, q, truth, _ = dataset
    index = IVFIndex(32, nlist=64, seed=0)
    index.build(x)
    assert index.list_sizes.sum() == 5000
    recalls = [recall_at_k(index.search(q, 10, nprobe=p)[1], truth) for p in (1, 4, 16, 64)]
    assert all(a <= b for a, b in zip(recalls, recalls[1:])), recalls
    assert recalls[0] < 0.5 and recalls[-1] == 1.0, recalls


def test_ivf_add_after_build_and_round_trip(dataset, tmp_path):
    x, q, truth, _ = dataset
    index = IVFIndex(32, nlist=32, nprobe=32)
    index.train(x)
    index.add(x[:3000])
    index.add(x[3000:])
    scores, ids = index.search(q, 10)
    assert recall_at_k(ids, truth) == 1.0
    loaded = load_index(index.save(tmp_path / "ivf.npz"))
    assert isinstance(loaded, IVFIndex)
    np.testing.assert_array_equal(loaded.search(q, 10)[1], ids)
    np.testing.assert_array_equal(loaded.search(q, 10)[0], scores)


def test_ivf_cosine_and_errors():
    x = gaussian(500, 8, 3)
    index = IVFIndex(8, nlist=10, metric="cosine", nprobe=10)
    with pytest.raises(RuntimeError, match="IVFIndex.add: the index is not trained"):
        index.add(x)
    index.build(x)
    scores, ids = index.search(x[:5], 3)
    assert (ids[:, 0] == np.arange(5)).all()
    np.testing.assert_allclose(scores[:, 0], 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="IVFIndex.train: need at least nlist=10 vectors"):
        IVFIndex(8, nlist=10).train(x[:5])


def test_lsh_collision_rate_matches_theory():
    """Per-bit agreement of random hyperplanes is 1 - theta/pi (Monte Carlo, 4 sigma)."""
    rng = np.random.default_rng(4)
    a = rng.standard_normal(16)
    b = a + 0.8 * rng.standard_normal(16)
    theta = math.acos(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    index = LSHIndex(16, n_bits=32, n_tables=200, seed=5)
    codes = index.hash(np.stack([a, b]).astype(np.float32))
    bits = (codes[0] ^ codes[1])[:, None] >> np.arange(32) & 1
    agree = 1.0 - bits.mean()
    p = 1 - theta / math.pi
    assert abs(agree - p) < 4 * math.sqrt(p * (1 - p) / bits.size)
    assert collision_probability(0.0, 8, 3) == 1.0
    assert collision_probability(math.pi / 2, 1, 1) == pytest.approx(0.5)


def test_lsh_recall_rises_with_tables(dataset):
    x, q, _, truth = dataset
    index = LSHIndex(32, n_bits=12, n_tables=32, metric="cosine", max_hamming=1, seed=0)
    index.add(x)
    recalls = [recall_at_k(index.search(q, 10, n_tables=t)[1], truth) for t in (1, 4, 16, 32)]
    assert all(a <= b for a, b in zip(recalls, recalls[1:])), recalls
    assert recalls[-1] > recalls[0] + 0.3, recalls
    multi = recall_at_k(index.search(q, 10, n_tables=4, max_hamming=2)[1], truth)
    assert multi >= recalls[1]


def test_lsh_add_after_build_and_round_trip(tmp_path):
    x = gaussian(1000, 16, 6)
    for metric in ("cosine", "l2"):
        index = LSHIndex(16, n_bits=8, n_tables=6, metric=metric, max_hamming=1, seed=2)
        index.add(x[:500])
        index.add(x[500:])
        scores, ids = index.search(x[700:710], 5)
        assert (ids[:, 0] == np.arange(700, 710)).all()
        loaded = load_index(index.save(tmp_path / f"lsh_{metric}.npz"))
        assert isinstance(loaded, LSHIndex)
        np.testing.assert_array_equal(loaded.search(x[:50], 5)[1], index.search(x[:50], 5)[1])


def test_hamming_masks():
    masks = hamming_masks(4, 2)
    assert masks[0] == 0 and len(masks) == 1 + 4 + 6
    assert len(set(masks.tolist())) == len(masks)
    assert max(bin(m).count("1") for m in masks) == 2


def test_faiss_ivf_oracle_printed(dataset):
    faiss = pytest.importorskip("faiss")
    x, q, truth, _ = dataset
    quantizer = faiss.IndexFlatL2(32)
    ref = faiss.IndexIVFFlat(quantizer, 32, 64)
    ref.train(x)
    ref.add(x)
    ours = IVFIndex(32, nlist=64)
    ours.build(x)
    line = []
    for nprobe in (1, 4, 16):
        ref.nprobe = nprobe
        r_ref = recall_at_k(ref.search(q, 10)[1], truth)
        r_ours = recall_at_k(ours.search(q, 10, nprobe=nprobe)[1], truth)
        line.append(f"nprobe {nprobe}: tinyllm {r_ours:.3f} faiss {r_ref:.3f}")
        assert abs(r_ours - r_ref) < 0.15
    print("\nIVF recall@10 N=5000 d=32 nlist=64: " + "; ".join(line))
