"""Quantize the pretrained MiniLM sentence encoder (all-MiniLM-L6-v2, or any BERT folder).

``quantize_pretrained("all-MiniLM-L6-v2", method="gptq", bits=4, group_size=128)`` loads the
float model, quantizes its encoder's linear layers (the pooler and MLM head, unused by
sentence embeddings, stay float) and returns it; calibrated methods run on fixed sentences
from the embedded corpus (``corpus_sentences("calibration")``), disjoint from the evaluation
sentences (``corpus_sentences("evaluation")``) that the experiment compares embeddings on.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from tinyllm.quant.model import quantize_model, quantized_state

__all__ = [
    "bert_batches",
    "corpus_sentences",
    "load_quantized_pretrained",
    "quantize_pretrained",
    "save_quantized_pretrained",
]


def corpus_sentences(part: str = "evaluation", n: int = 64) -> list[str]:
    """``n`` fixed sentences (30-200 characters) of the embedded Python-docs corpus.

    "calibration" takes them from the even-numbered topics (sorted by name), "evaluation"
    from the odd-numbered ones, so the two sets never share a sentence.
    """
    from tinyllm.data.corpus import default_corpus_topics

    if part not in ("calibration", "evaluation"):
        raise ValueError(f"corpus_sentences: part must be calibration or evaluation, got {part!r}")
    topics = default_corpus_topics()
    names = sorted(topics)[(0 if part == "calibration" else 1) :: 2]
    out: list[str] = []
    while len(out) < n:
        added = False
        for name in names:  # round-robin over topics: varied sentences
            text = " ".join(topics[name].split())
            pieces = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text)]
            good = [s for s in pieces if 30 <= len(s) <= 200 and s not in out]
            if good:
                out.append(good[0])
                added = True
            if len(out) == n:
                break
        if not added:
            break
    return out


def bert_batches(tokenizer, sentences: list[str], batch_size: int = 16, max_length: int = 128):
    """Padded (input_ids, attention_mask, token_type_ids) int64 batches of the sentences."""
    encoded = [tokenizer.encode_with_types(s, max_length=max_length) for s in sentences]
    batches = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        T = max(len(e[0]) for e in chunk)
        ids = np.zeros((len(chunk), T), dtype=np.int64)
        types = np.zeros((len(chunk), T), dtype=np.int64)
        mask = np.zeros((len(chunk), T), dtype=np.int64)
        for b, (i, t) in enumerate(chunk):
            ids[b, : len(i)], types[b, : len(i)], mask[b, : len(i)] = i, t, 1
        batches.append((ids, mask, types))
    return batches


def quantize_pretrained(
    name_or_path: str | Path = "all-MiniLM-L6-v2",
    method: str = "nf4",
    bits: int = 4,
    group_size: int | None = 128,
    calibration_sentences: list[str] | None = None,
    **options,
):
    """The pretrained BERT encoder with its linear layers quantized by ``method``."""
    from tinyllm.models.pretrained import load_pretrained, load_pretrained_tokenizer

    model = load_pretrained(name_or_path)
    batches = None
    if method in ("gptq", "awq", "smoothquant") or options.get("lkd_steps"):
        tokenizer = load_pretrained_tokenizer(name_or_path)
        sentences = calibration_sentences or corpus_sentences("calibration", 128)
        batches = bert_batches(tokenizer, sentences)
    return quantize_model(
        model,
        method,
        bits,
        group_size,
        calibration=batches,
        forward=lambda m, batch: m(*batch),
        **options,
    )


def save_quantized_pretrained(model, out_dir: str | Path, source: str, options: dict) -> Path:
    """Write a quantized BERT to ``out_dir/checkpoint.safetensors`` (``load_quantized``)."""
    from tinyllm.io.checkpoint import save_checkpoint

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays, quant = quantized_state(model)
    meta = {
        "arch": "bert",
        "bert_config": model.config.to_dict(),
        "source": str(source),
        "quant": {**options, **quant},
    }
    return save_checkpoint(out_dir / "checkpoint.safetensors", arrays, meta)


def load_quantized_pretrained(out_dir: str | Path):
    """(model, source) of a folder written by ``save_quantized_pretrained``: the quantized
    BERT in eval mode and the name or folder of the float model it came from (whose
    tokenizer it uses)."""
    from tinyllm.io.checkpoint import CheckpointError, load_checkpoint
    from tinyllm.quant.model import load_quantized

    ckpt = Path(out_dir) / "checkpoint.safetensors"
    if not ckpt.is_file():
        raise FileNotFoundError(f"load_quantized_pretrained: {ckpt} does not exist")
    _, meta = load_checkpoint(ckpt)
    if meta.get("arch") != "bert" or "quant" not in meta:
        raise CheckpointError(
            f"load_quantized_pretrained: {ckpt} is not a quantized BERT "
            "(write one with `tinyllm quantize all-MiniLM-L6-v2 --method nf4 --out DIR`)"
        )
    return load_quantized(out_dir), meta["source"]
