"""Numba's on-disk cache for tinyllm's jitted code, invalidated when any jitted source of the
same directory changes.

Numba keys a cached function by a stamp of the one file that defines it. tinyllm's Numba
code calls across files (``numba_math``'s helpers in every kernel, the norm/GLU/RoPE bodies
inside the whole-step decoding kernel, ``rag/search_kernels`` inside HNSW and IVF), and a
caller's compiled code contains its callees': after an edit of a helper, the callers'
caches would still load the old code, and a test would check code that no longer exists.
Here the stamp of every function in a registered directory is Numba's stamp of its own file
together with a digest of all the directory's jitted sources (the ``.py`` files with a line
starting ``@njit``): editing any of them recompiles that directory's functions once.

``install(directory)`` (called by ``kernels/numba_math.py`` and ``rag/search_kernels.py``
before they define anything) registers the directory and, the first time, puts locator
classes in front of Numba's list that claim only functions of registered directories and
otherwise behave as Numba's own (``NUMBA_CACHE_DIR``, the in-tree ``__pycache__``, the
user-wide directory, in Numba's order). Nothing changes for other code. Should Numba's
locator classes not be found (another Numba version), it returns False and the old rule
holds: touch a caller's file after editing a helper it calls.
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent
_LOCATORS = ("UserProvidedCacheLocator", "InTreeCacheLocator", "UserWideCacheLocator")
_directories: set[Path] = set()
_installed: list[bool] = []


def jitted_sources(directory: Path) -> list[Path]:
    """The ``.py`` files of ``directory`` whose code Numba compiles (a line starts ``@njit``)."""
    return [p for p in sorted(Path(directory).glob("*.py")) if _scan(*_key(p)) is not None]


def sources_stamp(directory: Path) -> bytes:
    """SHA-256 over the names and contents of ``jitted_sources(directory)`` (files are
    re-read only when their modification time or size changes)."""
    h = hashlib.sha256()
    for path in jitted_sources(directory):
        h.update(path.name.encode())
        h.update(_scan(*_key(path)))  # cached: the file was read once, by jitted_sources
    return h.digest()


def _key(path: Path) -> tuple:
    st = path.stat()
    return str(path), st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=256)
def _scan(path: str, mtime_ns: int, size: int) -> bytes | None:
    """SHA-256 of a jitted source file, None for a file without a line starting ``@njit``
    (one read per file version)."""
    data = Path(path).read_bytes()
    return hashlib.sha256(data).digest() if re.search(rb"(?m)^@njit", data) else None


class _DirectoryStamp:
    """Mixin over a Numba locator: only registered directories; stamp = (the file's own,
    its directory's jitted sources')."""

    def get_source_stamp(self):
        return (super().get_source_stamp(), sources_stamp(Path(self._py_file).resolve().parent))

    @classmethod
    def from_function(cls, py_func, py_file):
        if Path(py_file).resolve().parent not in _directories:
            return None
        return super().from_function(py_func, py_file)


def install(directory: Path = KERNEL_DIR) -> bool:
    """Register ``directory`` and put the locators first in Numba's list (once); True when
    they are in use."""
    _directories.add(Path(directory).resolve())
    if _installed:
        return _installed[0]
    from numba.core import caching

    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    bases = [getattr(caching, n, None) or getattr(caching, "_" + n, None) for n in _LOCATORS]
    classes = getattr(impl, "_locator_classes", None)
    ok = isinstance(classes, list) and all(bases)
    if ok:
        classes[:0] = [
            type(f"Stamped{b.__name__.lstrip('_')}", (_DirectoryStamp, b), {}) for b in bases
        ]
    _installed.append(ok)
    return ok
