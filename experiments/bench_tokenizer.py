"""Benchmark the byte-level BPE tokenizer: train a 4,096-token vocabulary on the default corpus,
then encode the whole corpus. Prints one JSON line.

Targets (2 CPU cores): training under 10 s, encoding at least 1 MB/s. Where Hugging Face
``tokenizers`` / ``tiktoken`` are installed their times are printed beside ours, and the
record says whether they agree with us (same merges / same ids).

    python experiments/bench_tokenizer.py [--vocab-size 4096] [--repeats 3] [--data PATH]

Times are the best of ``--repeats`` runs. ``encode_cold`` starts with an empty chunk cache
(the first encode after loading); ``encode_warm`` reuses the cache of the previous run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

from tinyllm.data.corpus import load_text
from tinyllm.tokenizers import GPT2_PATTERN, BPETokenizer
from tinyllm.tokenizers.bytes_unicode import bytes_to_token_string


def best_time(function, repeats: int):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", default=None, help="UTF-8 text file (default: built-in corpus)")
    args = parser.parse_args()

    text = load_text(args.data)
    megabytes = len(text.encode("utf-8")) / 1e6
    record: dict = {
        "bench": "tokenizer",
        "corpus_bytes": len(text.encode("utf-8")),
        "vocab_size": args.vocab_size,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }

    train_s, tokenizer = best_time(lambda: BPETokenizer.train(text, args.vocab_size), args.repeats)

    def encode_cold():
        tokenizer._cache.clear()
        return tokenizer.encode(text)

    cold_s, ids = best_time(encode_cold, args.repeats)
    warm_s, _ = best_time(lambda: tokenizer.encode(text), args.repeats)
    decode_s, decoded = best_time(lambda: tokenizer.decode(ids), args.repeats)
    record.update(
        train_s=round(train_s, 3),
        merges=len(tokenizer.merges),
        tokens=len(ids),
        bytes_per_token=round(len(text.encode("utf-8")) / len(ids), 3),
        encode_cold_s=round(cold_s, 3),
        encode_cold_mb_s=round(megabytes / cold_s, 2),
        encode_warm_s=round(warm_s, 3),
        encode_warm_mb_s=round(megabytes / warm_s, 2),
        decode_s=round(decode_s, 3),
        round_trip=decoded == text,
        target_train_under_10s=train_s < 10.0,
        target_encode_1mb_s=megabytes / cold_s >= 1.0,
    )

    try:
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers

        def hf_train():
            hf = Tokenizer(models.BPE())
            hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
            trainer = trainers.BpeTrainer(
                vocab_size=args.vocab_size,
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                show_progress=False,
            )
            hf.train_from_iterator([text], trainer)
            return hf

        hf_train_s, hf = best_time(hf_train, args.repeats)
        hf_encode_s, hf_encoding = best_time(lambda: hf.encode(text), args.repeats)
        hf_merges = json.loads(hf.to_str())["model"]["merges"]
        hf_merges = [m if isinstance(m, str) else " ".join(m) for m in hf_merges]
        names = {i: bytes_to_token_string(data) for i, data in tokenizer.vocab.items()}
        ours = [f"{names[a]} {names[b]}" for a, b in tokenizer.merges]
        ours_tokens = [bytes_to_token_string(tokenizer.vocab[i]) for i in ids]
        record.update(
            hf_train_s=round(hf_train_s, 3),
            hf_encode_s=round(hf_encode_s, 3),
            hf_encode_mb_s=round(megabytes / hf_encode_s, 2),
            hf_same_merges=hf_merges == ours,
            hf_same_tokens=hf_encoding.tokens == ours_tokens,
        )
    except ImportError:
        record["hf"] = "not installed"

    try:
        import tiktoken

        encoding = tiktoken.Encoding(
            "tinyllm-bench",
            pat_str=GPT2_PATTERN,
            mergeable_ranks=tokenizer.mergeable_ranks(),
            special_tokens={},
        )
        tiktoken_s, tiktoken_ids = best_time(lambda: encoding.encode_ordinary(text), args.repeats)
        record.update(
            tiktoken_encode_s=round(tiktoken_s, 3),
            tiktoken_encode_mb_s=round(megabytes / tiktoken_s, 2),
            tiktoken_same_ids=tiktoken_ids == ids,
        )
    except ImportError:
        record["tiktoken"] = "not installed"

    print(json.dumps(record))


if __name__ == "__main__":
    main()
