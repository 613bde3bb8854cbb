"""The default corpus: the Python standard library's help topics (`pydoc_data.topics`).

It ships with every Python, so training and retrieval run with no download. The text is
``"\\n\\n".join(topics[k] for k in sorted(topics))``; as UTF-8 bytes it is about 465 kB of
English technical prose. The first 90% of the bytes is the training split, the last 10% the
validation split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TRAIN_FRACTION = 0.9


def default_corpus_text() -> str:
    """The help topics joined in sorted key order, separated by blank lines."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def default_corpus_topics() -> dict[str, str]:
    """The help topics as a ``{name: text}`` dict (a copy), for passage-level work."""
    from pydoc_data.topics import topics

    return {key: topics[key] for key in sorted(topics)}


def load_text(path: str | Path | None = None) -> str:
    """The text of ``path`` (UTF-8), or the default corpus when ``path`` is None."""
    if path is None:
        return default_corpus_text()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_text: no such file: {path}")
    return path.read_text(encoding="utf-8")


def default_corpus_bytes() -> np.ndarray:
    """The default corpus as a uint8 array of UTF-8 bytes."""
    return np.frombuffer(default_corpus_text().encode("utf-8"), dtype=np.uint8).copy()


def split_bytes(data: np.ndarray, train_fraction: float = TRAIN_FRACTION):
    """(train, validation): the first ``train_fraction`` of ``data`` and the rest."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"split_bytes: train_fraction must be in (0, 1), got {train_fraction}")
    cut = int(len(data) * train_fraction)
    return data[:cut], data[cut:]
