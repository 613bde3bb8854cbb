"""The packed-weight matmul kernel: Numba vs its NumPy reference (and the path taken), the
CUDA source compiled with nvcc, and run on the CPU through the test shim."""

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import tinyllm.kernels as K
from tinyllm.kernels import cuda_loader, dispatch
from tinyllm.kernels import quant as KQ
from tinyllm.quant import nf4, schemes

HERE = Path(__file__).resolve().parent
SHIM = HERE.parent / "kernels" / "cuda_cpu_shim.h"


def operands(rng, bits, N, Kdim, g, dtype, table=None):
    codes = rng.integers(0, 2**bits, (N, Kdim)).astype(np.uint8)
    G = -(-Kdim // g)
    scales = rng.uniform(0.5, 1.5, (N, G)).astype(dtype)
    zeros = rng.integers(0, 2**bits, (N, G)).astype(dtype)
    if table is None:
        table = rng.standard_normal(2**bits).astype(dtype)
    return schemes.pack_codes(codes, bits), scales, zeros, table


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("R", [1, 5, 37])  # the fused GEMV path and the tiled BLAS path
def test_numba_matches_reference_and_ran(dtype, bits, R):
    rng = np.random.default_rng(bits * 100 + R)
    N, Kdim, g = 131, 77, 12  # odd sizes; groups do not divide K
    packed, scales, zeros, table = operands(rng, bits, N, Kdim, g, dtype)
    x = rng.standard_normal((2 * R, Kdim)).astype(dtype)[::2]  # non-contiguous
    with K.use("reference"):
        ref = KQ.dequant_matmul(x, packed, scales, zeros, table, bits, g)
    assert dispatch.last_tier("dequant_matmul") == "reference"
    got = KQ.dequant_matmul(x, packed, scales, zeros, table, bits, g)
    assert dispatch.last_tier("dequant_matmul") == "numba"
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * np.abs(ref).max())


def test_reference_equals_dense_matmul_of_dequantized_weight():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((20, 128)).astype(np.float32)
    x = rng.standard_normal((3, 128)).astype(np.float32)
    q = schemes.quantize_weight(W, 4, "group", 32, symmetric=False)
    table = np.arange(16, dtype=np.float32)
    y = KQ.dequant_matmul(x, q.qweight, q.scales, q.zeros.astype(np.float32), table, 4, 32)
    np.testing.assert_allclose(y, x @ q.dequantize().T, rtol=1e-5, atol=1e-5)
    n = nf4.quantize_nf4(W, 64, double_quant=True)
    s = n.block_scales().reshape(20, 2)
    y = KQ.dequant_matmul(x, n.packed.reshape(20, 64), s, None, nf4.NF4_LEVELS, 4, 64)
    np.testing.assert_allclose(y, x @ n.dequantize().T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bits,g,fast", [(4, 12, True), (4, 77, True), (4, 5, False),
                                         (8, 12, True), (8, 7, True), (2, 12, False)])  # fmt: skip
@pytest.mark.parametrize("R", [1, 3])
def test_byte_gemv_matches_reference(monkeypatch, dtype, bits, g, fast, R):
    # the shift-and-mask GEMV where it applies (4 or 8 bits, groups starting on a byte; g = K
    # is per-channel), the group-buffer kernel elsewhere; a random table (NF4/FP8-like)
    rng = np.random.default_rng(bits * 10 + g)
    N, Kdim = 33, 77  # odd K: the last 4-bit byte holds one code and a zero pad nibble
    packed, scales, zeros, table = operands(rng, bits, N, Kdim, g, dtype)
    x = rng.standard_normal((R, Kdim)).astype(dtype)
    calls = []
    real = KQ._byte_gemv
    monkeypatch.setattr(KQ, "_byte_gemv", lambda *a: calls.append(1) or real(*a))
    got = KQ.dequant_matmul(x, packed, scales, zeros, table, bits, g)
    assert dispatch.last_tier("dequant_matmul") == "numba" and bool(calls) == fast
    with K.use("reference"):
        ref = KQ.dequant_matmul(x, packed, scales, zeros, table, bits, g)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * np.abs(ref).max())


