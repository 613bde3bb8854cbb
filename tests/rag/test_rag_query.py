"""RM3 pseudo-relevance feedback, HyDE and multi-query fusion."""

import numpy as np
import pytest

from tinyllm.rag.bm25 import BM25
from tinyllm.rag.embedders import TfidfProjectionEmbedder
from tinyllm.rag.exact import ExactIndex
from tinyllm.rag.query import (
    HYDE_PROMPT,
    hyde_search,
    hyde_vector,
    multi_query_fusion,
    rm3_expand,
    rm3_search,
)

DOCS = [
    "python generators yield values lazily; a generator function contains yield",
    "the yield expression suspends the generator and returns a value to the caller",
    "exceptions are raised with raise and handled with try and except clauses",
    "a with statement calls __enter__ and __exit__ of a context manager",
    "lists are mutable sequences; tuples are immutable sequences",
    "generator expressions create generators without a def statement",
]


@pytest.fixture(scope="module")
def bm25():
    return BM25(idf="lucene").fit(DOCS)


def test_rm3_weights_sum_to_one_and_expand(bm25):
    expanded = rm3_expand("yield", bm25, fb_docs=2, fb_terms=5, original_weight=0.5)
    assert sum(expanded.values()) == pytest.approx(1.0)
    assert expanded["yield"] > 0.5  # original mass plus its own feedback mass
    assert "generator" in expanded  # a feedback term from the top documents
    assert all(w > 0 for w in expanded.values())
    assert not {"the", "a", "and"} & set(expanded)  # stop words are not feedback terms


def test_rm3_lambda_one_is_the_original_ranking(bm25):
    for query in ("yield generator", "statement sequences mutable", "raise"):
        expanded = rm3_expand(query, bm25, original_weight=1.0)
        assert sum(expanded.values()) == pytest.approx(1.0)
        np.testing.assert_array_equal(
            rm3_search(query, bm25, 6, original_weight=1.0)[1], bm25.search(query, 6)[1]
        )


def test_rm3_feedback_reaches_documents_without_query_terms(bm25):
    # "lazily" occurs only in doc 0; expansion brings in "generator"/"yield" and so doc 1, 5
    _, plain = bm25.search("lazily", 6)
    scores_plain = bm25.get_scores("lazily")
    assert (scores_plain > 0).sum() == 1
    _, ids = rm3_search("lazily", bm25, 6, fb_docs=1, fb_terms=5, original_weight=0.3)
    assert ids[0] == 0
    assert (
        bm25.get_scores(rm3_expand("lazily", bm25, fb_docs=1, original_weight=0.3)) > 0
    ).sum() > 1


def test_rm3_errors(bm25):
    with pytest.raises(ValueError, match="rm3_expand: original_weight"):
        rm3_expand("x", bm25, original_weight=2.0)
    assert rm3_expand("", bm25) == {}


def test_hyde_vector_is_mean_of_query_and_passages():
    calls = []

    def generate(prompt):
        calls.append(prompt)
        return f"passage {len(calls)}"

    def embed(texts):
        return np.array([[len(t), t.count("a"), 1.0] for t in texts], dtype=np.float32)

    v = hyde_vector("what is a cat", generate, embed, n_samples=3)
    expected = embed(["what is a cat", "passage 1", "passage 2", "passage 3"]).mean(0)
    np.testing.assert_allclose(v, expected)
    assert calls[0] == HYDE_PROMPT.format(query="what is a cat") and len(calls) == 3


def test_hyde_retrieves_the_gold_passage_first():
    embed = TfidfProjectionEmbedder(dim=128).fit(DOCS)
    index = ExactIndex(128, metric="cosine")
    index.add(embed(DOCS))
    gold = 3
    # the query shares no word with the gold passage; the mock LM "knows" the answer
    query = "how do resources get released automatically?"
    _, plain = index.search(embed([query]), 1)
    scores, ids = hyde_search(query, index, lambda prompt: DOCS[gold], embed, k=3)
    assert ids[0] == gold and plain[0, 0] != gold
    with pytest.raises(ValueError, match=r"hyde_vector: embed\(\) must return shape \(2, D\)"):
        hyde_vector("q", lambda p: "x", lambda texts: np.zeros(3))


def test_multi_query_fusion():
    rankings = {"q": ["a", "b", "c"], "q rewrite": ["b", "a", "d"], "q other": ["b", "c"]}
    fused = multi_query_fusion(list(rankings), rankings.__getitem__, k=2)
    assert [d for d, _ in fused] == ["b", "a"]
