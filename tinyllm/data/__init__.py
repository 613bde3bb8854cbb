"""Data: the embedded default corpus and batch sampling."""

from tinyllm.data.corpus import default_corpus_bytes, default_corpus_text, load_text, split_bytes

__all__ = ["default_corpus_bytes", "default_corpus_text", "load_text", "split_bytes"]
