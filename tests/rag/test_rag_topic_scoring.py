"""The learned topic score: features against a by-hand computation, ranking against the
hand-set formula and the store, the listwise fit against a planted ranking, the shipped
weights against the frozen round-7 and round-11 fits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tinyllm.rag.collapse import document_ranking
from tinyllm.rag.embedders import TfidfProjectionEmbedder
from tinyllm.rag.passages import corpus_passages
from tinyllm.rag.retriever import (
    ROUND7_TOPIC_WEIGHTS,
    TEMPLATES_PER_TOPIC,
    TOPIC_WEIGHTS,
    corpus_retriever,
)
from tinyllm.rag.topic_scoring import (
    TOPIC_FEATURES,
    fit_topic_weights,
    rank_topics,
    topic_objective,
    topic_table,
)

# passage 1 is shared by "a" and "b"; passage 4 (document "c") is in neither top list
MEMBERSHIPS = [{"a"}, {"a", "b"}, {"b"}, {"c"}, {"c"}]
FUSED = [(0, 0.9), (1, 0.5), (2, 0.7), (3, 0.2)]
LEXICAL = [(2, 8.0), (0, 4.0), (3, 2.0)]
DENSE = [(0, 0.8), (1, 0.6), (2, 0.3)]
TITLE = {"a": 0.1, "b": 0.2, "c": 0.3}
CENTROID = {"a": 0.5, "b": 0.4, "c": 0.6}
MAXSIM = np.array([0.2, 0.9, 0.1, 0.3, 0.4])


def test_features_by_hand():
    table = topic_table(FUSED, MEMBERSHIPS, LEXICAL, DENSE, TITLE, CENTROID, MAXSIM)
    assert table.documents == ["a", "b", "c"]  # by best fused passage: 0.9, 0.7, 0.2
    assert table.passages.tolist() == [0, 2, 3]
    expected = {
        # fused, title, centroid, dense max (floor 0.3), BM25 max / 8, MaxSim max
        "a": [0.9, 0.1, 0.5, 0.8, 4 / 8, 0.9],
        "b": [0.7, 0.2, 0.4, 0.6, 8 / 8, 0.9],
        "c": [0.2, 0.3, 0.6, 0.3, 2 / 8, 0.4],
    }
    np.testing.assert_allclose(table.features[:, :6], [expected[d] for d in table.documents])
    without = topic_table(FUSED, MEMBERSHIPS, LEXICAL, DENSE, {}, CENTROID)
    assert without.features[:, 1].tolist() == [0, 0, 0] == without.features[:, 5].tolist()
    # without operator scores or template cosines those columns are 0
    assert not without.features[:, [7, 8]].any()


def test_round_11_features_by_hand():
    # "c" has three passages, three of them in the fused list; "a" and "b" share passage 1
    memberships = [{"a"}, {"a", "b"}, {"b"}, {"c"}, {"c"}, {"c"}]
    fused = [(0, 0.9), (2, 0.7), (1, 0.5), (3, 0.2), (4, 0.15), (5, 0.1)]
    symbols = np.array([0.0, 2.0, 0.0, 4.0, 0.0, 1.0])  # operator BM25, best 4
    table = topic_table(fused, memberships, [(0, 1.0)], [(0, 0.5)], {}, dict.fromkeys("abc", 0.0),
                        None, symbols, {"a": 0.3, "c": 0.7})  # fmt: skip
    assert table.documents == ["a", "b", "c"]
    expected = {
        # log size, operators max / 4, template cosine, second fused, log(1 + listed)
        "a": [np.log(2), 2 / 4, 0.3, 0.5, np.log(3)],
        "b": [np.log(2), 2 / 4, 0.0, 0.5, np.log(3)],
        "c": [np.log(3), 4 / 4, 0.7, 0.15, np.log(4)],
    }
    names = TOPIC_FEATURES[6:]
    assert names == ("log_size", "symbol_max", "template_max", "fused_second", "fused_count")
    np.testing.assert_allclose(table.features[:, 6:], [expected[d] for d in table.documents])
    # a query without operators scores 0 everywhere; a document with one listed passage: 0
    quiet = topic_table(fused[:4], memberships, [], [(0, 0.5)], {}, dict.fromkeys("abc", 0.0),
                        None, np.zeros(6))  # fmt: skip
    assert quiet.features[:, 7].tolist() == [0, 0, 0]
    assert quiet.features[:, 9].tolist() == [0.5, 0.5, 0.0]


def test_rank_topics_is_the_weighted_sum_through_document_ranking():
    table = topic_table(FUSED, MEMBERSHIPS, LEXICAL, DENSE, TITLE, CENTROID, MAXSIM)
    weights = {"fused": 2.0, "maxsim": 1.0, "bm25_max": 0.5}
    ranked = rank_topics(table, weights, distinct_passages=False)
    w = np.array([weights.get(f, 0.0) for f in TOPIC_FEATURES])
    by_hand = dict(zip(table.documents, table.features @ w))
    assert [d for d, _, _ in ranked] == sorted(by_hand, key=lambda d: -by_hand[d])
    np.testing.assert_allclose([s for *_, s in ranked], sorted(by_hand.values(), reverse=True))
    # round 6's formula as weights: document_ranking with the title and centroid prior
    formula = {"fused": 1.0, "title": 0.3, "centroid": 0.75}
    prior = {d: 0.3 * TITLE[d] + 0.75 * CENTROID[d] for d in TITLE}
    assert rank_topics(table, formula) == document_ranking(
        FUSED, MEMBERSHIPS, prior, 1.0, distinct_passages=True
    )
    with pytest.raises(ValueError, match="unknown features"):
        rank_topics(table, {"fused": 1.0, "bm25": 1.0})
    with pytest.raises(ValueError, match="'fused' must be > 0"):
        rank_topics(table, {"title": 1.0})


def planted_tables(rng, truth: np.ndarray, n_questions: int = 60, n_documents: int = 12):
    """Tables of random features whose one positive per question is the document that the
    ``truth`` weights score highest."""
    tables, positives = [], []
    for _ in range(n_questions):
        features = rng.normal(size=(n_documents, len(TOPIC_FEATURES)))
        names = [f"d{i}" for i in range(n_documents)]
        table = topic_table([(i, 1.0) for i in range(n_documents)], [{d} for d in names], [], [],
                            {}, dict.fromkeys(names, 0.0))  # fmt: skip
        table.features = features
        tables.append(table)
        positives.append(np.arange(n_documents) == np.argmax(features @ truth))
    return tables, positives


def test_the_fit_recovers_a_planted_direction():
    rng = np.random.default_rng(0)
    truth = np.array([1.0, 0.0, 2.0, 0.0, -1.0, 1.5, -0.5, 0.0, 1.0, 0.5, 0.0])
    tables, positives = planted_tables(rng, truth, n_questions=200)
    fitted = fit_topic_weights(tables, positives, l2=1e-4)
    w = np.array([fitted[f] for f in TOPIC_FEATURES])
    assert w @ truth / (np.linalg.norm(w) * np.linalg.norm(truth)) > 0.95
    # a subset of the features: the others are left out (0 in ranking)
    some = fit_topic_weights(tables, positives, l2=1e-4, features=("fused", "centroid"))
    assert set(some) == {"fused", "centroid"} and some["centroid"] > some["fused"] > 0


def test_the_objective_gradient_matches_finite_differences_and_vanishes_at_the_fit():
    rng = np.random.default_rng(2)
    tables, positives = planted_tables(rng, rng.normal(size=len(TOPIC_FEATURES)), 20)
    groups = [(t.features, p) for t, p in zip(tables, positives)]
    w = rng.normal(size=len(TOPIC_FEATURES))
    _, grad = topic_objective(w, groups, 1e-2)
    eps = 1e-6  # central differences in float64: error O(eps^2) plus rounding O(1e-16 / eps)
    numeric = [
        (
            topic_objective(w + eps * e, groups, 1e-2)[0]
            - topic_objective(w - eps * e, groups, 1e-2)[0]
        )
        / (2 * eps)
        for e in np.eye(len(w))
    ]
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)
    fitted = fit_topic_weights(tables, positives, l2=1e-2)
    at_fit = np.array([fitted[f] for f in TOPIC_FEATURES])
    # L-BFGS-B stops at a projected gradient below 1e-5 (its pgtol)
    assert np.abs(topic_objective(at_fit, groups, 1e-2)[1]).max() < 1e-5


def test_fit_checks_its_input():
    rng = np.random.default_rng(1)
    tables, positives = planted_tables(rng, np.ones(len(TOPIC_FEATURES)), n_questions=3)
    with pytest.raises(ValueError, match="3 tables, 2 positives"):
        fit_topic_weights(tables, positives[:2])
    with pytest.raises(ValueError, match="no question has a positive"):
        fit_topic_weights(tables, [np.zeros(12, dtype=bool)] * 3)
    with pytest.raises(ValueError, match=r"positives \(11,\) for 12 documents"):
        fit_topic_weights(tables, [p[:11] for p in positives])


def test_the_store_ranks_by_its_features():
    """``search_documents`` with weights (TF-IDF store, no token index: MaxSim left at 0)
    equals the hand-set formula when the weights are that formula's."""
    passages = corpus_passages(50, 100)
    store = corpus_retriever(TfidfProjectionEmbedder(dim=64).fit([p.text for p in passages]))
    formula = {"fused": 1.0, "title": 0.3, "centroid": 0.75}
    for query in ("how do I catch an exception", "what does yield do", "format a float"):
        a = store.search_documents(query, 8, topic_weights=None)
        b = store.search_documents(query, 8, topic_weights=formula)
        assert [(d, p.id) for d, p, _ in a] == [(d, p.id) for d, p, _ in b]
        np.testing.assert_allclose([s for *_, s in a], [s for *_, s in b], rtol=1e-12)


def test_shipped_topic_weights_are_the_frozen_fits():
    results = Path(__file__).parents[2] / "experiments/results"
    round7 = json.loads((results / "rag_round7_frozen.json").read_text())
    assert round7["weights"] == ROUND7_TOPIC_WEIGHTS
    assert list(ROUND7_TOPIC_WEIGHTS) == list(TOPIC_FEATURES[:6])
    round11 = json.loads((results / "rag_round11_frozen.json").read_text())
    assert round11["weights"] == TOPIC_WEIGHTS
    assert list(TOPIC_WEIGHTS) == list(TOPIC_FEATURES)
    assert round11["pipeline"]["template_questions"] == TEMPLATES_PER_TOPIC
