"""BM25: a hand-computed example, the IDF variants, the rank_bm25 oracle, persistence."""

import math

import numpy as np
import pytest

from tinyllm.rag.bm25 import BM25, bm25_idf
from tinyllm.rag.passages import corpus_passages
from tinyllm.rag.persistence import load_index
from tinyllm.rag.text import operator_tokens, split_sentences, tokenize

DOCS = ["the cat sat on the mat", "the dog sat", "cats and dogs"]


def by_hand(idf_cat, idf_sat):
    """BM25 of the query "cat sat" on DOCS, term by term from the formula.

    N = 3, |d| = 6, 3, 3, avgdl = 4, k1 = 1.5, b = 0.75.
    d0: f(cat) = 1, f(sat) = 1, norm = 1.5 * (0.25 + 0.75 * 6 / 4) = 2.0625
    d1: f(sat) = 1,              norm = 1.5 * (0.25 + 0.75 * 3 / 4) = 1.21875
    d2: neither term.
    """
    d0 = idf_cat * 2.5 / (1 + 2.0625) + idf_sat * 2.5 / (1 + 2.0625)
    d1 = idf_sat * 2.5 / (1 + 1.21875)
    return np.array([d0, d1, 0.0])


def test_hand_computed_robertson():
    # n(cat) = 1, n(sat) = 2 of N = 3
    idf_cat = math.log((3 - 1 + 0.5) / (1 + 0.5))  # ln(5/3) = 0.5108
    idf_sat = math.log((3 - 2 + 0.5) / (2 + 0.5))  # ln(3/5) = -0.5108 (negative: textbook)
    scores = BM25(idf="robertson").fit(DOCS).get_scores("cat sat")
    np.testing.assert_allclose(scores, by_hand(idf_cat, idf_sat), rtol=1e-12)
    assert scores[0] == pytest.approx(0.0, abs=1e-15)  # the two terms cancel in d0


def test_hand_computed_lucene():
    idf_cat = math.log(1 + 2.5 / 1.5)
    idf_sat = math.log(1 + 1.5 / 2.5)
    scores = BM25(idf="lucene").fit(DOCS).get_scores(["cat", "sat"])
    np.testing.assert_allclose(scores, by_hand(idf_cat, idf_sat), rtol=1e-12)


def test_default_idf_is_lucene_everywhere():
    # one default: BM25(), bm25_idf() and PassageRetriever all use Lucene's non-negative IDF
    from tinyllm.rag.passages import Passage
    from tinyllm.rag.retriever import PassageRetriever

    bm25 = BM25().fit(DOCS)
    assert bm25.idf_variant == "lucene"
    np.testing.assert_allclose(
        bm25.get_scores("cat sat"), BM25(idf="lucene").fit(DOCS).get_scores("cat sat")
    )
    assert (bm25.idf > 0).all()  # "the" and "sat" are in 2 of 3 documents: still positive
    assert (bm25.get_scores("the sat") >= 0).all()
    n = np.array([1, 2, 3])
    np.testing.assert_array_equal(bm25_idf(3, n), np.log1p((3 - n + 0.5) / (n + 0.5)))
    passages = [Passage(id=i, topic="t", text=t) for i, t in enumerate(DOCS)]
    assert PassageRetriever.build(passages).bm25.idf_variant == "lucene"
    # the textbook IDF stays selectable, with its negative weights
    assert (BM25(idf="robertson").fit(DOCS).get_scores("the sat") < 0).any()


def test_hand_computed_rank_bm25_floor():
    # vocabulary: the(2) cat(1) sat(2) on(1) mat(1) dog(1) cats(1) and(1) dogs(1):
    # 7 terms with idf ln(5/3), 2 with ln(3/5); mean = 5 ln(5/3) / 9; floor = 0.25 * mean
    floor = 0.25 * 5 * math.log(5 / 3) / 9
    scores = BM25(idf="rank_bm25").fit(DOCS).get_scores("cat sat")
    np.testing.assert_allclose(scores, by_hand(math.log(5 / 3), floor), rtol=1e-12)


