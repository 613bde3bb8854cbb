"""The CUDA tier run on the CPU: the .cu sources compiled by g++ against a shim that runs
each block as real threads (barriers, shared memory; cuda_cpu_shim.h), launched by the
same Python bodies that launch them through CuPy on a GPU (with NumPy standing in for
CuPy). Checks the kernels' indexing, reductions, tiling and masks against the reference
where no GPU exists. Not a substitute for the GPU run (test_kernels_cuda.py): it cannot
see races the barrier model hides, NVRTC differences or launch limits.
"""

import ctypes
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinyllm.kernels as K
from tinyllm.kernels import adamw, attention, cuda_loader, glu, norms, rope, softmax

GXX = shutil.which("g++")
pytestmark = pytest.mark.skipif(GXX is None, reason="g++ not found: cannot emulate CUDA on CPU")

HERE = Path(__file__).resolve().parent
_C_TO_NUMPY = {"float": np.float32, "double": np.float64, "i64": np.int64, "bool": np.bool_}
_SCALARS = {
    np.int32: ("int", ctypes.c_int32),
    np.int64: ("i64", ctypes.c_int64),
    np.float32: ("float", ctypes.c_float),
    np.float64: ("double", ctypes.c_double),
}


class Emulator:
    """The compiled sources; ``function(source, kernel, dtype)`` mimics cuda_loader's."""

    def __init__(self, lib, signatures):
        self.lib = lib
        self.signatures = signatures  # entry name -> [C parameter types]
        self.launches = []

    def function(self, source, kernel, dtype):
        name = f"{kernel}_{cuda_loader.dtype_suffix(dtype)}"
        types = self.signatures[name]
        entry = getattr(self.lib, "emu_" + name)

        def launch(grid, block, args, shared_mem=0):
            assert len(args) == len(types), (name, len(args), types)
            keep, pointers = [], []
            for arg, ctype in zip(args, types):
                if isinstance(arg, np.ndarray):
                    assert ctype.endswith("*"), (name, ctype)
                    base = ctype.replace("const", "").replace("*", "").strip()
                    assert arg.dtype == _C_TO_NUMPY[base], (name, ctype, arg.dtype)
                    assert arg.flags.c_contiguous, (name, ctype)
                    value = ctypes.c_void_p(arg.ctypes.data)
                else:
                    want, ctor = _SCALARS[type(arg)]
                    assert ctype == want, (name, ctype, type(arg))
                    value = ctor(arg)
                keep.append(value)
                pointers.append(ctypes.cast(ctypes.pointer(value), ctypes.c_void_p))
            grid = tuple(grid) + (1,) * (2 - len(grid))
            block = tuple(block) + (1,) * (2 - len(block))
            array = (ctypes.c_void_p * len(pointers))(*pointers)
            entry(*grid, *block, ctypes.c_size_t(shared_mem), array)
            self.launches.append(name)

        return launch


