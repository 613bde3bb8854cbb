"""Saving and loading indexes without pickle.

An index is a dict of NumPy arrays plus a JSON-serialisable metadata dict. Both go into one
``.npz`` file: the arrays under their own names and the metadata, as JSON text, in a 0-d
unicode array under the key ``__meta__``. Unicode and numeric arrays load with
``allow_pickle=False``, so loading a file never executes code.

Writes are atomic: the archive is written to a temporary file in the destination folder,
flushed and fsync-ed, then moved over the destination with ``os.replace`` (atomic on POSIX and
Windows when both paths are on one file system). A crash leaves either the old file or the new
one, never a torn file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tinyllm.io.atomic import atomic_write

META_KEY = "__meta__"
FORMAT_VERSION = 1


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    """Write ``arrays`` and ``meta`` to ``path`` (a ``.npz`` archive) atomically.

    ``meta`` must be JSON-serialisable; ``format_version`` is added to it. No array may be of
    object dtype (those would need pickle). Returns the path written.
    """
    path = Path(path)
    if META_KEY in arrays:
        raise ValueError(f"save_arrays: the array name {META_KEY!r} is reserved")
    for name, value in arrays.items():
        if not isinstance(value, np.ndarray):
            raise TypeError(
                f"save_arrays: arrays[{name!r}] must be a numpy array, got {type(value)}"
            )
        if value.dtype == object:
            raise TypeError(f"save_arrays: arrays[{name!r}] has object dtype, which needs pickle")
    meta = dict(meta)
    meta.setdefault("format_version", FORMAT_VERSION)
    meta_text = json.dumps(meta, sort_keys=True)
    with atomic_write(path) as handle:
        np.savez(handle, **arrays, **{META_KEY: np.array(meta_text)})
    return path


def load_arrays(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read an archive written by :func:`save_arrays`: ``(arrays, meta)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_arrays: no such file: {path}")
    with np.load(path, allow_pickle=False) as archive:
        if META_KEY not in archive.files:
            raise ValueError(f"load_arrays: {path} has no {META_KEY!r} entry (not a tinyllm index)")
        meta = json.loads(str(archive[META_KEY][()]))
        arrays = {name: archive[name] for name in archive.files if name != META_KEY}
    return arrays, meta


def load_index(path: str | Path):
    """Load any tinyllm.rag index saved with its ``save`` method, dispatching on its type."""
    from tinyllm.rag.bm25 import BM25
    from tinyllm.rag.exact import ExactIndex
    from tinyllm.rag.hnsw import HNSWIndex
    from tinyllm.rag.ivf import IVFIndex
    from tinyllm.rag.lsh import LSHIndex

    classes = {cls.__name__: cls for cls in (BM25, ExactIndex, HNSWIndex, IVFIndex, LSHIndex)}
    arrays, meta = load_arrays(path)
    kind = meta.get("type")
    if kind not in classes:
        raise ValueError(f"load_index: unknown index type {kind!r} in {path}")
    return classes[kind]._from_arrays(arrays, meta)


def load_typed(cls, path: str | Path):
    """Load an archive that must hold an index of class ``cls`` (checked by name)."""
    arrays, meta = load_arrays(path)
    if meta.get("type") != cls.__name__:
        raise ValueError(
            f"{cls.__name__}.load: {path} holds a {meta.get('type')!r}, not a {cls.__name__}"
        )
    return cls._from_arrays(arrays, meta)
