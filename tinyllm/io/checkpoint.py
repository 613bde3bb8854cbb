"""Checkpoints: named arrays plus JSON metadata in one safetensors file, written atomically.

A checkpoint is ``{name: ndarray}`` and a JSON-serializable ``metadata`` dict (config, step,
optimizer hyper-parameters, RNG state). Nothing is pickled: safetensors stores raw little-
endian arrays behind a JSON header, and the metadata travels in that header as one string.

Writes are atomic: the file is written to a temporary name in the same folder, flushed and
fsynced, then renamed over the target, so a crash (or Ctrl-C) never leaves a half-written
checkpoint under the real name. A truncated or corrupt file fails to load with a
``CheckpointError`` naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tinyllm.io.atomic import atomic_write

METADATA_KEY = "tinyllm"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, or that does not fit what it is loaded into."""


def save_checkpoint(path: str | Path, arrays: dict[str, np.ndarray], metadata: dict) -> Path:
    """Write ``arrays`` and ``metadata`` to ``path`` atomically; returns the path."""
    from safetensors.numpy import save

    path = Path(path)
    clean = {}
    for name, array in arrays.items():
        if not isinstance(array, np.ndarray):
            raise TypeError(f"save_checkpoint: {name!r} is a {type(array).__name__}, not an array")
        clean[name] = np.ascontiguousarray(array)
    blob = save(clean, metadata={METADATA_KEY: json.dumps(metadata)})
    with atomic_write(path) as f:
        f.write(blob)
    return path


def load_checkpoint(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a checkpoint written by ``save_checkpoint``: (arrays, metadata)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"load_checkpoint: no such file: {path}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            header = f.metadata() or {}
            arrays = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as exc:  # safetensors raises several types for truncated/corrupt files
        raise CheckpointError(
            f"load_checkpoint: {path} is not a readable checkpoint ({exc})"
        ) from exc
    if METADATA_KEY not in header:
        raise CheckpointError(f"load_checkpoint: {path} has no tinyllm metadata")
    try:
        metadata = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"load_checkpoint: {path} has corrupt metadata ({exc})") from exc
    return arrays, metadata
