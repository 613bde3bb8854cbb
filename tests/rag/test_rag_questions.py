"""The natural-language question set, the hit@k / MRR metrics and the cross-encoder head."""

from __future__ import annotations

import argparse
import re
from collections import Counter

import numpy as np
import pytest

from tinyllm.data.corpus import default_corpus_topics
from tinyllm.rag.cross_encoder import (
    LinearHead,
    corpus_headings,
    fit_head,
    head_objective,
    listwise_loss,
)
from tinyllm.rag.evaluation import SPLITS, load_questions, passage_homes, ranking_metrics
from tinyllm.rag.passages import Passage, corpus_passages

TOPICS = default_corpus_topics()


def _plain(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9_]+", " ", text.lower()).split())


def test_question_set_shape_and_labels():
    questions = load_questions()
    assert len(questions) >= 160
    assert len({q["id"] for q in questions}) == len(questions)
    assert len({_plain(q["question"]) for q in questions}) == len(questions), "duplicates"
    for q in questions:
        assert q["split"] in SPLITS
        assert q["topics"] and len(set(q["topics"])) == len(q["topics"])
        unknown = [t for t in q["topics"] if t not in TOPICS]
        assert not unknown, (q["question"], unknown)
    dev, held = load_questions("dev"), load_questions("heldout")
    assert {q["id"] for q in dev}.isdisjoint({q["id"] for q in held})
    assert len(dev) + len(held) == len(questions)
    assert abs(len(dev) - len(held)) <= 2  # half each
    with pytest.raises(ValueError, match="split must be one of"):
        load_questions("test")
    assert all(q["split"] in SPLITS for q in load_questions(None))  # not the fresh set


def test_split_is_stratified_by_first_topic():
    by_topic = Counter(q["topics"][0] for q in load_questions())
    split_of = {}
    for q in load_questions():
        split_of.setdefault(q["topics"][0], set()).add(q["split"])
    for topic, count in by_topic.items():
        if count >= 2:  # a topic with two or more questions has some in both halves
            assert split_of[topic] == set(SPLITS), topic


def test_labelled_topics_contain_the_subject():
    # the cheap sanity check of the labels: the answer keyword is in a labelled topic's text
    # (all questions: it is cheap), and the keyword is not simply the question itself
    for q in load_questions():
        keyword = q["keyword"].lower()
        assert any(keyword in TOPICS[t].lower() for t in q["topics"]), q
        assert len(keyword) < len(q["question"])


def test_questions_are_not_copied_from_the_corpus():
    # error-message questions quote the message a user sees, which may be in the docs
    corpus = _plain(" ".join(TOPICS.values()))
    copied = [
        q["question"]
        for q in load_questions()
        if not re.match(r"^\w+(Error|Iteration)\b", q["question"])
        and _plain(q["question"]) in corpus
    ]
    assert not copied


def _runs(text: str, n: int = 6) -> set:
    words = _plain(text).split()
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


@pytest.mark.parametrize(
    "split, earlier",
    [
        ("fresh", (None,)),
        ("third", (None, "fresh")),
        ("fourth", (None, "fresh", "third")),
        ("fifth", (None, "fresh", "third", "fourth")),
        ("sixth", (None, "fresh", "third", "fourth", "fifth")),
    ],
)
def test_later_held_out_sets_are_labelled_and_independent_of_the_earlier(split, earlier):
    """The second to sixth held-out sets: same format and label checks as the first, ids
    and wording of their own (no 6-word run shared with a question of an earlier set),
    spread over topics."""
    fresh = load_questions(split)
    assert len(fresh) >= 100
    assert all(q["split"] == split for q in fresh)
    first = [q for name in earlier for q in load_questions(name)]
    assert {q["id"] for q in fresh}.isdisjoint({q["id"] for q in first})
    assert len({q["id"] for q in fresh}) == len(fresh)
    assert len({_plain(q["question"]) for q in fresh}) == len(fresh), "duplicates"
    assert len({q["topics"][0] for q in fresh}) >= 50
    old_runs = set().union(*(_runs(q["question"]) for q in first))
    corpus = _plain(" ".join(TOPICS.values()))
    for q in fresh:
        assert q["topics"] and all(t in TOPICS for t in q["topics"]), q
        assert any(q["keyword"].lower() in TOPICS[t].lower() for t in q["topics"]), q
        assert not _runs(q["question"]) & old_runs, q["question"]
        if not re.match(r"^\w+(Error|Iteration)\b", q["question"]):
            assert _plain(q["question"]) not in corpus, q["question"]


def test_ranking_metrics_by_hand():
    homes = [frozenset({"a"}), frozenset({"b"}), frozenset({"c", "b"}), frozenset({"d"})]
    rankings = [[0, 1, 2], [3, 3, 2], [3, 0, 1]]
    gold = [["a"], ["b"], ["x"]]
    # q0: first hit at 1; q1: passage 2 is a home of "b", first hit at 3; q2: none
    metrics = ranking_metrics(rankings, gold, homes, ks=(1, 3))
    assert metrics == {"hit@1": 1 / 3, "hit@3": 2 / 3, "mrr": (1 + 1 / 3 + 0) / 3}
    with pytest.raises(ValueError, match="rankings for"):
        ranking_metrics(rankings, gold[:2], homes)


def test_passage_homes_include_repeated_sections():
    topics = {"t1": "alpha beta\n\ngamma delta", "t2": "zeta\n\ngamma   delta", "t3": "omega"}
    passages = [Passage(0, "t1", "gamma delta"), Passage(1, "t3", "omega")]
    assert passage_homes(passages, topics) == [frozenset({"t1", "t2"}), frozenset({"t3"})]
    # on the real corpus, the deduplicated "exceptions" passages also count for "execmodel"
    passages = corpus_passages()
    homes = passage_homes(passages, TOPICS)
    assert any(p.topic == "exceptions" and "execmodel" in h for p, h in zip(passages, homes))


