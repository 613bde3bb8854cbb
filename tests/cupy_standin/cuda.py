"""``cupy.cuda`` pieces tinyllm uses, and ``RawModule``/``RawKernel`` run by the CPU emulator.

A launch is checked as a GPU would refuse it: the argument count and each argument against
the ``extern "C"`` signature (device arrays for pointers, of the pointee's dtype and C
contiguous; NumPy scalars of the parameter's type by value; Python ints and floats become
int64 and float64 as in CuPy), block size <= 1024 threads (x, y <= 1024, z <= 64), grid
limits, dynamic shared memory <= 48 KB unless ``max_dynamic_shared_size_bytes`` opted in
(<= 227 KB). ``FAIL`` names a library to make unavailable (tests of the device check).
"""

from __future__ import annotations

import types

import numpy as np

from .core import ndarray
from .counters import COUNTERS, FAIL, fail_if_missing
from .emulator import EmulatedModule, compile_source

MAX_THREADS = 1024
STATIC_SHARED_LIMIT = 48 * 1024
OPT_IN_SHARED_LIMIT = 227 * 1024


class CUDARuntimeError(RuntimeError):
    """What ``cupy.cuda.runtime`` raises."""


_fail = fail_if_missing


def _driver() -> None:
    if "driver" in FAIL:
        raise CUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")


def _get_device_count() -> int:
    _driver()
    return 1


def _device_properties(device: int) -> dict:
    return {"name": b"CuPy stand-in (CPU)", "totalGlobalMem": 1 << 34, "major": 9, "minor": 0,
            "sharedMemPerBlock": STATIC_SHARED_LIMIT, "maxThreadsPerBlock": MAX_THREADS}  # fmt: skip


def _device_synchronize() -> None:
    COUNTERS.sync("synchronize")


runtime = types.SimpleNamespace(
    getDeviceCount=_get_device_count,
    getDeviceProperties=_device_properties,
    runtimeGetVersion=lambda: 13000,
    driverGetVersion=lambda: 13000,
    deviceSynchronize=_device_synchronize,
    getDevice=lambda: 0,
    CUDARuntimeError=CUDARuntimeError,
)


def _nvrtc_version() -> tuple[int, int]:
    _fail("nvrtc", "CuPy failed to load libnvrtc.so.13: OSError: libnvrtc.so.13: cannot open "
                   "shared object file: No such file or directory")  # fmt: skip
    return (13, 0)


nvrtc = types.SimpleNamespace(getVersion=_nvrtc_version)


