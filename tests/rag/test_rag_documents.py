"""Document-level results: chunk context, MaxP collapse with a title prior, the store's
``search_documents`` and the CLI defaults that use them."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from tinyllm.data.corpus import default_corpus_topics
from tinyllm.rag.collapse import document_ranking
from tinyllm.rag.context import contextualize, passage_context, topic_headings, topic_titles
from tinyllm.rag.embedders import TfidfProjectionEmbedder
from tinyllm.rag.evaluation import passage_homes
from tinyllm.rag.passages import Passage, corpus_passages
from tinyllm.rag.retriever import PassageRetriever, corpus_retriever

TOPICS = default_corpus_topics()

SYNTHETIC = """The title
*********

Intro words here.

First section
=============

Alpha beta gamma.

Second   section
----------------

Delta epsilon.
"""


def test_topic_headings_offsets_point_at_the_heading_in_normalised_text():
    headings = topic_headings(SYNTHETIC)
    assert [h for _, h in headings] == ["The title", "First section", "Second section"]
    body = " ".join(SYNTHETIC.split())
    for offset, heading in headings:
        assert body[offset:].startswith(heading.split()[0])
    assert topic_titles({"t": SYNTHETIC, "u": "no heading here"}) == {
        "t": "The title",
        "u": "u",
    }


def test_passage_context_is_the_last_heading_before_the_passage():
    topics = {"t": SYNTHETIC}
    cases = {
        "Intro words here.": ("The title", "The title"),
        "Alpha beta gamma.": ("The title", "First section"),
        "Delta epsilon.": ("The title", "Second section"),
    }
    for text, expected in cases.items():
        assert passage_context(Passage(0, "t", text), topics) == expected
    texts = contextualize([Passage(0, "t", "Delta epsilon.")], topics)
    assert texts == ["The title. Second section.\n\nDelta epsilon."]
    with pytest.raises(KeyError, match="unknown topic 'zz'"):
        contextualize([Passage(0, "zz", "x")], topics)


def test_contextualize_on_the_corpus_keeps_text_and_names_the_section_heading():
    passages = corpus_passages(50, 100)
    texts = contextualize(passages, TOPICS)
    titles = topic_titles(TOPICS)
    headings = {t: topic_headings(text) for t, text in TOPICS.items()}
    bodies = {t: " ".join(text.split()) for t, text in TOPICS.items()}
    for passage, text in zip(passages, texts):
        assert text.endswith(passage.text)
        head = text[: -len(passage.text)].rstrip()
        title = titles[passage.topic]
        assert head.startswith(title) and head.endswith(".")
        heading = head[len(title) + 2 : -1] or title  # "<title>. <heading>." or "<title>."
        # the heading is the last one at or before the passage's start in its topic
        start = bodies[passage.topic].find(" ".join(passage.text.split())[:200])
        before = [h for offset, h in headings[passage.topic] if offset <= start]
        assert start >= 0 and before and before[-1] == heading, (passage.id, heading)


def _naive_documents(scores, memberships, prior, weight):
    """Reference: for each document, the max over all passages containing it."""
    docs = sorted({d for m in memberships for d in m})
    out = []
    for d in docs:
        members = [(s, p) for p, s in scores if d in memberships[p]]
        if members:
            s, p = max(members, key=lambda sp: (sp[0], -sp[1]))
            out.append((d, s + weight * (prior[d] if prior else 0.0)))
    return sorted(out, key=lambda x: -x[1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_document_ranking_matches_the_naive_max_over_passages(seed):
    rng = np.random.default_rng(seed)
    docs = [f"d{i}" for i in range(7)]
    memberships = [
        set(rng.choice(docs, size=int(rng.integers(1, 3)), replace=False)) for _ in range(30)
    ]
    ids = rng.permutation(30)[:20]
    scores = sorted(zip(ids.tolist(), rng.random(20).tolist()), key=lambda x: -x[1])
    prior = {d: float(rng.random()) for d in docs}
    for weight in (0.0, 0.3):
        got = document_ranking(scores, memberships, prior if weight else None, weight)
        want = _naive_documents(scores, memberships, prior, weight)
        assert [d for d, _, _ in got] == [d for d, _ in want]
        np.testing.assert_allclose([s for _, _, s in got], [s for _, s in want], rtol=1e-12)
        assert len({d for d, _, _ in got}) == len(got)  # each document once
        for d, pid, s in got:  # the passage shown is a member with the document's max score
            assert d in memberships[pid]
            assert s - weight * (prior[d] if weight else 0.0) == pytest.approx(dict(scores)[pid])


def test_document_ranking_does_not_depend_on_input_order():
    # scores on a coarse grid, so that passages and documents tie often
    rng = np.random.default_rng(3)
    docs = [f"d{i}" for i in range(6)]
    memberships = [
        set(rng.choice(docs, size=int(rng.integers(1, 3)), replace=False)) for _ in range(25)
    ]
    scores = [(pid, float(rng.integers(0, 4)) / 4) for pid in range(25)]
    prior = {d: float(rng.integers(0, 2)) for d in docs}
    for weight in (0.0, 0.5):
        want = document_ranking(scores, memberships, prior if weight else None, weight)
        for trial in range(5):
            shuffled = [scores[i] for i in rng.permutation(len(scores))]
            got = document_ranking(shuffled, memberships, prior if weight else None, weight)
            assert got == want, trial
        # the rule itself: ties go to the lower passage id, then the earlier best passage
        for d, pid, _ in want:
            best = max(s for p, s in scores if d in memberships[p])
            assert pid == min(p for p, s in scores if d in memberships[p] and s == best)
    # passage 0 (document "b") is met first in either input order, so "b" ranks first
    for given in ([(1, 0.5), (0, 0.5)], [(0, 0.5), (1, 0.5)]):
        assert document_ranking(given, [{"b"}, {"a"}]) == [("b", 0, 0.5), ("a", 1, 0.5)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_document_ranking_distinct_passages_drops_repeats_only(seed):
    """distinct_passages: the same ranking with every entry whose passage an earlier entry
    shows removed (order and scores kept), so passages and documents are each unique."""
    rng = np.random.default_rng(seed)
    docs = [f"d{i}" for i in range(8)]
    memberships = [  # many shared passages: 1-3 documents each
        set(rng.choice(docs, size=int(rng.integers(1, 4)), replace=False)) for _ in range(12)
    ]
    scores = list(zip(range(12), rng.random(12).tolist()))
    prior = {d: float(rng.random()) for d in docs}
    for weight in (0.0, 0.3):
        every = document_ranking(scores, memberships, prior if weight else None, weight)
        got = document_ranking(scores, memberships, prior if weight else None, weight,
                               distinct_passages=True)  # fmt: skip
        want = [e for i, e in enumerate(every) if e[1] not in {p for _, p, _ in every[:i]}]
        assert got == want
        assert len({p for _, p, _ in got}) == len(got) < len(every)


def test_document_ranking_errors():
    with pytest.raises(ValueError, match="prior_weight given without a prior"):
        document_ranking([(0, 1.0)], [{"a"}], None, 0.5)
    with pytest.raises(IndexError, match="passage id 3 outside memberships of 1"):
        document_ranking([(3, 1.0)], [{"a"}])
    with pytest.raises(KeyError, match="no prior for document 'a'"):
        document_ranking([(0, 1.0)], [{"a"}], {"b": 1.0}, 0.5)


@pytest.fixture(scope="module")
def tfidf_store():
    passages = corpus_passages(50, 100)
    embedder = TfidfProjectionEmbedder(dim=64).fit([p.text for p in passages])
    return corpus_retriever(embedder, 50, 100)


def test_search_documents_is_the_collapsed_fusion(tfidf_store, tmp_path):
    store = tfidf_store
    homes = passage_homes(store.passages, TOPICS)
    assert [set(m) for m in store.memberships] == [set(h) for h in homes]
    query = "how do I catch an exception and clean up"
    terms = dict(title_weight=0.0, centroid_weight=0.0)
    hits = store.search_documents(query, 10, **terms, distinct_passages=False)
    assert len({d for d, _, _ in hits}) == 10
    # reference: the passage-level hybrid_score list over the same depth, first hit per topic
    fused = store.search(query, 100, "hybrid_score", fetch_k=100)
    seen, expected = set(), []
    for passage, score in fused:
        for d in sorted(store.memberships[passage.id]):
            if d not in seen:
                seen.add(d)
                expected.append((d, passage.id, score))
    assert [(d, p.id) for d, p, _ in hits] == [(d, p) for d, p, _ in expected[:10]]
    # the default shows each passage once: the topic met first keeps a shared passage
    first_topics = [(d, p) for i, (d, p, _) in enumerate(expected)
                    if p not in {q for _, q, _ in expected[:i]}]  # fmt: skip
    assert len(first_topics) < len(expected)  # this query meets shared passages
    distinct = store.search_documents(query, 10, **terms)
    assert [(d, p.id) for d, p, _ in distinct] == first_topics[:10]
    with_title = store.search_documents(query, 10)
    assert all(d in store.memberships[p.id] for d, p, _ in with_title)
    store.save(tmp_path / "s")
    loaded = PassageRetriever.load(tmp_path / "s")
    assert loaded.titles == store.titles and loaded.memberships == store.memberships
    assert [(d, p.id) for d, p, _ in loaded.search_documents(query, 10)] == [
        (d, p.id) for d, p, _ in with_title
    ]
    with pytest.raises(ValueError, match="k must be a positive integer"):
        store.search_documents(query, 0)


def test_a_document_without_a_title_is_refused(tfidf_store):
    store = tfidf_store
    titles = dict(store.titles)
    dropped = sorted(titles)[0]
    del titles[dropped]
    partial = PassageRetriever(store.passages, store.bm25, store.embedder, store.dense_index,
                               store.memberships, titles)  # fmt: skip
    for topic_weights in (None, {"fused": 1.0, "title": 0.3}):
        with pytest.raises(ValueError, match=f"no title for \\['{dropped}'\\]"):
            partial.search_documents("how do I open a file", 5, topic_weights=topic_weights)


def test_centroid_term_matches_a_naive_reference(tfidf_store):
    """S(t) = max fused passage score + 0.3 cos(q, title_t) + μ cos(q, c_t), c_t the unit mean
    of t's passage vectors, recomputed here topic by topic from the raw vectors."""
    from tinyllm.rag.retriever import CENTROID_WEIGHT, TITLE_WEIGHT

    store = tfidf_store
    query = "how do I catch an exception and clean up"
    vectors = np.asarray(store.dense_index.vectors, np.float64)
    q = store.embedder([query])[0].astype(np.float64)
    fused = {p.id: s for p, s in store.search(query, 100, "hybrid_score", fetch_k=100)}
    titles = {n: store.embedder([store.titles[n]])[0] for n in store.titles}
    want = {}
    for topic in store.titles:
        members = [pid for pid, m in enumerate(store.memberships) if topic in m]
        centroid = vectors[members].mean(0)
        centroid /= np.linalg.norm(centroid)
        best = max((fused[pid] for pid in members if pid in fused), default=None)
        if best is not None:
            want[topic] = best + TITLE_WEIGHT * titles[topic] @ q + CENTROID_WEIGHT * centroid @ q
    got = store.search_documents(query, 10, distinct_passages=False)
    expected = sorted(want.items(), key=lambda kv: -kv[1])[:10]
    assert [d for d, _, _ in got] == [d for d, _ in expected]
    # float32 vectors: the terms agree to ~1e-6
    np.testing.assert_allclose([s for _, _, s in got], [v for _, v in expected], atol=1e-5)
    names, centroids = store.topic_centroids()
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, rtol=1e-5)
    without = store.search_documents(query, 10, centroid_weight=0.0, distinct_passages=False)
    assert [s for _, _, s in without] != [s for _, _, s in got]  # the term is on by default


