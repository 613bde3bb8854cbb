"""Process settings that make a NumPy training step fast, applied once at ``import tinyllm``.

Two measured pitfalls of NumPy+Numba training on a small machine:

1. glibc's malloc returns every large temporary (above its dynamic mmap threshold) to the OS
   and page-faults it in afresh on the next step: about 26k minor faults and 70-80 ms per
   step for a 3M-parameter model. Raising the mmap and trim thresholds with ``mallopt`` makes
   freed blocks stay in the heap for reuse, as PyTorch's caching allocator does.
2. After each parallel Numba kernel, libgomp's workers spin-wait and starve the next OpenBLAS
   GEMM on 2 cores (a 2.7x slower step). ``OMP_WAIT_POLICY=PASSIVE`` (set only if the user has
   not set it, and before Numba loads libgomp) makes them sleep.

``TINYLLM_NO_RUNTIME_TUNING=1`` turns both off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

applied: dict[str, object] = {}


def tune_process() -> dict:
    """Apply the settings above (idempotent); returns what was applied."""
    if applied or os.environ.get("TINYLLM_NO_RUNTIME_TUNING") == "1":
        return applied
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        applied["OMP_WAIT_POLICY"] = "PASSIVE"
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            ok = (
                libc.mallopt(M_MMAP_THRESHOLD, 256 * 2**20)
                and libc.mallopt(M_TRIM_THRESHOLD, 2**30)
                and libc.mallopt(M_TOP_PAD, 64 * 2**20)
            )
            applied["mallopt"] = bool(ok)
        except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
            applied["mallopt"] = False
    return applied


tune_process()
