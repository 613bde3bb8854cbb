"""Passages of the default corpus, the dense baseline, the passage store and the CLI."""

import argparse

import numpy as np
import pytest

from tinyllm.rag.embedders import TfidfProjectionEmbedder
from tinyllm.rag.passages import corpus_passages, split_passages
from tinyllm.rag.persistence import load_arrays, save_arrays
from tinyllm.rag.retriever import PassageRetriever


@pytest.fixture(scope="module")
def passages():
    return corpus_passages()


def test_split_passages_sizes_and_no_lost_words():
    text = "\n\n".join(
        " ".join(f"w{i}_{j}" for j in range(n)) for i, n in enumerate([30, 50, 250, 10, 90, 5])
    )
    pieces = split_passages(text, 100, 200)
    sizes = [len(p.split()) for p in pieces]
    # 30 + 50 = 80 cannot take the 250-word paragraph's first 200-word piece (> 200): flushed
    # short; the rest is 200 | 50 + 10 + 90 = 150 | a 5-word tail merged into the last passage
    assert sizes == [80, 200, 155]
    assert " ".join(pieces).split() == text.split()
    with pytest.raises(ValueError, match="split_passages: need 0 < min_words <= max_words"):
        split_passages(text, 300, 200)


def test_corpus_passages(passages):
    assert len(passages) > 300
    assert [p.id for p in passages] == list(range(len(passages)))
    assert len({p.text for p in passages}) == len(passages)  # deduplicated
    sizes = np.array([len(p.text.split()) for p in passages])
    assert sizes.max() <= 200 and np.median(sizes) >= 100
    assert len(corpus_passages(deduplicate=False)) > len(passages)


def test_tfidf_embedder_is_unit_norm_and_lexical(passages, tmp_path):
    texts = [p.text for p in passages[:50]]
    embed = TfidfProjectionEmbedder(dim=128, seed=1).fit(texts)
    vectors = embed(texts)
    assert vectors.shape == (50, 128) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert (np.argmax(vectors @ vectors.T, axis=1) == np.arange(50)).all()
    loaded = TfidfProjectionEmbedder.load(embed.save(tmp_path / "e.npz"))
    np.testing.assert_allclose(loaded(texts[:3]), vectors[:3], rtol=1e-6)
    assert (embed(["zzzz qqqq"]) == 0).all()


def test_retriever_modes_and_round_trip(passages, tmp_path):
    embed = TfidfProjectionEmbedder(dim=128).fit([p.text for p in passages])
    store = PassageRetriever.build(passages, embedder=embed, index="hnsw")
    # a first paragraph that occurs in exactly one passage (the help topics repeat text)
    target = next(
        p
        for p in passages[40:]
        if sum(p.text.split("\n\n")[0] in q.text for q in passages) == 1
        and len(p.text.split("\n\n")[0].split()) > 30
    )
    query = target.text.split("\n\n")[0]
    for mode in ("bm25", "dense", "hybrid", "hybrid_score"):
        results = store.search(query, 3, mode)
        assert len(results) == 3
        assert results[0][0].id == target.id, mode
        assert all(isinstance(s, float) for _, s in results)
    # the first stage: the BM25 and dense lists of their modes, fused by min-max scores
    fused, lexical, dense = store.first_stage(query, 20, (0.5, 1.0))
    assert lexical == [(p.id, s) for p, s in store.search(query, 20, "bm25")]
    assert dense == [(p.id, s) for p, s in store.search(query, 20, "dense")]
    scaled = {}
    for hits, weight in ((lexical, 0.5), (dense, 1.0)):
        low, high = min(s for _, s in hits), max(s for _, s in hits)
        for pid, score in hits:
            scaled[pid] = scaled.get(pid, 0.0) + weight * (score - low) / (high - low)
    assert [pid for pid, _ in fused] == sorted(scaled, key=lambda pid: (-scaled[pid], pid))
    np.testing.assert_allclose([f for _, f in fused], [scaled[pid] for pid, _ in fused])
    assert [(p.id, f) for p, f in store.search(query, 5, "hybrid_score", 20, (0.5, 1.0))] == (
        fused[:5]
    )
    for depth in (0, 2.5):
        with pytest.raises(ValueError, match="first_stage: depth must be a positive integer"):
            store.first_stage(query, depth)
    store.save(tmp_path / "store")
    loaded = PassageRetriever.load(tmp_path / "store")
    for mode in ("bm25", "hybrid"):
        assert [p.id for p, _ in loaded.search(query, 5, mode)] == [
            p.id for p, _ in store.search(query, 5, mode)
        ]
    bm25_only = PassageRetriever.build(passages[:20])
    with pytest.raises(RuntimeError, match="no dense index"):
        bm25_only.search("x", 2, "dense")
    with pytest.raises(ValueError, match="mode must be one of"):
        bm25_only.search("x", 2, "fancy")


def test_save_arrays_rejects_object_arrays(tmp_path):
    with pytest.raises(TypeError, match="object dtype"):
        save_arrays(tmp_path / "x.npz", {"a": np.array([{}], dtype=object)}, {})
    save_arrays(tmp_path / "x.npz", {"a": np.arange(3)}, {"type": "T", "n": 3})
    arrays, meta = load_arrays(tmp_path / "x.npz")
    assert meta["n"] == 3 and arrays["a"].tolist() == [0, 1, 2]


def test_cli_build_and_query(tmp_path, capsys):
    from tinyllm.cli import rag_cmd

    parser = argparse.ArgumentParser(prog="tinyllm")
    rag_cmd.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "store"
    args = parser.parse_args(["rag", "build", "--out", str(out), "--dense", "tfidf", "--dim", "64"])
    assert args.func(args) == 0
    assert (out / "bm25.npz").is_file() and (out / "dense.npz").is_file()
    args = parser.parse_args(
        ["rag", "query", "--store", str(out), "yield expression generator", "-k", "2"]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert printed.count("score=") == 2 and "1. [" in printed
    args = parser.parse_args(["rag", "query", "--store", str(out), "with", "--mode", "hybrid"])
    assert args.func(args) == 0
    args = parser.parse_args(["rag", "query", "--store", str(tmp_path / "missing"), "x"])
    assert args.func(args) == 2


def test_cli_documents_mode_on_a_bm25_store(tmp_path, capsys):
    """A store without a dense index answers --mode documents from BM25 alone (distinct
    topics); modes that need the dense index are refused by name."""
    from tinyllm.cli import rag_cmd

    parser = argparse.ArgumentParser(prog="tinyllm")
    rag_cmd.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "store"
    build = parser.parse_args(["rag", "build", "--out", str(out)])
    assert build.func(build) == 0 and not (out / "dense.npz").exists()
    capsys.readouterr()
    args = parser.parse_args(["rag", "query", "--store", str(out), "catch an exception",
                              "--mode", "documents", "-k", "3"])  # fmt: skip
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    topics = [line.split("[", 1)[1].split("]", 1)[0] for line in printed.splitlines()
              if line[:1].isdigit() and ". [" in line]  # fmt: skip
    assert len(topics) == 3 and len(set(topics)) == 3, printed
    args = parser.parse_args(["rag", "query", "--store", str(out), "x", "--mode", "dense"])
    assert args.func(args) == 2 and "needs a dense index" in capsys.readouterr().err
