"""Which kernel tier runs an op: the choice, the overrides, and the record of what ran.

Every public kernel has three bodies (see the package docstring): ``reference`` (array ops on
``xp``), ``numba`` (a CPU kernel) and ``cuda`` (a CuPy ``RawModule`` kernel). The automatic
choice depends on the device of the arrays:

    CuPy array   -> "cuda" when the op has a CUDA body for the dtype, else "reference"
    NumPy array  -> "numba" when Numba is installed and the op has a Numba body for the
                    dtype (float32, float64), else "reference"

Two overrides force a tier, for study and for debugging; both are read at call time:

- the environment variable ``TINYLLM_KERNELS=reference|numba|cuda|auto``;
- the thread-local context manager ``tinyllm.kernels.use("reference")`` (wins over the
  variable; nests).

A forced tier that cannot run on the arrays' device (``numba`` on a CuPy array, ``cuda`` on
a NumPy array) or has no body for the dtype gives the automatic choice for that device;
``reference`` always runs. ``last_tier(op)`` and ``tier_counts()`` say what actually ran, so
that a test can prove that a kernel, not a silent fallback, produced its result.

Which bodies each kernel has is declared once, where its bodies dict is built
(``declare(bodies, "softmax_forward", ...)``), and read back with ``kernel_tiers(op)``: the
op registry and ``tinyllm ops`` report an op's tiers from the kernels it names, so the
listing cannot drift from what ``run`` can choose.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import threading
import types
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

import numpy as np

__all__ = [
    "ENV_VAR",
    "TIERS",
    "KERNEL_DTYPES",
    "declare",
    "declared_kernels",
    "kernel_tiers",
    "last_tier",
    "numba_available",
    "numba_for_work",
    "requested_tier",
    "reset_counts",
    "run",
    "select_tier",
    "serial_twin",
    "tier_counts",
    "use",
]

ENV_VAR = "TINYLLM_KERNELS"
TIERS = ("reference", "numba", "cuda")
_CHOICES = TIERS + ("auto",)
# dtypes the numba and cuda bodies are compiled for; anything else runs the reference
KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class _Local(threading.local):
    stack: list | None = None  # the use(...) stack of this thread, made on first use


_local = _Local()
_declared: dict[str, tuple[str, ...]] = {}  # kernel op name -> the tiers it has bodies for
_last: dict[str, str] = {}
_counts: Counter = Counter()
_lock = threading.Lock()

# os.environ keeps its entries in a plain dict (CPython's ``_data``, keyed by encoded names,
# updated by every os.environ write): one lookup there costs ~0.05 us against ~0.9 us for
# os.environ.get, which matters at a few kernel calls per tiny op. Anything else: .get.
_environ = getattr(os.environ, "_data", None)
_ENV_KEY = os.environ.encodekey(ENV_VAR) if _environ is not None else ENV_VAR


def _check_choice(tier: str, where: str) -> str:
    if tier not in _CHOICES:
        raise ValueError(f"{where}: kernel tier must be one of {_CHOICES}, got {tier!r}")
    return tier


def requested_tier() -> str:
    """The forced tier: the innermost ``use(...)``, else ``$TINYLLM_KERNELS``, else "auto"."""
    stack = _local.stack
    if stack:
        return stack[-1]
    value = _environ.get(_ENV_KEY) if _environ is not None else os.environ.get(ENV_VAR)
    return _env_choice(value) if value else "auto"


@functools.lru_cache(maxsize=8)
def _env_choice(value: str | bytes) -> str:
    if isinstance(value, bytes):
        value = os.fsdecode(value)
    return _check_choice(value.strip().lower() or "auto", f"${ENV_VAR}")


@contextlib.contextmanager
def use(tier: str) -> Iterator[None]:
    """Force ``tier`` ("reference", "numba", "cuda" or "auto") for kernel calls in this thread.

    >>> import numpy as np, tinyllm.kernels as K
    >>> with K.use("reference"):
    ...     _ = K.softmax_forward(np.zeros((2, 3)))
    >>> K.last_tier("softmax_forward")
    'reference'
    """
    _check_choice(tier, "kernels.use")
    stack = _local.stack
    if stack is None:
        stack = _local.stack = []
    stack.append(tier)
    try:
        yield
    finally:
        stack.pop()


@functools.lru_cache(maxsize=1)
def numba_available() -> bool:
    """True when Numba is installed (found without importing it)."""
    return importlib.util.find_spec("numba") is not None


# Below this much work (elements touched), a Numba kernel runs as its serial twin. Waking the
# kernel threads costs ~50 us (softmax of 64 x 96: 61 us on 2 threads, 13 us on one), and
# inside a training step a parallel kernel also competes with the BLAS pool between GEMMs and
# with whatever else runs on the machine. Measured on 2 cores, alternating processes: quiet,
# thresholds of 64 k, 1 M and 4 M elements gave the same step times within noise (+-3 %) for
# the default Llama and GPT steps and for T 512 and 1,024 (one series had the default Llama
# step at 155-159 ms all serial against 172-174 ms parallel from 64 k); with one busy process
# on the machine, kernels parallel from 64 k stalled the step for seconds, and the step with
# serial kernels slowed down less than PyTorch's (README, "Threads and load"). Kernels of 4 M
# elements and more (long-context attention, big batches) keep the threads. Results do not
# depend on the choice.
SERIAL_BELOW = 1 << 22

_twins: dict[Any, Any] = {}
_NOT_COPIED = ("parallel", "nopython")  # nopython is njit's own and warns when passed


def serial_twin(kernel: Any) -> Any:
    """``kernel`` (a ``@njit(parallel=True)`` dispatcher) compiled without ``parallel``.

    The twin runs the same Python body, ``prange`` as a plain ``range``, in the calling
    thread, and is cached on disk like the kernels. Its function is renamed
    ``<name>_serial``: Numba's on-disk cache names its files by qualified name and does not
    key them by the ``parallel`` flag, so a shared name would mix up the two compilations.
    """
    twin = _twins.get(kernel)
    if twin is None:
        from numba import njit

        body = kernel.py_func
        func = types.FunctionType(
            body.__code__, body.__globals__, f"{body.__name__}_serial", body.__defaults__,
            body.__closure__,
        )  # fmt: skip
        func.__qualname__ = f"{body.__qualname__}_serial"
        func.__module__, func.__doc__ = body.__module__, body.__doc__
        options = {k: v for k, v in kernel.targetoptions.items() if k not in _NOT_COPIED}
        twin = _twins[kernel] = njit(cache=True, **options)(func)
    return twin


def numba_for_work(kernel: Any, work: int) -> Any:
    """The Numba kernel to launch for ``work`` elements: ``kernel``, or its serial twin."""
    if work < SERIAL_BELOW:
        return serial_twin(kernel)
    launcher = _launchers.get(kernel)  # thread policy (issue 15), see parallel_launcher
    return launcher if launcher is not None else parallel_launcher(kernel)


# ---- thread policy (issue 15: tinyllm/runtime.py has the policy; this is its hook) ----
_launchers: dict[Any, Any] = {}
_parallel_lock = threading.Lock()


def parallel_launcher(kernel: Any) -> Any:
    """A callable that launches the parallel ``kernel`` under tinyllm's thread policy.

    At the first parallel launch of the process, ``runtime.prepare_numba()`` picks Numba's
    threading layer (workqueue unless the user chose one) and the kernel thread count
    (``TINYLLM_NUM_THREADS``, else the BLAS pool's size); a count of 1 means the serial
    twin always runs. One thread at a time runs a parallel kernel (workqueue is not
    threadsafe); a concurrent call from another thread runs the serial twin instead.
    """
    from tinyllm import runtime

    twin = serial_twin(kernel)
    if runtime.kernel_threads() == 1:
        _launchers[kernel] = twin
        return twin
    set_threads = runtime.set_numba_threads_for_this_thread

    def launch(*args: Any, **kwargs: Any) -> Any:
        if not _parallel_lock.acquire(blocking=False):
            return twin(*args, **kwargs)
        try:
            set_threads()
            return kernel(*args, **kwargs)
        finally:
            _parallel_lock.release()

    _launchers[kernel] = launch
    return launch


# ---- end of thread policy ----


def select_tier(
    op: str,
    xp: Any,
    dtype: Any = None,
    tiers: Collection[str] = TIERS,
) -> str:
    """The tier that will run ``op`` for arrays of module ``xp`` and ``dtype``.

    ``tiers`` holds the names of the bodies the op has (an op without a CUDA source passes
    ``("reference", "numba")``; ``run`` passes its dict of bodies). ``dtype=None`` means
    "any dtype the kernels accept".
    """
    forced = requested_tier()
    if forced == "reference":
        return "reference"
    dtype_ok = dtype is None or dtype in KERNEL_DTYPES
    if xp is not np:  # a CuPy array: the GPU
        return "cuda" if "cuda" in tiers and dtype_ok else "reference"
    if "numba" in tiers and dtype_ok and numba_available():
        return "numba"
    return "reference"


def declare(bodies: Mapping[str, Callable], *ops: str) -> Mapping[str, Callable]:
    """Declare that kernels ``ops`` run through ``bodies`` (tier -> body); return ``bodies``.

    Call it where the dict is built: ``_FORWARD = declare(with_cuda({...}, cu), "op")``.
    """
    unknown = set(bodies) - set(TIERS)
    if unknown or "reference" not in bodies:
        raise ValueError(
            f"kernels.declare({ops}): bodies must include 'reference' and name only tiers "
            f"{TIERS}, got {tuple(bodies)}"
        )
    for op in ops:
        _declared[op] = tuple(t for t in TIERS if t in bodies)
    return bodies


def kernel_tiers(op: str) -> tuple[str, ...]:
    """The tiers kernel ``op`` has bodies for, in ``TIERS`` order (always "reference" first).

    A body can exist and still not run here (no Numba installed, no GPU): ``select_tier``
    says what would run for given arrays.

    >>> import tinyllm.kernels as K
    >>> K.kernel_tiers("layer_norm_forward")[:2]
    ('reference', 'numba')
    """
    tiers = _declared.get(op)
    if tiers is None:
        raise KeyError(
            f"kernel_tiers: no kernel named {op!r} is declared; declared: {sorted(_declared)}"
        )
    return tiers


def declared_kernels() -> dict[str, tuple[str, ...]]:
    """Every declared kernel op name with its tiers."""
    return dict(_declared)


def record(op: str, tier: str) -> None:
    """Note that ``tier`` ran ``op`` (called by ``run`` after the body returns)."""
    with _lock:
        _last[op] = tier
        _counts[(op, tier)] += 1


def last_tier(op: str) -> str | None:
    """The tier that ran the most recent call of ``op`` (None if never called)."""
    return _last.get(op)


def tier_counts() -> dict[tuple[str, str], int]:
    """A copy of the counts of calls per (op, tier) since the last ``reset_counts()``."""
    with _lock:
        return dict(_counts)


def reset_counts() -> None:
    """Forget the call counts and last tiers."""
    with _lock:
        _counts.clear()
        _last.clear()


def run(op: str, xp: Any, dtype: Any, bodies: Mapping[str, Callable], *args, **kwargs):
    """Call the body of ``op`` for the selected tier, record the tier, return its result."""
    tier = select_tier(op, xp, dtype, bodies)
    result = bodies[tier](*args, **kwargs)
    record(op, tier)
    return result
