"""A strict CuPy stand-in for tests on machines without a GPU.

``install()`` puts a module object in ``sys.modules["cupy"]`` (with ``cupy.cuda``,
``cupy.random``, ``cupyx``, ``cupyx.scipy.special``) whose arrays are not NumPy arrays,
whose functions have only CuPy's names and signatures, whose raw kernels run the ``.cu``
sources on the CPU through the shim after the launch checks a GPU makes, and which counts
every host sync and transfer with its source line (``COUNTERS``). ``uninstall()`` restores
what was there and resets tinyllm's cached device detection and compiled modules.

    from cupy_standin import COUNTERS, install, uninstall
    install()
    x = tinyllm.randn(3, device="cuda")      # a stand-in device array
    COUNTERS.reset(); x.sum().item(); COUNTERS.n_syncs  # -> 1
"""

from __future__ import annotations

import sys
import types

import numpy as np

from . import core, cuda, cupyx, module, random
from .core import IMPLICIT, ndarray
from .counters import COUNTERS, FAIL, Counters

__all__ = ["COUNTERS", "FAIL", "IMPLICIT", "Counters", "build", "fixture", "install",
           "installed", "ndarray", "needs_compiler", "uninstall"]  # fmt: skip

# NumPy names CuPy re-exports as they are (dtypes, scalar types, constants, dtype helpers)
_NUMPY_NAMES = (
    "bool_ int8 int16 int32 int64 uint8 uint16 uint32 uint64 float16 float32 float64 "
    "complex64 complex128 intp uintp byte ubyte short ushort intc uintc longlong ulonglong "
    "half single double longdouble csingle cdouble generic number integer signedinteger "
    "unsignedinteger inexact floating complexfloating dtype iinfo finfo inf nan pi e newaxis "
    "euler_gamma"
).split()
_MODULES = ("cupy", "cupy.cuda", "cupy.cuda.runtime", "cupy.random", "cupyx", "cupyx.scipy",
            "cupyx.scipy.special")  # fmt: skip
_saved: dict[str, object] = {}


def build() -> types.ModuleType:
    """A fresh ``cupy`` module object."""
    cp = types.ModuleType("cupy")
    cp.__doc__ = "CuPy stand-in (tests/cupy_standin): NumPy underneath, CuPy's rules on top"
    cp.__version__ = "14.0.0+standin"
    cp.__path__ = []  # a package, so that "import cupy.cuda" finds the submodules
    for name in _NUMPY_NAMES:
        setattr(cp, name, getattr(np, name))
    for name, fn in module.FUNCTIONS.items():
        setattr(cp, name, fn)
    for name, uf in module.UFUNCS.items():
        setattr(cp, name, uf)
    cp.ufunc = module.ufunc
    cp.ndarray = core.ndarray
    cp.asnumpy = module.asnumpy
    cp.get_array_module = module.get_array_module
    cp.is_available = cuda.is_available
    cp.RawModule = cuda.RawModule
    cp.RawKernel = cuda.RawKernel
    cp.get_default_memory_pool = cuda.get_default_memory_pool
    cp.get_default_pinned_memory_pool = cuda.get_default_pinned_memory_pool

    cuda_ns = types.ModuleType("cupy.cuda")
    cuda_ns.__path__ = []
    for name in ("Device", "Stream", "MemoryPool", "get_current_stream", "runtime", "nvrtc",
                 "get_device_id", "synchronize", "is_available", "CUDARuntimeError"):  # fmt: skip
        if hasattr(cuda, name):
            setattr(cuda_ns, name, getattr(cuda, name))
    cuda_ns.get_device_id = lambda: 0
    cp.cuda = cuda_ns

    random_ns = types.ModuleType("cupy.random")
    for name in ("Generator", "BitGenerator", "XORWOW", "MRG32k3a", "Philox4x3210",
                 "default_rng", "RandomState", "get_random_state", "seed", "rand", "randn",
                 "random", "random_sample", "standard_normal", "normal", "uniform", "randint",
                 "permutation", "choice", "shuffle"):  # fmt: skip
        setattr(random_ns, name, getattr(random, name))
    cp.random = random_ns
    return cp


def installed() -> bool:
    """True while the stand-in is ``sys.modules["cupy"]``."""
    return getattr(sys.modules.get("cupy"), "__version__", "").endswith("+standin")


def _reset_tinyllm() -> None:
    """Forget tinyllm's cached CuPy detection, compiled modules and device generator."""
    from tinyllm import backend
    from tinyllm.kernels import adamw, cuda_loader

    backend._reset_cuda_detection()
    cuda_loader.module.cache_clear()
    cuda_loader.function.cache_clear()
    adamw._tables.clear()


def install() -> types.ModuleType:
    """Install the stand-in as ``cupy`` (and ``cupyx``); returns the module."""
    if installed():
        return sys.modules["cupy"]
    cp = build()
    cx = cupyx.build()
    objects = {
        "cupy": cp,
        "cupy.cuda": cp.cuda,
        "cupy.cuda.runtime": cp.cuda.runtime,
        "cupy.random": cp.random,
        "cupyx": cx,
        "cupyx.scipy": cx.scipy,
        "cupyx.scipy.special": cx.scipy.special,
    }
    for name in _MODULES:
        _saved[name] = sys.modules.get(name)
        sys.modules[name] = objects[name]
    FAIL.clear()
    COUNTERS.reset()
    _reset_tinyllm()
    return cp


def uninstall() -> None:
    """Restore the modules that ``install`` replaced."""
    if not installed():
        return
    for name in _MODULES:
        previous = _saved.pop(name, None)
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous
    FAIL.clear()
    _reset_tinyllm()


def needs_compiler():
    """The pytest mark that skips where the raw kernels cannot run (no C++ compiler)."""
    import pytest

    from .emulator import CXX

    return pytest.mark.skipif(CXX is None, reason="no C++ compiler")


def fixture(scope: str = "module", autouse: bool = True):
    """A pytest fixture named ``standin``: the stand-in as ``cupy`` for its scope, removed
    after it. In a test module: ``standin = cupy_standin.fixture()``."""
    import pytest

    @pytest.fixture(scope=scope, autouse=autouse, name="standin")
    def standin():
        cp = install()
        yield cp
        uninstall()

    return standin
