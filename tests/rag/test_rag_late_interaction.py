"""Late interaction: content tokens, MaxSim against a naive double loop, the token index on
disk, and a store built with it (a tiny random BERT: no model package needed)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.models.test_bert import tiny_embedder
from tinyllm.rag.embedders import describe_embedder
from tinyllm.rag.late_interaction import (
    TokenIndex,
    content_rows,
    encode_with_tokens,
    is_content_piece,
)
from tinyllm.rag.passages import Passage
from tinyllm.rag.retriever import ROUND7_TOPIC_WEIGHTS, TOPIC_WEIGHTS, PassageRetriever


def test_content_pieces_are_words_that_are_not_stop_words():
    assert is_content_piece("setdefault") and is_content_piece("##ing") and is_content_piece("3")
    for piece in ("the", "How", ".", "_", "##", "[CLS]", "'"):
        assert not is_content_piece(piece), piece


def naive_maxsim(query: np.ndarray, passage: np.ndarray) -> float:
    """(1/m) Σ_i max_j <q_i, p_j>, by loops in float64."""
    total = 0.0
    for q in query.astype(np.float64):
        total += max(float(q @ p) for p in passage.astype(np.float64))
    return total / len(query)


def test_maxsim_matches_a_double_loop():
    rng = np.random.default_rng(0)
    lengths = [3, 1, 7, 2]
    rows = [rng.normal(size=(n, 16)) for n in lengths]
    rows = [r / np.linalg.norm(r, axis=1, keepdims=True) for r in rows]
    index = TokenIndex(np.concatenate(rows), np.cumsum([0] + lengths))
    query = rng.normal(size=(5, 16)).astype(np.float32)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    scores = index.scores(query)
    # the index keeps float16 rows: compare with the loop over those rows (float32 sums)
    stored = [index.vectors[a:b] for a, b in zip(index.offsets[:-1], index.offsets[1:])]
    expected = [naive_maxsim(query, p) for p in stored]
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-5)
    assert len(index) == 4 and index.dim == 16 and index.vectors.dtype == np.float16


def test_token_index_round_trips_and_checks_its_arrays(tmp_path):
    rng = np.random.default_rng(1)
    index = TokenIndex(rng.normal(size=(6, 4)), [0, 2, 6])
    index.save(tmp_path / "late.npz")
    loaded = TokenIndex.load(tmp_path / "late.npz")
    np.testing.assert_array_equal(loaded.vectors, index.vectors)
    np.testing.assert_array_equal(loaded.offsets, index.offsets)
    with pytest.raises(ValueError, match="at least one row"):
        TokenIndex(np.zeros((3, 4)), [0, 0, 3])
    with pytest.raises(ValueError, match="end at len"):
        TokenIndex(np.zeros((3, 4)), [0, 2])
    with pytest.raises(ValueError, match=r"query_states must be \[m >= 1, 4\]"):
        index.scores(np.zeros((2, 5)))


def test_content_rows_drop_special_tokens_and_stop_words():
    embedder = tiny_embedder()
    tokenizer = embedder.tokenizer
    text = "the cat sat on the mat"
    ids, _ = tokenizer.encode_with_types(text, max_length=32, truncation=True)
    states = np.random.default_rng(2).normal(size=(len(ids), 8))
    rows = content_rows(states, ids, tokenizer)
    kept = [i for i, t in enumerate(ids) if tokenizer.id_to_token(t) in ("cat", "sat", "mat")]
    expected = states[kept] / np.linalg.norm(states[kept], axis=1, keepdims=True)
    np.testing.assert_allclose(rows, expected, rtol=1e-6)
    only_stop = tokenizer.encode_with_types("the on", max_length=32, truncation=True)[0]
    rows = content_rows(states[: len(only_stop)], only_stop, tokenizer)
    assert rows.shape == (2, 8)  # no content token: the inner tokens, [CLS] and [SEP] dropped
    with pytest.raises(ValueError, match="token ids for hidden states"):
        content_rows(states, ids[:-1], tokenizer)


def test_encode_with_tokens_is_one_pass_of_the_embedder():
    embedder = tiny_embedder()
    texts = ["the cat sat", "a b c the mat"]
    outputs = encode_with_tokens(embedder, texts)
    np.testing.assert_allclose(
        np.stack([v for v, _ in outputs]), embedder(texts), rtol=0, atol=1e-6
    )
    states = embedder.encode(texts, output_value="token_embeddings")
    for text, (_, rows), hidden in zip(texts, outputs, states):
        ids, _ = embedder.tokenizer.encode_with_types(text, max_length=64, truncation=True)
        np.testing.assert_allclose(rows, content_rows(hidden, ids, embedder.tokenizer))
    with pytest.raises(TypeError, match="token-level encoder"):
        encode_with_tokens(lambda t: np.zeros((len(t), 8)), texts)


PASSAGES = [
    Passage(0, "cats", "the cat sat on the mat"),
    Passage(1, "cats", "a cat sat"),
    Passage(2, "letters", "a b c"),
    Passage(3, "letters", "c b a the mat"),
    Passage(4, "mats", "the mat"),
]
TITLES = {"cats": "the cat", "letters": "a b c", "mats": "mat"}


def late_store(late_interaction=True):
    return PassageRetriever.build(
        PASSAGES, embedder=tiny_embedder(), titles=TITLES, late_interaction=late_interaction
    )


def test_a_store_with_late_interaction_scores_documents_by_round_7s_weights(tmp_path):
    store = late_store()
    assert len(store.token_index) == len(PASSAGES)
    query = "the cat on a mat"
    auto = store.search_documents(query, 3)
    explicit = store.search_documents(query, 3, topic_weights=ROUND7_TOPIC_WEIGHTS)
    assert [(d, p.id, s) for d, p, s in auto] == [(d, p.id, s) for d, p, s in explicit]
    formula = store.search_documents(query, 3, topic_weights=None)
    assert [s for *_, s in auto] != [s for *_, s in formula]
    # MaxSim as computed by the store equals the index on the query's content rows
    rows = encode_with_tokens(store.embedder, [query])[0][1]
    table = store.topic_features(query)
    best = {d: max(store.token_index.scores(rows)[p.id] for p in PASSAGES if p.topic == d)
            for d in table.documents}  # fmt: skip
    np.testing.assert_allclose(table.features[:, 5], [best[d] for d in table.documents])
    store.save(tmp_path / "s")
    assert (tmp_path / "s" / "late.npz").is_file()
    loaded = PassageRetriever.load(tmp_path / "s", embedder=store.embedder)
    again = loaded.search_documents(query, 3)
    assert [(d, p.id) for d, p, _ in again] == [(d, p.id) for d, p, _ in auto]
    np.testing.assert_allclose([s for *_, s in again], [s for *_, s in auto], rtol=1e-6)

    class SentencesOnly:  # the same model by name, but no token states
        name = describe_embedder(store.embedder)

        def __call__(self, texts):
            return store.embedder(texts)

    with pytest.raises(ValueError, match="token-level embedder"):
        PassageRetriever.load(tmp_path / "s", embedder=SentencesOnly())


TEMPLATES = [("what is a cat", ["cats"]), ("where is the mat", ["mats", "cats"]),
             ("what is b", ["letters"])]  # fmt: skip


def test_template_questions_turn_on_round_11s_weights(tmp_path):
    store = late_store()
    query = "where does the cat sit"
    with pytest.raises(ValueError, match="no template questions"):
        store.search_documents(query, 3, topic_weights=TOPIC_WEIGHTS)
    store.add_template_questions(TEMPLATES)
    assert store.default_topic_weights() is TOPIC_WEIGHTS
    auto = store.search_documents(query, 3)
    explicit = store.search_documents(query, 3, topic_weights=TOPIC_WEIGHTS)
    assert [(d, p.id, s) for d, p, s in auto] == [(d, p.id, s) for d, p, s in explicit]
    # template_max: the best cosine of the query and each document's template questions
    vectors = np.asarray(store.embedder([t for t, _ in TEMPLATES]), dtype=np.float64)
    cosines = vectors @ np.asarray(store.embedder([query])[0], dtype=np.float64)
    best = {"cats": max(cosines[0], cosines[1]), "mats": cosines[1], "letters": cosines[2]}
    table = store.topic_features(query)
    np.testing.assert_allclose(table.features[:, 8], [best[d] for d in table.documents],
                               rtol=1e-5)  # fmt: skip
    store.save(tmp_path / "s")
    assert (tmp_path / "s" / "templates.npz").is_file()
    loaded = PassageRetriever.load(tmp_path / "s", embedder=store.embedder)
    assert loaded.template_questions == store.template_questions
    np.testing.assert_array_equal(loaded._template_vectors, store._template_vectors)
    again = loaded.search_documents(query, 3)
    assert [(d, p.id) for d, p, _ in again] == [(d, p.id) for d, p, _ in auto]
    with pytest.raises(ValueError, match="unknown documents \\['dogs'\\]"):
        store.add_template_questions([("what is a dog", ["dogs"])])
    with pytest.raises(ValueError, match=r"vectors \(3, 5\) for 3 questions"):
        store.add_template_questions(TEMPLATES, np.zeros((3, 5)))
    with pytest.raises(RuntimeError, match="no dense index"):
        PassageRetriever.build(PASSAGES).add_template_questions(TEMPLATES)


def test_without_late_interaction_the_default_is_round_6s_formula():
    store = late_store(late_interaction=False)
    assert store.token_index is None
    query = "the cat on a mat"
    auto = store.search_documents(query, 3)
    formula = store.search_documents(query, 3, topic_weights=None)
    assert [(d, p.id, s) for d, p, s in auto] == [(d, p.id, s) for d, p, s in formula]
    with pytest.raises(ValueError, match="no token index"):
        store.search_documents(query, 3, topic_weights={"fused": 1.0, "maxsim": 1.0})
    with pytest.raises(ValueError, match="topic_weights must be 'auto', None or a mapping"):
        store.search_documents(query, 3, topic_weights="learned")
    with pytest.raises(ValueError, match="late_interaction needs an embedder"):
        PassageRetriever.build(PASSAGES, late_interaction=True)


@pytest.mark.parametrize("skip", [False, True])
def test_cli_minilm_store_keeps_token_states_unless_told(tmp_path, capsys, monkeypatch, skip):
    """``tinyllm rag build --dense minilm`` (here with the tiny random BERT in MiniLM's
    place) writes late.npz and templates.npz, and ``query`` ranks with the learned score;
    ``--no-late-interaction`` leaves both out."""
    import argparse

    import tinyllm.embeddings
    from tinyllm.cli import rag_cmd

    monkeypatch.setattr(tinyllm.embeddings, "MiniLMEmbedder", lambda: tiny_embedder())
    parser = argparse.ArgumentParser(prog="tinyllm")
    rag_cmd.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "s"
    argv = ["rag", "build", "--out", str(out), "--dense", "minilm"]
    build = parser.parse_args(argv + (["--no-late-interaction"] if skip else []))
    assert build.func(build) == 0
    assert ("late interaction" in capsys.readouterr().out) is not skip
    assert (out / "late.npz").is_file() is not skip
    assert (out / "templates.npz").is_file() is not skip
    query = parser.parse_args(["rag", "query", "--store", str(out), "the cat sat on the mat"])
    assert query.func(query) == 0
    assert capsys.readouterr().out.count("score=") == 5