@pytest.mark.parametrize("bits", [3, 5, 7])
@pytest.mark.parametrize("R", [1, 20])
def test_odd_bit_widths_run_numba_and_equal_the_unpacked_codes(bits, R):
    # independent of both kernels: schemes.unpack_codes (np.unpackbits) and a dense matmul
    rng = np.random.default_rng(2 + bits)
    N, Kdim, g = 9, 19, 4  # rows of 19 codes end mid-byte for every odd width
    packed, scales, zeros, table = operands(rng, bits, N, Kdim, g, np.float64)
    x = rng.standard_normal((R, Kdim))
    y = KQ.dequant_matmul(x, packed, scales, zeros, table, bits, g)
    assert dispatch.last_tier("dequant_matmul") == "numba"
    codes = schemes.unpack_codes(packed, bits, Kdim)
    gi = np.arange(Kdim) // g
    w = (table[codes] - zeros[:, gi]) * scales[:, gi]
    np.testing.assert_allclose(y, x @ w.T, rtol=1e-12)


NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc not found: CUDA source not compile-checked")
def test_cuda_source_compiles_with_nvcc(tmp_path):
    src = cuda_loader.source_path("quant_matmul.cu")
    ptx = tmp_path / "quant.ptx"
    cmd = [NVCC, "-ptx", "-arch=sm_90", "-std=c++14", f"-I{cuda_loader.KERNEL_DIR}", str(src)]
    result = subprocess.run(cmd + ["-o", str(ptx)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = ptx.read_text()
    assert ".entry quant_matmul_f32" in text and ".entry quant_matmul_f64" in text


GXX = shutil.which("g++")


@pytest.mark.skipif(GXX is None or not SHIM.is_file(), reason="g++ or the CUDA CPU shim missing")
def test_cuda_kernel_emulated_on_cpu_matches_reference(tmp_path, monkeypatch):
    src = cuda_loader.source_path("quant_matmul.cu").read_text()
    launchers = []
    for S, T in (("f32", "float"), ("f64", "double")):
        params = (f"const {T}* x, const unsigned char* p, const {T}* s, const {T}* z, "
                  f"const {T}* t, {T}* y, int R, int N, int K, int rb, int bits, int g, int G")  # fmt: skip
        launchers.append(
            f'extern "C" void emu_{S}(unsigned gx, unsigned gy, unsigned bx, {params}) {{ '
            f"emu_launch(dim3(gx, gy), dim3(bx), 0, [&] {{ quant_matmul_{S}(x, p, s, z, t, y, "
            f"R, N, K, rb, bits, g, G); }}); }}"
        )
    unit = tmp_path / "quant_emulated.cpp"
    unit.write_text('#include "cuda_cpu_shim.h"\n' + src + "\n" + "\n".join(launchers) + "\n")
    lib_path = tmp_path / "quant_emulated.so"
    flags = ["-std=c++20", f"-I{cuda_loader.KERNEL_DIR}", f"-I{SHIM.parent}"]
    result = subprocess.run([GXX, "-O1", "-shared", "-fPIC", "-pthread", *flags, str(unit),
                             "-o", str(lib_path)], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lib = ctypes.CDLL(str(lib_path))
    launched = []

    def fake_function(source, kernel, dtype):
        suffix = cuda_loader.dtype_suffix(dtype)
        entry = getattr(lib, f"emu_{suffix}")

        def launch(grid, block, args):
            x, p, s, z, t, y, *ints = args
            ptrs = [ctypes.c_void_p(a.ctypes.data) for a in (x, p, s, z, t, y)]
            entry(ctypes.c_uint(grid[0]), ctypes.c_uint(grid[1]), ctypes.c_uint(block[0]),
                  *ptrs, *[ctypes.c_int(int(i)) for i in ints])  # fmt: skip
            launched.append(kernel + "_" + suffix)

        return launch

    class FakeCupy:
        empty = staticmethod(np.empty)

    monkeypatch.setitem(__import__("sys").modules, "cupy", FakeCupy)
    monkeypatch.setattr(KQ, "function", fake_function)
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        for bits in (2, 3, 4, 5, 8):
            packed, scales, zeros, table = operands(rng, bits, 45, 37, 8, dtype)
            x = rng.standard_normal((3, 37)).astype(dtype)
            got = KQ._cuda_body(x, packed, scales, zeros, table, bits, 8)
            ref = KQ._reference(x, packed, scales, zeros, table, bits, 8)
            tol = 1e-12 if dtype == np.float64 else 1e-5
            np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * np.abs(ref).max())
    assert "quant_matmul_f32" in launched and "quant_matmul_f64" in launched