def test_listwise_loss_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=7)
    positive = np.array([0, 1, 0, 0, 1, 0, 0], dtype=bool)
    loss, grad = listwise_loss(scores, positive)
    # closed form check: one positive among equal scores gives log(n)
    assert listwise_loss(np.zeros(4), np.array([1, 0, 0, 0], bool))[0] == pytest.approx(np.log(4))
    eps = 1e-6
    numeric = np.array(
        [
            (
                listwise_loss(scores + eps * e, positive)[0]
                - listwise_loss(scores - eps * e, positive)[0]
            )
            / (2 * eps)
            for e in np.eye(7)
        ]
    )
    # central differences in float64: error O(eps^2) plus rounding ~1e-10
    np.testing.assert_allclose(grad, numeric, atol=1e-8)
    with pytest.raises(ValueError, match="at least one positive"):
        listwise_loss(scores, np.zeros(7, bool))


def test_fit_head_learns_a_separable_signal(tmp_path):
    rng = np.random.default_rng(1)
    groups = []
    for _ in range(30):
        x = rng.normal(size=(8, 5))
        positive = np.zeros(8, bool)
        positive[rng.integers(8)] = True
        x[positive, 2] += 3.0  # feature 2 marks the positives
        groups.append((x, positive))
    head = fit_head(groups, steps=200)
    zero = LinearHead(np.zeros(5), 0.0, head.mean, head.std)
    assert head_objective(head, groups) < 0.5 * head_objective(zero, groups)
    assert int(np.argmax(np.abs(head.w))) == 2
    head.save(tmp_path / "h.npz")
    again = LinearHead.load(tmp_path / "h.npz")
    np.testing.assert_array_equal(again(groups[0][0]), head(groups[0][0]))
    with pytest.raises(ValueError, match=r"features must be \(n, 5\)"):
        head(np.zeros((2, 4)))


def test_corpus_headings_are_titles_of_their_topics():
    headings = corpus_headings(TOPICS)
    assert len(headings) > len(TOPICS)  # titles plus section headings
    assert {t for _, t in headings} <= set(TOPICS)
    for title, topic in headings:
        assert title.replace(" ", "") in TOPICS[topic].replace('"', "").replace(" ", "")


def test_hybrid_score_with_zero_dense_weight_is_bm25(passages_small=None):
    from tinyllm.rag.embedders import TfidfProjectionEmbedder
    from tinyllm.rag.retriever import PassageRetriever

    passages = corpus_passages()[:120]
    embedder = TfidfProjectionEmbedder(dim=64).fit([p.text for p in passages])
    store = PassageRetriever.build(passages, embedder=embedder)
    query = "exception handler try statement"
    fused = store.search(query, 5, "hybrid_score", weights=(1.0, 0.0))
    assert [p.id for p, _ in fused] == [p.id for p, _ in store.search(query, 5, "bm25")]


def test_cli_query_auto_mode_and_rerank_needs_minilm(tmp_path, capsys):
    from tinyllm.cli import rag_cmd

    parser = argparse.ArgumentParser(prog="tinyllm")
    rag_cmd.register(parser.add_subparsers(dest="command"))
    build = parser.parse_args(["rag", "build", "--out", str(tmp_path / "s"), "--dense", "tfidf"])
    assert build.min_words == 50 and build.max_words == 100  # the dev-chosen defaults
    build = parser.parse_args(
        ["rag", "build", "--out", str(tmp_path / "s"), "--dense", "tfidf", "--dim", "64"]
    )
    assert build.func(build) == 0
    query = parser.parse_args(["rag", "query", "--store", str(tmp_path / "s"), "raise error"])
    assert query.mode == "auto"
    assert query.func(query) == 0
    assert query.mode == "documents"  # auto -> the dev-chosen mode on a dense store
    capsys.readouterr()
    query = parser.parse_args(
        ["rag", "query", "--store", str(tmp_path / "s"), "raise error", "--rerank"]
    )
    assert query.func(query) == 2
    assert "--dense minilm" in capsys.readouterr().err


def test_shipped_head_is_small_and_plain_arrays():
    from tinyllm.rag.cross_encoder import default_head_path

    path = default_head_path()
    if not path.is_file():
        pytest.skip("no fitted head (run experiments/rag_retrieval.py)")
    assert path.stat().st_size < 2 * 1024 * 1024
    head = LinearHead.load(path)  # np.load with allow_pickle=False
    assert head.w.shape == (385,) and np.all(head.std > 0) and np.all(np.isfinite(head.w))


@pytest.mark.slow
def test_rerank_results_reorders_the_fused_top_candidates(tmp_path):
    from tinyllm.rag.cross_encoder import default_head_path, rerank_results
    from tinyllm.rag.retriever import PassageRetriever
    from tinyllm.tokenizers import find_minilm_files

    if not find_minilm_files() or not default_head_path().is_file():
        pytest.skip("all-MiniLM-L6-v2 or the fitted head is missing")
    from tinyllm.embeddings import MiniLMEmbedder

    passages = corpus_passages(150, 300)[:40]
    store = PassageRetriever.build(passages, embedder=MiniLMEmbedder())
    query = "How do I make sure a file gets closed?"
    first = {p.id for p, _ in store.search(query, 20, "hybrid_score")}
    reranked = rerank_results(store, query, 5)
    scores = [s for _, s in reranked]
    assert len(reranked) == 5 and {p.id for p, _ in reranked} <= first
    assert scores == sorted(scores, reverse=True)
