"""Reciprocal rank fusion and min-max score fusion."""

import numpy as np
import pytest

from tinyllm.rag.fusion import min_max_normalize, reciprocal_rank_fusion, score_fusion


def test_rrf_closed_form():
    fused = dict(reciprocal_rank_fusion([["d1", "d2", "d3"], ["d3", "d1", "d4"]]))
    assert fused["d1"] == pytest.approx(1 / 61 + 1 / 62)  # 0.0325225
    assert fused["d3"] == pytest.approx(1 / 63 + 1 / 61)  # 0.0322665
    assert fused["d2"] == pytest.approx(1 / 62)  # 0.0161290
    assert fused["d4"] == pytest.approx(1 / 63)  # 0.0158730
    assert fused["d1"] == pytest.approx(0.0325225, abs=1e-7)
    order = [d for d, _ in reciprocal_rank_fusion([["d1", "d2", "d3"], ["d3", "d1", "d4"]])]
    assert order == ["d1", "d3", "d2", "d4"]


def test_rrf_ranks_are_one_based_and_weighted():
    fused = dict(reciprocal_rank_fusion([["a"]], k=0))
    assert fused["a"] == 1.0  # 1 / (0 + 1): a 0-based rank would divide by zero
    fused = dict(reciprocal_rank_fusion([["a", "b"], ["b"]], weights=[2.0, 1.0]))
    assert fused["a"] == pytest.approx(2 / 61)
    assert fused["b"] == pytest.approx(2 / 62 + 1 / 61)


def test_rrf_invariant_to_monotone_score_transforms():
    rng = np.random.default_rng(0)
    s1, s2 = rng.random(20), rng.standard_normal(20)

    def ranking(scores):
        return list(np.argsort(-scores))

    a = reciprocal_rank_fusion([ranking(s1), ranking(s2)])
    b = reciprocal_rank_fusion([ranking(np.exp(5 * s1)), ranking(s2**3 + 7)])
    assert a == b


def test_rrf_rejects_duplicates_and_bad_weights():
    with pytest.raises(ValueError, match="appears twice"):
        reciprocal_rank_fusion([["a", "a"]])
    with pytest.raises(ValueError, match="2 weights for 1 lists"):
        reciprocal_rank_fusion([["a"]], weights=[1, 2])


def test_min_max_score_fusion_by_hand():
    bm25 = {"a": 10.0, "b": 4.0, "c": 7.0}  # -> a 1, b 0, c 0.5
    dense = {"b": 0.9, "c": 0.5, "d": 0.1}  # -> b 1, c 0.5, d 0
    fused = dict(score_fusion([bm25, dense], weights=[0.5, 0.5]))
    assert fused == pytest.approx({"a": 0.5, "b": 0.5, "c": 0.5, "d": 0.0})
    order = [d for d, _ in score_fusion([bm25, dense])]
    # a, b, c tie at 1.0: first appearance scanning BM25 best first (a 10, c 7, b 4)
    assert order == ["a", "c", "b", "d"]
    assert min_max_normalize({"x": 3.0, "y": 3.0}) == {"x": 1.0, "y": 1.0}
    assert min_max_normalize({}) == {}


def test_score_fusion_does_not_depend_on_insertion_order():
    rng = np.random.default_rng(0)
    # scores on a coarse grid, so that fused scores tie often
    lists = [{i: float(rng.integers(0, 3)) for i in rng.permutation(12)[:9]} for _ in range(2)]
    want = score_fusion(lists, weights=[0.5, 1.0])
    for _ in range(5):
        shuffled = [{k: m[k] for k in rng.permutation(list(m))} for m in lists]
        assert score_fusion(shuffled, weights=[0.5, 1.0]) == want
    # ids that do not compare: sorted by score alone, still a full fusion
    mixed = score_fusion([{"a": 1.0, 2: 3.0}])
    assert mixed == [(2, 1.0), ("a", 0.0)]