def test_contextualized_index_matches_section_headings(tfidf_store):
    """A query that is a section heading finds, by BM25 on the contextualized index, a passage
    of that section (its heading, computed independently, is the query)."""
    for heading in ("Augmented assignment statements", "Coroutine function definition"):
        (passage, _), *_ = tfidf_store.search(heading, 1, "bm25")
        assert passage_context(passage, TOPICS)[1] == heading


def test_cli_defaults_are_the_dev_choice(tmp_path, capsys):
    from tinyllm.cli import rag_cmd

    parser = argparse.ArgumentParser(prog="tinyllm")
    rag_cmd.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "s"
    build = parser.parse_args(
        ["rag", "build", "--out", str(out), "--dense", "tfidf", "--dim", "64"]
    )
    assert (build.min_words, build.max_words, build.no_context) == (50, 100, False)
    assert build.func(build) == 0
    assert "title/heading context" in capsys.readouterr().out
    query = parser.parse_args(["rag", "query", "--store", str(out), "catch an exception"])
    assert query.func(query) == 0 and query.mode == "documents"
    printed = capsys.readouterr().out
    topics = [
        line.split("[")[1].split(" #")[0] for line in printed.splitlines() if "score=" in line
    ]
    assert len(topics) == 5 and len(set(topics)) == 5  # five distinct help topics
    ids = [line.split(" #")[1].split("]")[0].split(",")[0] for line in printed.splitlines()
           if "score=" in line]  # fmt: skip
    assert len(set(ids)) == 5  # five distinct passages
