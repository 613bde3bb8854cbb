"""Data: the embedded default corpus and batch sampling."""

from tinyllm.data.batches import random_windows, sequential_windows
from tinyllm.data.corpus import default_corpus_bytes, default_corpus_text, load_text, split_bytes

__all__ = [
    "default_corpus_bytes",
    "default_corpus_text",
    "load_text",
    "random_windows",
    "sequential_windows",
    "split_bytes",
]