def test_weighted_and_repeated_query_terms():
    bm25 = BM25().fit(DOCS)
    once = bm25.get_scores("cat")
    np.testing.assert_allclose(bm25.get_scores("cat cat"), 2 * once)
    np.testing.assert_allclose(bm25.get_scores({"cat": 0.5}), 0.5 * once)
    assert (bm25.get_scores("unicorn") == 0).all()


def test_idf_variant_formulas():
    idf = bm25_idf(10, np.array([1, 5, 9]), "robertson")
    np.testing.assert_allclose(
        idf, np.log((10 - np.array([1, 5, 9]) + 0.5) / (np.array([1, 5, 9]) + 0.5))
    )
    assert (bm25_idf(10, np.array([1, 5, 9]), "lucene") > 0).all()
    with pytest.raises(ValueError, match="bm25_idf: variant must be one of"):
        bm25_idf(10, np.array([1]), "bogus")


def test_add_after_build_updates_statistics(tmp_path):
    full = BM25().fit(DOCS)
    grown = BM25().fit(DOCS[:1])
    grown.add(DOCS[1:])
    np.testing.assert_allclose(grown.get_scores("cat sat"), full.get_scores("cat sat"))
    path = grown.save(tmp_path / "bm25.npz")
    loaded = load_index(path)
    assert isinstance(loaded, BM25)
    np.testing.assert_array_equal(loaded.get_scores("the dog"), grown.get_scores("the dog"))
    loaded.add(["a cat named dog"])
    assert len(loaded) == 4


def test_search_orders_by_score_then_id():
    bm25 = BM25(idf="lucene").fit(DOCS + DOCS)
    scores, ids = bm25.search("sat", 4)
    assert ids.tolist() == [1, 4, 0, 3]
    assert np.all(np.diff(scores) <= 0)


def test_tokenizer_and_sentences():
    assert tokenize("Dict.get(key) -> Value_2!") == ["dict", "get", "key", "value_2"]
    assert tokenize("The cat", stopwords={"the"}) == ["cat"]
    assert split_sentences("One. Two? Three!\n\nFour") == ["One.", "Two?", "Three!", "Four"]
    with pytest.raises(TypeError, match="BM25: a document must be"):
        BM25().fit([3])


def test_operator_tokens():
    # longest symbol first; a hyphen or slash between two letters is prose
    assert operator_tokens("x <<= 2 ** -y // z") == ["<<=", "**", "-", "//"]
    assert operator_tokens("user-defined try/finally, a - b, 7 / 2") == ["-", "/"]
    assert operator_tokens("m @= w; d | e & f ^ ~g != h -> ... :=") == [
        "@=",
        "|",
        "&",
        "^",
        "~",
        "!=",
        "->",
        "...",
        ":=",
    ]
    assert operator_tokens("How do I make a list?") == []
    # a lexical index over them finds the passage the word tokenizer cannot tell apart
    index = BM25(tokenizer=operator_tokens).fit(["a << b shifts", "a + b adds", "a b"])
    assert index.search("what does 1.5 << 2 do", 1)[1].tolist() == [0]
    with pytest.raises(TypeError, match="operator_tokens: text must be a str"):
        operator_tokens(None)


def test_rank_bm25_oracle_on_corpus():
    rank_bm25 = pytest.importorskip("rank_bm25")
    tokens = [tokenize(p.text) for p in corpus_passages()]
    ref = rank_bm25.BM25Okapi(tokens)
    ours = BM25(idf="rank_bm25").fit(tokens)
    for query in ("how does the with statement handle exceptions", "yield expression generator"):
        q = tokenize(query)
        np.testing.assert_allclose(ours.get_scores(q), ref.get_scores(q), rtol=1e-12, atol=1e-12)
