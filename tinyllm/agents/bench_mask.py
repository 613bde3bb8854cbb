"""Measure the per-step cost of constrained decoding: ``python -m tinyllm.agents.bench_mask``.

For a JSON schema and a vocabulary (bytes, or a BPE trained here on a small synthetic text),
samples documents with random logits through ``JSONLogitsProcessor`` and reports

* cold steps: a step whose state's mask is computed for the first time (trie walk);
* warm steps: the mask comes from the cache (the per-step cost once states repeat);
* the number of DFA states and masks made.

Times are wall-clock medians on this machine (single thread, NumPy).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tinyllm.agents.logits import JSONLogitsProcessor
from tinyllm.agents.token_mask import TokenVocabulary

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 4},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "ok"],
}


def _vocabulary(kind: str, vocab_size: int) -> TokenVocabulary:
    if kind == "bytes":
        return TokenVocabulary.bytes_level()
    from tinyllm.tokenizers.bpe import BPETokenizer

    rng = np.random.default_rng(0)
    words = ["red", "green", "blue", "true", "false", "name", "age", "tags", "ok", "the", "and"]
    text = " ".join(
        f'{{"name":"{w}","age":{int(rng.integers(0, 999))},"ok":true}} {w}'
        for w in rng.choice(words, 3000)
    )
    tok = BPETokenizer.train(text, vocab_size=vocab_size, special_tokens=["<|endoftext|>"])
    return TokenVocabulary.from_bpe(tok)


def measure(kind: str = "bytes", vocab_size: int = 1024, samples: int = 200, seed: int = 0) -> dict:
    """Sample ``samples`` documents; return cold/warm per-step medians (µs) and counts."""
    vocab = _vocabulary(kind, vocab_size)
    proc = JSONLogitsProcessor(SCHEMA, vocab)
    rng = np.random.default_rng(seed)
    cold, warm = [], []
    for _ in range(samples):
        proc._states = {(): proc.guide.initial}
        proc.prompt_length = 1
        ids = [0]
        for _ in range(500):
            scores = rng.standard_normal((1, vocab.size))
            before = proc.guide.num_cached_masks
            t0 = time.perf_counter()
            scores = proc(np.array([ids]), scores)
            dt = time.perf_counter() - t0
            (cold if proc.guide.num_cached_masks > before else warm).append(dt)
            token = int(np.argmax(scores[0]))
            if token == vocab.eos_token_id:
                break
            ids.append(token)
    return {
        "vocabulary": kind,
        "V": vocab.size,
        "dfa_states": proc.guide.automaton.num_states,
        "masks": proc.guide.num_cached_masks,
        "cold_steps": len(cold),
        "cold_median_us": 1e6 * float(np.median(cold)),
        "warm_steps": len(warm),
        "warm_median_us": 1e6 * float(np.median(warm)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--bpe-vocab-size", type=int, default=1024)
    args = parser.parse_args(argv)
    print(
        "| vocabulary | V | DFA states | masks | cold steps | cold median µs "
        "| warm steps | warm median µs |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for kind in ("bytes", "bpe"):
        r = measure(kind, args.bpe_vocab_size, args.samples)
        print(
            f"| {r['vocabulary']} | {r['V']} | {r['dfa_states']} | {r['masks']} "
            f"| {r['cold_steps']} | {r['cold_median_us']:.0f} "
            f"| {r['warm_steps']} | {r['warm_median_us']:.1f} |"
        )


if __name__ == "__main__":
    main()
