"""Process settings and the thread policy: nothing here runs at ``import tinyllm``.

The rule: ``import tinyllm`` changes nothing global in the user's process (no environment
variable, no allocator setting, no other library's thread count). What a training process
may want is applied only when asked for:

``tune_process()`` -- called by the ``tinyllm`` command line and the benchmark harness, or
by a user's training script -- applies:

1. glibc ``mallopt`` thresholds. By default glibc returns every large temporary (above its
   dynamic mmap threshold) to the OS and page-faults it in afresh on the next step: about
   26k minor faults and 70-80 ms per step for a 3M-parameter model. Raising the mmap and
   trim thresholds keeps freed blocks in the heap for reuse, as PyTorch's caching allocator
   does. This makes the whole process keep more memory, so it is opt-in.
2. When ``TINYLLM_NUM_THREADS`` is set: the BLAS pool (NumPy's OpenBLAS) is limited to that
   many threads, so kernels and GEMMs share one pool size (SciPy's OpenBLAS, loaded later
   by the decoding kernel, gets the same limit then: ``limit_late_blas_pools``).

``TINYLLM_NO_RUNTIME_TUNING=1`` turns ``tune_process()`` into a no-op.

The thread policy (applied lazily by ``tinyllm.kernels`` at its first parallel Numba launch,
never at import; ``prepare_numba()``):

- Numba's threading layer: ``workqueue`` when the user chose none (``NUMBA_THREADING_LAYER``
  unset, ``numba.config.THREADING_LAYER`` still ``"default"``) and Numba has not started one
  yet. Numba's default, OpenMP, leaves its workers spinning after each parallel kernel and
  on 2 cores they starve the next OpenBLAS GEMM (a 2.7x slower step); the old fix,
  ``OMP_WAIT_POLICY=PASSIVE`` in ``os.environ``, also put PyTorch's OpenMP pool to sleep
  between regions in the same process (and in every child process): 162 against 110 ms per
  step. workqueue's workers sleep on a condition variable and use no OpenMP at all. The
  setting is Numba's own global: a user's own ``parallel=True`` code that first runs after
  a tinyllm kernel uses workqueue too. Whoever wants another layer sets
  ``NUMBA_THREADING_LAYER`` (or ``numba.config.THREADING_LAYER``) first, and tinyllm uses it.
  workqueue is not threadsafe: ``tinyllm.kernels`` lets one thread at a time launch a
  parallel kernel; a second thread meanwhile runs the serial twin (same results).
- Thread count of the kernels: ``TINYLLM_NUM_THREADS`` when set, else the BLAS pool's size
  (OpenBLAS follows the CPU affinity and ``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``;
  Numba's default count does not follow affinity), capped by ``NUMBA_NUM_THREADS``: kernels
  and GEMMs alternate within a step, so one pool size for both never oversubscribes the
  cores. Set once per thread, at its first parallel launch, and only when it differs from
  Numba's current count.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from typing import Any

# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

NUM_THREADS_VAR = "TINYLLM_NUM_THREADS"
NO_TUNING_VAR = "TINYLLM_NO_RUNTIME_TUNING"
DEFAULT_LAYER = "workqueue"

# the environment as it was when tinyllm was imported: child processes of the benchmarks
# (the PyTorch side above all) start from it, never from anything set later in this process
ENV_AT_IMPORT: dict[str, str] = dict(os.environ)

applied: dict[str, object] = {}  # what tune_process() did (empty until it is called)
_numba_state: dict[str, Any] = {}  # what prepare_numba() found or chose
_late_pools_limited = False  # limit_late_blas_pools() has run
_lock = threading.RLock()


def tune_process() -> dict:
    """Apply the process settings described above (idempotent); returns what was applied.

    Call it at the start of a training script (the ``tinyllm`` command line and the
    benchmark harness do). It is never called by ``import tinyllm``.
    """
    with _lock:
        if applied or os.environ.get(NO_TUNING_VAR) == "1":
            return applied
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
        n = requested_threads()
        if n is not None:
            applied["blas_threads"] = set_blas_threads(n)
        applied.setdefault("mallopt", False)
        return applied


def requested_threads() -> int | None:
    """``TINYLLM_NUM_THREADS`` as a positive int, or None when unset (errors name it)."""
    value = os.environ.get(NUM_THREADS_VAR, "").strip()
    if not value:
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"${NUM_THREADS_VAR} must be a positive integer, got {value!r}")
    return n


def child_env(framework: str = "tinyllm") -> dict[str, str]:
    """The environment for a benchmark's child process, built from ``ENV_AT_IMPORT``.

    ``framework="torch"`` drops every ``TINYLLM_*`` variable as well: the peer runs with the
    environment its users would give it.
    """
    env = dict(ENV_AT_IMPORT)
    if framework != "tinyllm":
        env = {k: v for k, v in env.items() if not k.startswith("TINYLLM_")}
    return env


# ---------------------------------------------------------------- BLAS pool


def _openblas_functions() -> list[tuple[Any, Any]]:
    """(get_num_threads, set_num_threads) of each OpenBLAS loaded in this process."""
    found = []
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return found
    for path in sorted(p for p in paths if p.startswith("/")):
        try:
            lib = ctypes.CDLL(path, mode=os.RTLD_NOW | getattr(os, "RTLD_NOLOAD", 0))
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and put is not None:
                    get.restype = ctypes.c_int
                    found.append((get, put))
                    break
            else:
                continue
            break
    return found


def _threadpoolctl():
    try:
        import threadpoolctl
    except ImportError:
        return None
    return threadpoolctl


def blas_threads() -> int | None:
    """The size of NumPy's BLAS thread pool (threadpoolctl when installed, else OpenBLAS
    found by ctypes), or None when it cannot be read."""
    import numpy  # noqa: F401  (loads the BLAS library)

    tpc = _threadpoolctl()
    if tpc is not None:
        pools = [p["num_threads"] for p in tpc.threadpool_info() if p["user_api"] == "blas"]
        return max(pools) if pools else None
    funcs = _openblas_functions()
    return max(int(get()) for get, _ in funcs) if funcs else None


def set_blas_threads(n: int) -> int | None:
    """Limit NumPy's BLAS pool to ``n`` threads (process-wide); returns the new size."""
    import numpy  # noqa: F401

    tpc = _threadpoolctl()
    if tpc is not None:
        tpc.threadpool_limits(limits=n, user_api="blas")
    else:
        for _, put in _openblas_functions():
            put(ctypes.c_int(n))
    return blas_threads()


