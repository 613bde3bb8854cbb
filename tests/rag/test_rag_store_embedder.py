"""A store or a results file built with one embedder is never silently combined with another:
``PassageRetriever.load`` and the experiment's ``write_outputs`` merge refuse, naming both."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tinyllm.rag.embedders import TfidfProjectionEmbedder, describe_embedder
from tinyllm.rag.passages import corpus_passages
from tinyllm.rag.retriever import PassageRetriever


def _hashing_embedder(texts):
    """A deterministic stand-in model: 16 hashed word counts per text, unit rows."""
    out = np.zeros((len(texts), 16), np.float32)
    for row, text in enumerate(texts):
        for word in text.lower().split():
            out[row, sum(map(ord, word)) % 16] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def _other_embedder(texts):
    return _hashing_embedder([t[::-1] for t in texts])


def test_load_refuses_an_embedder_other_than_the_one_the_store_was_built_with(tmp_path):
    passages = corpus_passages(50, 100)[:40]
    store = PassageRetriever.build(passages, embedder=_hashing_embedder)
    store.save(tmp_path / "store")
    recorded = json.loads((tmp_path / "store" / "passages.json").read_text())["embedder"]
    assert recorded == describe_embedder(_hashing_embedder)
    with pytest.raises(ValueError) as error:
        PassageRetriever.load(tmp_path / "store", embedder=_other_embedder)
    assert "_hashing_embedder" in str(error.value) and "_other_embedder" in str(error.value)
    loaded = PassageRetriever.load(tmp_path / "store", embedder=_hashing_embedder)
    query = passages[7].text
    assert [p.id for p, _ in loaded.search(query, 3, "dense")] == [
        p.id for p, _ in store.search(query, 3, "dense")
    ]


def test_tfidf_settings_are_part_of_the_name(tmp_path):
    texts = [p.text for p in corpus_passages(50, 100)[:40]]
    small, large = (TfidfProjectionEmbedder(dim=d).fit(texts) for d in (16, 32))
    assert describe_embedder(small) != describe_embedder(large)
    store = PassageRetriever.build(corpus_passages(50, 100)[:40], embedder=small)
    store.save(tmp_path / "store")
    with pytest.raises(ValueError, match=r"dim=16.*dim=32"):
        PassageRetriever.load(tmp_path / "store", embedder=large)
    assert PassageRetriever.load(tmp_path / "store").has_dense  # the saved one is reloaded


def test_a_store_saved_without_the_name_still_loads(tmp_path):
    store = PassageRetriever.build(corpus_passages(50, 100)[:10], embedder=_hashing_embedder)
    store.save(tmp_path / "store")
    manifest = tmp_path / "store" / "passages.json"
    payload = json.loads(manifest.read_text())
    del payload["embedder"]  # as written before the name was recorded
    manifest.write_text(json.dumps(payload))
    assert PassageRetriever.load(tmp_path / "store", embedder=_other_embedder).has_dense


def test_write_outputs_refuses_to_merge_results_of_another_embedder(tmp_path, load_experiment):
    experiment = load_experiment("rag_retrieval")
    previous = tmp_path / "rag_questions.json"
    before = json.dumps({"embedder": "tfidf-projection-256", "keyword_levels": []})
    previous.write_text(before)
    results = {"embedder": "tinyllm.embeddings:MiniLMEmbedder", "machine": "test"}
    with pytest.raises(ValueError) as error:
        experiment.write_outputs(results, tmp_path)
    assert "tfidf-projection-256" in str(error.value)
    assert "tinyllm.embeddings:MiniLMEmbedder" in str(error.value)
    assert previous.read_text() == before  # nothing written
    assert not (tmp_path / "rag_questions.md").exists()


def test_round5_best_template_term_reproduces_search_documents_at_weight_0(
    tmp_path, load_experiment
):
    """The experiment's round 5 recomputes document scores from the store's own stages to
    add a term; at weight 0 its rankings must be the library's (here with the TF-IDF
    embedder, so that the test needs no MiniLM)."""
    from types import SimpleNamespace

    experiment = load_experiment("rag_retrieval")
    embed, name = experiment.load_embedder("tfidf", [p.text for p in corpus_passages()])
    out = experiment.round5_experiment(SimpleNamespace(cache=tmp_path, seed=0), embed, name)
    assert out["max_term_reproduces_shipped_at_0"] is True
    assert out["questions"] == 209 and not out["fresh_set_looked_at"]
    e = experiment
    blends = len(e.ROUND5_BLENDS) * len(e.ROUND5_CENTROID_WEIGHTS)
    assert len(out["grid"]) == blends + len(e.ROUND5_MAX_WEIGHTS) + 2 * len(e.ROUND5_BM25_WEIGHTS)


def test_round6_rankings_and_the_distinct_passage_invariant(tmp_path, load_experiment):
    """Round 6 recomputes the shipped ranking from the store's stages (it must equal
    ``search_documents``'), and (a), each passage shown once, can only move a question's
    first relevant passage up: no question is worse (TF-IDF embedder, no MiniLM needed)."""
    from types import SimpleNamespace

    experiment = load_experiment("rag_retrieval")
    embed, name = experiment.load_embedder("tfidf", [p.text for p in corpus_passages()])
    out = experiment.round6_experiment(SimpleNamespace(cache=tmp_path, seed=0), embed, name)
    assert out["stages_reproduce_shipped"] is True
    assert out["questions"] == 209 and not out["fresh_set_looked_at"]
    shipped, distinct, unshown = out["rows"]
    assert distinct["method"] == "(a) distinct passages"
    assert distinct["questions_worse"] == 0 and distinct["questions_changed"] > 0
    assert distinct["hit@5"] >= shipped["hit@5"] and distinct["mrr"] >= shipped["mrr"]
    assert out["repeated_passage_in_top5"] > 0