class Device:
    """``cupy.cuda.Device``: device 0 only."""

    def __init__(self, device=None) -> None:
        _driver()
        self.id = 0 if device is None else int(device)
        if self.id != 0:
            raise CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")

    def synchronize(self) -> None:
        COUNTERS.sync("synchronize")

    def use(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    @property
    def compute_capability(self) -> str:
        return "90"

    def __repr__(self) -> str:
        return f"<CUDA Device {self.id}>"


class Stream:
    """A stream; work is synchronous in the stand-in, but ``synchronize`` counts."""

    null: Stream

    def __init__(self, null=False, non_blocking=False, ptds=False) -> None:
        self.ptr = 0

    def synchronize(self) -> None:
        COUNTERS.sync("synchronize")

    def use(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


Stream.null = Stream(null=True)


def get_current_stream() -> Stream:
    return Stream.null


class MemoryPool:
    def used_bytes(self) -> int:
        return 0

    def total_bytes(self) -> int:
        return 0

    def free_all_blocks(self) -> None:
        pass


_POOL = MemoryPool()


def get_default_memory_pool() -> MemoryPool:
    return _POOL


def get_default_pinned_memory_pool() -> MemoryPool:
    return _POOL


# ---------------------------------------------------------------- raw kernels

_PY_SCALARS = {bool: np.dtype(np.bool_), int: np.dtype(np.int64), float: np.dtype(np.float64)}


def _include_dirs(options: tuple) -> list[str]:
    dirs = []
    for i, opt in enumerate(options):
        if opt.startswith("-I") and len(opt) > 2:
            dirs.append(opt[2:])
        elif opt in ("-I", "--include-path") and i + 1 < len(options):
            dirs.append(options[i + 1])
        elif opt.startswith("--include-path="):
            dirs.append(opt.split("=", 1)[1])
    return dirs


class RawModule:
    """``cupy.RawModule(code=..., options=...)``: compiled at first ``get_function``."""

    def __init__(self, code=None, path=None, options=(), backend="nvrtc", translate_cucomplex=False,
                 *, enable_cooperative_groups=False, name_expressions=None, log_stream=None,
                 jitify=False) -> None:  # fmt: skip
        if (code is None) == (path is None):
            raise TypeError("RawModule: exactly one of code and path must be given")
        self.code = code if code is not None else open(path).read()
        self.options = tuple(options)
        self._module: EmulatedModule | None = None

    def _compiled(self) -> EmulatedModule:
        if self._module is None:
            _fail("nvrtc", "CuPy failed to load libnvrtc.so.13")
            self._module = compile_source(self.code, _include_dirs(self.options))
        return self._module

    def get_function(self, name: str) -> RawKernel:
        module = self._compiled()
        if name not in module.entries:
            raise RuntimeError(f"CUDA_ERROR_NOT_FOUND: named symbol not found ({name!r})")
        return RawKernel._bound(module, name)


class RawKernel:
    """``cupy.RawKernel(code, name)``, or a function of a ``RawModule``."""

    def __init__(self, code: str, name: str, options=(), backend="nvrtc",
                 translate_cucomplex=False, *, enable_cooperative_groups=False,
                 jitify=False) -> None:  # fmt: skip
        self.code, self.name, self.options = code, name, tuple(options)
        self._module: EmulatedModule | None = None
        self.max_dynamic_shared_size_bytes = 0

    @classmethod
    def _bound(cls, module: EmulatedModule, name: str) -> RawKernel:
        kernel = cls.__new__(cls)
        kernel.code, kernel.name, kernel.options = None, name, ()
        kernel._module = module
        kernel.max_dynamic_shared_size_bytes = 0
        return kernel

    def compile(self, log_stream=None) -> None:
        self._entry()

    def _entry(self):
        if self._module is None:
            _fail("nvrtc", "CuPy failed to load libnvrtc.so.13")
            self._module = compile_source(self.code, _include_dirs(self.options))
        if self.name not in self._module.entries:
            raise RuntimeError(f"CUDA_ERROR_NOT_FOUND: named symbol not found ({self.name!r})")
        return self._module.entries[self.name]

    def __call__(self, grid, block, args, *, shared_mem=0, enable_cooperative_groups=False) -> None:
        entry = self._entry()
        grid, block = _dims("grid", grid), _dims("block", block)
        where = f"cupy.RawKernel {self.name}"
        threads = block[0] * block[1] * block[2]
        if threads > MAX_THREADS or block[0] > 1024 or block[1] > 1024 or block[2] > 64:
            raise CUDARuntimeError(
                f"{where}: cudaErrorInvalidConfiguration: block {block} has {threads} threads "
                f"(at most {MAX_THREADS}; x, y <= 1024, z <= 64)"
            )
        if threads == 0 or 0 in grid:
            raise CUDARuntimeError(f"{where}: cudaErrorInvalidConfiguration: empty grid {grid}")
        if grid[0] >= 2**31 or grid[1] > 65535 or grid[2] > 65535:
            raise CUDARuntimeError(f"{where}: cudaErrorInvalidConfiguration: grid {grid}")
        limit = max(STATIC_SHARED_LIMIT, min(self.max_dynamic_shared_size_bytes,
                                             OPT_IN_SHARED_LIMIT))  # fmt: skip
        if shared_mem > limit:
            raise CUDARuntimeError(
                f"{where}: cudaErrorInvalidValue: {shared_mem} bytes of dynamic shared memory "
                f"(the limit is {limit}; set max_dynamic_shared_size_bytes to opt in, up to "
                f"{OPT_IN_SHARED_LIMIT})"
            )
        if not isinstance(args, tuple):
            raise TypeError(f"{where}: args must be a tuple, got {type(args).__name__}")
        kinds = entry.param_kinds()
        if len(args) != len(kinds):
            raise TypeError(
                f"{where}: {len(args)} arguments for {len(kinds)} parameters ({entry.params})"
            )
        host_args = []
        for k, (arg, (pointer, dtype), ctype) in enumerate(zip(args, kinds, entry.params)):
            label = f"{where}: argument {k} ({ctype})"
            if pointer:
                if not isinstance(arg, ndarray):
                    raise TypeError(f"{label}: expected a cupy.ndarray, got {type(arg)}")
                if arg.dtype != dtype:
                    raise TypeError(f"{label}: array of {arg.dtype}, the kernel reads {dtype}")
                if not arg._a.flags.c_contiguous:
                    raise ValueError(f"{label}: a non-contiguous array (the kernel indexes flat)")
                host_args.append(arg._a)
            else:
                if isinstance(arg, ndarray) or isinstance(arg, np.ndarray):
                    raise TypeError(f"{label}: an array where the kernel takes a scalar")
                got = _PY_SCALARS.get(type(arg)) or np.dtype(type(arg))
                if got != dtype:
                    raise TypeError(f"{label}: a {got} scalar, the kernel takes {dtype}")
                host_args.append(arg)
        COUNTERS.launches[self.name] += 1
        entry.launch(grid, block, host_args, int(shared_mem))


def _dims(what: str, value) -> tuple[int, int, int]:
    if isinstance(value, int):
        value = (value,)
    value = tuple(int(v) for v in value)
    if not 1 <= len(value) <= 3:
        raise ValueError(f"{what} must have 1 to 3 dimensions, got {value}")
    return value + (1,) * (3 - len(value))


def synchronize() -> None:
    COUNTERS.sync("synchronize")


def is_available() -> bool:
    try:
        return _get_device_count() > 0
    except CUDARuntimeError:
        return False


def emulated_loader_function(code: str, source: str, include_dirs: list[str]):
    """A stand-in for ``cuda_loader.function(source, kernel, dtype)`` that launches the kernels
    of the CUDA text ``code`` (the file ``source``, or a mutant of it) on the CPU emulator after
    the checks a GPU makes: a non-empty grid, at most ``MAX_THREADS`` threads a block, dynamic
    shared memory within ``STATIC_SHARED_LIMIT``, one argument per parameter, pointers as
    C-contiguous arrays of the parameter's dtype, scalars of its exact type. Its
    ``.launches`` lists the entry points launched, in order."""
    module = compile_source(code, include_dirs)
    launches: list[str] = []

    def function(name, kernel, dtype):
        assert name == source, (name, source)
        suffix = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}[np.dtype(dtype)]
        entry = module.entries[f"{kernel}_{suffix}"]

        def launch(grid, block, args, shared_mem=0):
            grid = tuple(grid) + (1,) * (3 - len(grid))
            block = tuple(block) + (1,) * (3 - len(block))
            assert min(grid) > 0, (entry.name, grid)
            assert 0 < block[0] * block[1] * block[2] <= MAX_THREADS, (entry.name, block)
            assert shared_mem <= STATIC_SHARED_LIMIT, (entry.name, shared_mem)
            kinds = entry.param_kinds()
            assert len(args) == len(kinds), (entry.name, len(args))
            for arg, (pointer, dt) in zip(args, kinds):
                if pointer:
                    assert isinstance(arg, np.ndarray) and arg.flags.c_contiguous, entry.name
                    assert arg.dtype == dt, (entry.name, arg.dtype, dt)
                else:
                    assert np.dtype(type(arg)) == dt, (entry.name, type(arg), dt)
            entry.launch(grid, block, list(args), int(shared_mem))
            launches.append(entry.name)

        return launch

    function.launches = launches
    return function