def limit_late_blas_pools() -> None:
    """Give a BLAS library loaded after ``tune_process()`` the ``TINYLLM_NUM_THREADS`` limit
    it applied (SciPy's OpenBLAS, a second pool that Numba's ``np.dot`` calls: the
    whole-step decoding kernel loads it). A no-op unless ``tune_process()`` set a limit, and
    after its first run (it costs ~1 ms, and the decoder is built on every ``generate``)."""
    global _late_pools_limited
    with _lock:
        if "blas_threads" in applied and not _late_pools_limited:
            set_blas_threads(requested_threads())
            _late_pools_limited = True


# ---------------------------------------------------------------- Numba (tinyllm's kernels)


def prepare_numba() -> dict:
    """Choose Numba's threading layer and tinyllm's kernel thread count (once; see above).

    Called by ``tinyllm.kernels`` right before its first parallel launch. Returns
    ``{"layer_chosen_by": "tinyllm"|"user"|"already running", "threads": n}``.
    """
    with _lock:
        if _numba_state:
            return _numba_state
        import numba

        try:
            running = numba.threading_layer()  # raises until a parallel region has run
        except ValueError:
            running = None
        user_choice = (
            os.environ.get("NUMBA_THREADING_LAYER")
            or os.environ.get("NUMBA_THREADING_LAYER_PRIORITY")
            or numba.config.THREADING_LAYER != "default"
        )
        if running is not None:
            chosen_by = "already running"
        elif user_choice:
            chosen_by = "user"
        else:
            numba.config.THREADING_LAYER = DEFAULT_LAYER
            chosen_by = "tinyllm"
        n = requested_threads()
        if n is None:
            n = blas_threads() or numba.config.NUMBA_NUM_THREADS
        _numba_state.update(layer_chosen_by=chosen_by,
                            threads=max(1, min(n, numba.config.NUMBA_NUM_THREADS)))  # fmt: skip
        return _numba_state


def kernel_threads() -> int:
    """How many threads tinyllm's parallel Numba kernels use (see the thread policy)."""
    return int(prepare_numba()["threads"])


_thread_local = threading.local()


def set_numba_threads_for_this_thread() -> None:
    """Give this thread's Numba launches ``kernel_threads()`` threads (once per thread;
    ``numba.set_num_threads`` is thread-local and costs ~1 us, so it is not done per call)."""
    if getattr(_thread_local, "done", False):
        return
    import numba

    n = kernel_threads()
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)
    _thread_local.done = True


def thread_report() -> dict:
    """What the process runs with: thread counts, Numba's layer, the tuning applied."""
    report: dict[str, Any] = {
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "blas_threads": blas_threads(),
        "tune_process": dict(applied),
        "env": {k: v for k, v in sorted(os.environ.items())
                if k.startswith(("OMP_", "MALLOC_", "NUMBA_", "OPENBLAS_", "MKL_", "TINYLLM_"))},
    }  # fmt: skip
    if "numba" in sys.modules:
        import numba

        try:
            report["numba_threading_layer"] = numba.threading_layer()
        except ValueError:
            report["numba_threading_layer"] = None  # no parallel region has run yet
        report["numba_config_layer"] = numba.config.THREADING_LAYER
        report["kernel_threads"] = _numba_state.get("threads")
        report["layer_chosen_by"] = _numba_state.get("layer_chosen_by")
    return report
