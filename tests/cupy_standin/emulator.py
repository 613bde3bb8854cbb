"""CUDA sources run on the CPU: one ``.cu`` text compiled with the system C++ compiler against
``tests/kernels/cuda_cpu_shim.h`` (each block as real threads: barriers, shared memory).

Shared by the CuPy stand-in's ``RawModule`` and the emulated-kernel tests. ``compile_source``
returns an ``EmulatedModule`` whose entries know their ``extern "C"`` parameter types (parsed
from the preprocessed source), so a launch can be checked the way a GPU would fail on it.

Speed: the shim runs a block of n threads as n std::threads (~80 us each here). By default
the threads of a block run as fibers on one OS thread instead (made once with ``ucontext``,
switched with ``_setjmp``/``_longjmp``: no system call; ``__syncthreads`` returns to a
scheduler that resumes every live thread of the block). Set
``TINYLLM_EMULATE_THREADS=1`` for the shim's real threads (slower, the same results).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SHIM_DIR = Path(__file__).resolve().parents[1] / "kernels"  # tests/kernels/cuda_cpu_shim.h
CXX = shutil.which("g++") or shutil.which("c++")
USE_THREADS = os.environ.get("TINYLLM_EMULATE_THREADS", "") == "1"

# C parameter type -> the NumPy dtype of a pointer's elements, or of a by-value scalar
C_TYPES = {
    "float": np.dtype(np.float32),
    "double": np.dtype(np.float64),
    "i64": np.dtype(np.int64),
    "long long": np.dtype(np.int64),
    "int": np.dtype(np.int32),
    "unsigned": np.dtype(np.uint32),
    "unsigned int": np.dtype(np.uint32),
    "bool": np.dtype(np.bool_),
    "unsigned char": np.dtype(np.uint8),
}
_CTYPES = {
    np.dtype(np.float32): ctypes.c_float,
    np.dtype(np.float64): ctypes.c_double,
    np.dtype(np.int64): ctypes.c_int64,
    np.dtype(np.int32): ctypes.c_int32,
    np.dtype(np.uint32): ctypes.c_uint32,
    np.dtype(np.bool_): ctypes.c_bool,
    np.dtype(np.uint8): ctypes.c_uint8,
}

_PRELUDE = """#include "cuda_cpu_shim.h"
#include <setjmp.h>
#include <ucontext.h>
#include <functional>
#include <memory>
// Fibers: the threads of a block run as coroutines on one OS thread. __syncthreads jumps
// back to the scheduler, which resumes every live thread of the block in turn (a thread
// that returned leaves the barrier, as in the shim). A fiber is made once (makecontext) and
// then switched with _setjmp/_longjmp, which make no system call. emu_use_threads selects
// the shim's emu_launch (one std::thread per GPU thread) instead.
inline bool emu_use_threads = false;
struct EmuFiber {
    std::unique_ptr<char[]> stack;
    ucontext_t context;
    jmp_buf env;
    bool started = false;
    bool done = false;
};
inline std::vector<std::unique_ptr<EmuFiber>> emu_fibers;
inline jmp_buf emu_scheduler;
inline ucontext_t emu_scheduler_context;
inline unsigned emu_fiber_current = 0;
inline std::function<void()>* emu_fiber_kernel = nullptr;
constexpr size_t EMU_FIBER_STACK = 1 << 17;
inline void emu_fiber_yield() {
    EmuFiber& f = *emu_fibers[emu_fiber_current];
    if (!_setjmp(f.env)) _longjmp(emu_scheduler, 1);
}
inline void emu_syncthreads_hook() {
    if (emu_use_threads) { __syncthreads(); return; }
    emu_fiber_yield();
}
#define __syncthreads emu_syncthreads_hook
inline void emu_fiber_loop() {
    for (;;) {  // one kernel body per block, then park until the next block
        (*emu_fiber_kernel)();
        emu_fibers[emu_fiber_current]->done = true;
        emu_fiber_yield();
    }
}
template <class Kernel>
void emu_launch_fibers(dim3 grid, dim3 block, size_t shared_bytes, Kernel kernel) {
    if (emu_use_threads) { emu_launch(grid, block, shared_bytes, kernel); return; }
    gridDim = grid;
    blockDim = block;
    emu_shared_storage.assign(shared_bytes + 64, 0xAB);  // garbage, as on a GPU
    const unsigned n = block.x * block.y * block.z;
    while (emu_fibers.size() < n) {
        auto f = std::make_unique<EmuFiber>();
        f->stack.reset(new char[EMU_FIBER_STACK]);
        getcontext(&f->context);
        f->context.uc_stack.ss_sp = f->stack.get();
        f->context.uc_stack.ss_size = EMU_FIBER_STACK;
        f->context.uc_link = nullptr;
        makecontext(&f->context, emu_fiber_loop, 0);
        emu_fibers.push_back(std::move(f));
    }
    std::function<void()> body = kernel;
    emu_fiber_kernel = &body;
    for (unsigned gz = 0; gz < grid.z; ++gz)
        for (unsigned gy = 0; gy < grid.y; ++gy)
            for (unsigned gx = 0; gx < grid.x; ++gx) {
                blockIdx = {gx, gy, gz};
                for (unsigned i = 0; i < n; ++i) emu_fibers[i]->done = false;
                bool alive = true;
                while (alive) {  // one round = every live thread up to its next barrier
                    alive = false;
                    for (unsigned i = 0; i < n; ++i) {
                        EmuFiber& f = *emu_fibers[i];
                        if (f.done) continue;
                        emu_fiber_current = i;
                        threadIdx = {i % block.x, (i / block.x) % block.y, i / (block.x * block.y)};
                        if (!_setjmp(emu_scheduler)) {
                            if (!f.started) {
                                f.started = true;
                                swapcontext(&emu_scheduler_context, &f.context);
                            } else {
                                _longjmp(f.env, 1);
                            }
                        }
                        if (!f.done) alive = true;
                    }
                }
            }
}
"""


class EmulationError(RuntimeError):
    """A source that the CPU emulation cannot compile or run."""


@dataclass
class Entry:
    """One ``extern "C"`` kernel: its name, C parameter types and the compiled launcher."""

    name: str
    params: list[str]
    launcher: object
    module: EmulatedModule

    def param_kinds(self) -> list[tuple[bool, np.dtype]]:
        """(is_pointer, element or scalar dtype) per parameter."""
        kinds = []
        for ctype in self.params:
            pointer = "*" in ctype
            base = " ".join(ctype.replace("const", " ").replace("*", " ").split())
            base = base.replace("__restrict__", "").strip()
            if base not in C_TYPES:
                raise EmulationError(f"{self.name}: parameter type {ctype!r} is not emulated")
            kinds.append((pointer, C_TYPES[base]))
        return kinds

    def launch(self, grid: tuple, block: tuple, args: list, shared_mem: int) -> None:
        """Run the kernel; ``args`` are NumPy arrays (pointers) or NumPy scalars (by value)."""
        keep, pointers = [], []
        for arg, (pointer, dtype) in zip(args, self.param_kinds()):
            if pointer:
                value = ctypes.c_void_p(arg.ctypes.data)
            else:
                value = _CTYPES[dtype](arg.item())
            keep.append(value)
            pointers.append(ctypes.cast(ctypes.pointer(value), ctypes.c_void_p))
        array = (ctypes.c_void_p * max(1, len(pointers)))(*pointers)
        self.module.lib.emu_set_threads(ctypes.c_bool(USE_THREADS))
        self.launcher(*grid, *block, ctypes.c_size_t(shared_mem), array)


@dataclass
class EmulatedModule:
    """The compiled entries of one source."""

    lib: ctypes.CDLL
    entries: dict[str, Entry] = field(default_factory=dict)


def _expand(unit: Path, flags: list[str]) -> str:
    result = subprocess.run([CXX, "-E", "-P", *flags, str(unit)], capture_output=True, text=True)
    if result.returncode:
        raise EmulationError(f"preprocessing failed:\n{result.stderr[-4000:]}")
    return result.stdout


def _cache_dir() -> Path:
    path = Path(tempfile.gettempdir()) / f"tinyllm-cuda-emulation-{os.getuid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def compile_source(code: str, include_dirs: list[str]) -> EmulatedModule:
    """Compile one CUDA source for the CPU; the library is cached by the source's hash."""
    if CXX is None:
        raise EmulationError("no C++ compiler (g++) found: cannot emulate CUDA on the CPU")
    text = code.replace(
        "extern __shared__ __align__(16) unsigned char smem_raw[];",
        "unsigned char* smem_raw = emu_dynamic_shared();",
    )
    if "extern __shared__" in text:
        raise EmulationError("a dynamic shared array the shim does not map (extern __shared__)")
    flags = ["-std=c++20", "-U_FORTIFY_SOURCE", *(f"-I{d}" for d in include_dirs), f"-I{SHIM_DIR}"]
    shim = (SHIM_DIR / "cuda_cpu_shim.h").read_text()
    headers = "".join(
        p.read_text() for d in include_dirs for p in sorted(Path(d).glob("*.cuh")) if p.is_file()
    )
    key = hashlib.sha256("\0".join((_PRELUDE, shim, headers, text, *flags)).encode()).hexdigest()
    work = _cache_dir()
    unit = work / f"{key[:24]}.cpp"
    lib_path = work / f"{key[:24]}.so"
    unit.write_text(_PRELUDE + "\n" + text)
    expanded = _expand(unit, flags)
    signatures = {}
    for name, params in re.findall(r'extern "C"\s+void\s+(\w+)\s*\(([^)]*)\)', expanded):
        types = [" ".join(p.split()[:-1]) for p in params.split(",") if p.strip()]
        signatures[name] = types
    if not lib_path.exists():
        launchers = []
        for name, types in signatures.items():
            call = ", ".join(f"*({t}*)args[{i}]" for i, t in enumerate(types))
            launchers.append(
                f'extern "C" void emu_{name}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, '
                f"unsigned by, unsigned bz, size_t smem, void** args) {{ emu_launch_fibers("
                f"dim3(gx, gy, gz), dim3(bx, by, bz), smem, [&] {{ {name}({call}); }}); }}"
            )
        launchers.append('extern "C" void emu_set_threads(bool t) { emu_use_threads = t; }')
        unit.write_text(unit.read_text() + "\n" + "\n".join(launchers) + "\n")
        tmp = lib_path.with_suffix(f".{os.getpid()}.so")
        result = subprocess.run(
            [CXX, "-O1", "-shared", "-fPIC", "-pthread", *flags, str(unit), "-o", str(tmp)],
            capture_output=True,
            text=True,
        )
        if result.returncode:
            raise EmulationError(f"compilation failed:\n{result.stderr[-4000:]}")
        tmp.replace(lib_path)
    lib = ctypes.CDLL(str(lib_path))
    module = EmulatedModule(lib)
    for name, types in signatures.items():
        fn = getattr(lib, "emu_" + name)
        fn.restype = None
        module.entries[name] = Entry(name, types, fn, module)
    return module