def _build(tmp: Path) -> Emulator:
    parts = ['#include "cuda_cpu_shim.h"']
    for source in cuda_loader.CUDA_SOURCES:
        text = cuda_loader.source_path(source).read_text()
        text = text.replace(
            "extern __shared__ __align__(16) unsigned char smem_raw[];",
            "unsigned char* smem_raw = emu_dynamic_shared();",
        )
        assert "extern __shared__" not in text, f"{source}: a dynamic shared array the shim misses"
        parts.append(f"// ---- {source}\n{text}")
    unit = tmp / "kernels_emulated.cpp"
    unit.write_text("\n".join(parts))
    flags = ["-std=c++20", f"-I{cuda_loader.KERNEL_DIR}", f"-I{HERE}"]
    expanded = subprocess.run(
        [GXX, "-E", "-P", *flags, str(unit)], capture_output=True, text=True, check=True
    ).stdout
    signatures = {}
    for name, params in re.findall(r'extern "C"\s+void\s+(\w+_f(?:32|64))\s*\(([^)]*)\)', expanded):
        signatures[name] = [" ".join(p.split()[:-1]) for p in params.split(",")]
    launchers = []
    for name, types in signatures.items():
        call = ", ".join(f"*({t}*)args[{i}]" for i, t in enumerate(types))
        launchers.append(
            f'extern "C" void emu_{name}(unsigned gx, unsigned gy, unsigned bx, unsigned by, '
            f"size_t smem, void** args) {{ emu_launch(dim3(gx, gy), dim3(bx, by), smem, "
            f"[&] {{ {name}({call}); }}); }}"
        )
    unit.write_text(unit.read_text() + "\n" + "\n".join(launchers) + "\n")
    lib_path = tmp / "kernels_emulated.so"
    result = subprocess.run(
        [GXX, "-O1", "-shared", "-fPIC", "-pthread", *flags, str(unit), "-o", str(lib_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lib = ctypes.CDLL(str(lib_path))
    for name in signatures:
        getattr(lib, "emu_" + name).restype = None
    return Emulator(lib, signatures)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("cuda_emulation"))


@pytest.fixture
def cuda_on_cpu(emulator, monkeypatch):
    """NumPy stands in for CuPy; the modules' ``function`` launches emulated kernels."""
    monkeypatch.setitem(sys.modules, "cupy", np)
    for module in (softmax, norms, rope, glu, adamw, attention):
        monkeypatch.setattr(module, "function", emulator.function)
    emulator.launches.clear()
    return emulator


DTYPES = [np.float64, np.float32]
TOL = {np.float64: 1e-12, np.float32: 2e-5}


def close(ref, got, dtype, scale=1.0):
    if isinstance(ref, tuple):
        for r, g in zip(ref, got):
            close(r, g, dtype, scale)
        return
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(finite, np.isfinite(got))
    tol = TOL[dtype] * scale
    np.testing.assert_allclose(got[finite], ref[finite], rtol=tol, atol=tol)


def ref(fn, *args, **kwargs):
    with K.use("reference"):
        return fn(*args, **kwargs)


def data(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_emulated_softmax_and_cross_entropy(cuda_on_cpu, dtype):
    rng = np.random.default_rng(0)
    x, dy = data(rng, (5, 300), dtype, 3), data(rng, (5, 300), dtype)
    for log_out, fwd, bwd in [
        (False, K.softmax_forward, K.softmax_backward),
        (True, K.log_softmax_forward, K.log_softmax_backward),
    ]:
        y = softmax._cuda_forward(x, log_out, 1.0, 0)
        close(ref(fwd, x), y, dtype)
        close(ref(bwd, dy, y), softmax._cuda_backward(dy, y, log_out, 1.0), dtype)
    # attention's options: scale, and causal rows (5 rows of one [Tq=5, Tk=300] matrix)
    y = softmax._cuda_forward(x, False, 0.3, 5)
    close(ref(K.softmax_forward, x, scale=0.3, causal=True), y, dtype)
    close(
        ref(K.softmax_backward, dy, y, scale=0.3), softmax._cuda_backward(dy, y, False, 0.3), dtype
    )
    t = rng.integers(0, 300, 5)
    t[2] = -100
    dloss = data(rng, 5, dtype)
    for s in (0.0, 0.1):
        want = ref(K.cross_entropy_forward, x, t, label_smoothing=s)
        got = softmax._cuda_ce_forward(x, t, -100, s)
        close(want, got, dtype)
        close(
            ref(K.cross_entropy_backward, dloss, x, t, want[1], label_smoothing=s),
            softmax._cuda_ce_backward(dloss, x, t, got[1], -100, s),
            dtype,
        )
    assert "cross_entropy_backward_" + cuda_loader.dtype_suffix(dtype) in cuda_on_cpu.launches


@pytest.mark.parametrize("dtype", DTYPES)
def test_emulated_norms(cuda_on_cpu, dtype):
    rng = np.random.default_rng(1)
    R, C = 11, 70  # C not a multiple of 32: partial column blocks in the param-grad kernel
    x, r, dy, ds = (data(rng, (R, C), dtype) for _ in range(4))
    w, b = data(rng, C, dtype), data(rng, C, dtype)
    for center in (True, False):
        bias = b if center else None
        y, mean, rstd, summed = norms._cuda_forward(x, r, w, bias, 1e-5, center)
        want = norms._reference_forward(x, r, w, bias, 1e-5, center)
        close(tuple(a for a in want), (y, mean, rstd, summed), dtype)
        got = norms._cuda_backward(dy, summed, mean, rstd, w, ds, center)
        close(norms._reference_backward(dy, summed, mean, rstd, w, ds, center), got, dtype, 10)
        y2, *_ = norms._cuda_forward(x, None, None, None, 1e-5, center)
        close(norms._reference_forward(x, None, None, None, 1e-5, center)[0], y2, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_emulated_rope_glu_adamw(cuda_on_cpu, dtype):
    rng = np.random.default_rng(2)
    x = data(rng, (6, 10), dtype)  # 3 sequences of T = 2 rows
    angles = rng.random((2, 5)) * 6
    cos, sin = np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)
    for inter in (False, True):
        for sign in (1.0, -1.0):
            close(
                rope._reference(x, cos, sin, sign, inter),
                rope._cuda_body(x, cos, sin, sign, inter),
                dtype,
            )
    g = data(rng, (7, 2 * 37), dtype, 3)
    dout = data(rng, (7, 37), dtype)
    for act in ("silu", "gelu_tanh", "gelu"):
        close(glu._reference_forward(g, act), glu._cuda_forward(g, act), dtype, 10)
        close(glu._reference_backward(dout, g, act), glu._cuda_backward(dout, g, act), dtype, 10)
    states = []
    for body in (adamw._reference, adamw._cuda_body):
        p = np.linspace(-1, 1, 300).astype(dtype).reshape(20, 15).T  # non-contiguous
        m, v = np.zeros((15, 20), dtype), np.zeros((15, 20), dtype)
        for step in (1, 2, 3):
            grad = np.cos(np.arange(300) * step).astype(dtype).reshape(15, 20)
            body(p, grad, m, v, adamw._scalars(dtype, step, 1e-2, 0.9, 0.999, 1e-8, 0.1))
        states.append((p, m, v))
    close(states[0], states[1], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
def test_emulated_flash_attention(cuda_on_cpu, dtype, causal):
    rng = np.random.default_rng(3)
    B, H, Hkv, Tq, Tk, D = 2, 2, 1, 130, 75, 8  # 3 query blocks, 2 key blocks, GQA
    q, do = data(rng, (B, H, Tq, D), dtype), data(rng, (B, H, Tq, D), dtype)
    k, v = data(rng, (B, Hkv, Tk, D), dtype), data(rng, (B, Hkv, Tk, D), dtype)
    keep = rng.random((B, Tk)) > 0.3
    keep[1, :] = False
    scale = 1 / np.sqrt(D)
    for mask in (None, keep):
        want = attention._naive_forward(q, k, v, causal, mask, scale)
        got = attention._cuda_forward(q, k, v, causal, mask, scale, 64, 64)
        close(want, got, dtype, 10)
        grads = attention._cuda_backward(do, q, k, v, got[0], got[1], causal, mask, scale, 64, 64)
        close(attention._naive_backward(do, q, k, v, *want, causal, mask, scale), grads, dtype, 100)
