"""The selective-scan kernel tiers (kernels/selective_scan.py): Numba equals the reference
(float32 and float64, odd sizes, groups, several chunks, non-contiguous inputs) and runs
(path taken); its parallel launch equals its serial twin bitwise; the associative scan
equals the sequential one; the LTI special case equals a causal convolution; the CUDA
source compiles with nvcc and, run on the CPU through tests/kernels/cuda_cpu_shim.h,
equals the reference; on a GPU the CUDA tier equals the reference."""

import ctypes
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinyllm.kernels as K
from tinyllm.backend import cuda_is_available
from tinyllm.kernels import cuda_loader, dispatch
from tinyllm.kernels import selective_scan as SS

TOL = {np.float64: 1e-12, np.float32: 2e-5}
NAMES = ("out", "last_state", "states")
GRAD_NAMES = ("du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias")


def problem(rng, dtype, batch=2, dim=6, L=37, N=5, G=3, D=True, z=True, bias=True):
    """Inputs of a scan (kwargs for the optional ones) and a random dout and dlast."""
    inputs = dict(
        u=rng.standard_normal((batch, dim, L)),
        delta=0.5 * rng.standard_normal((batch, dim, L)),
        A=-np.exp(0.5 * rng.standard_normal((dim, N))),
        B=rng.standard_normal((batch, G, N, L)),
        C=rng.standard_normal((batch, G, N, L)),
        D=rng.standard_normal(dim) if D else None,
        z=rng.standard_normal((batch, dim, L)) if z else None,
        delta_bias=0.3 * rng.standard_normal(dim) if bias else None,
    )
    inputs = {k: None if v is None else v.astype(dtype) for k, v in inputs.items()}
    dout = rng.standard_normal((batch, dim, L)).astype(dtype)
    dlast = rng.standard_normal((batch, dim, N)).astype(dtype)
    return inputs, dout, dlast


def run_tier(tier, inputs, dout, dlast, softplus=True, chunk=SS.CHUNK):
    with K.use(tier):
        fwd = SS.selective_scan_forward(**inputs, delta_softplus=softplus, chunk=chunk)
        assert K.last_tier("selective_scan_forward") == tier
        grads = SS.selective_scan_backward(
            dout, **inputs, states=fwd[2], delta_softplus=softplus, dlast=dlast, chunk=chunk
        )
        assert K.last_tier("selective_scan_backward") == tier
    return fwd, grads


def assert_tiers_equal(ref, got, dtype):
    (fr, gr), (fg, gg) = ref, got
    for name, r, g in zip(NAMES + GRAD_NAMES, fr + gr, fg + gg):
        if r is None:
            assert g is None, name
            continue
        assert r.shape == g.shape and r.dtype == g.dtype, (name, r.shape, g.shape, g.dtype)
        tol = TOL[dtype] * max(1.0, float(np.abs(r).max()))
        np.testing.assert_allclose(g, r, rtol=TOL[dtype], atol=tol, err_msg=name)


# ---------------------------------------------------------------- numba
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "shape,options",
    [
        ((2, 6, 37, 5, 3), {}),  # groups, every optional input, one chunk
        ((1, 4, 150, 3, 1), {"D": False, "z": False, "bias": False}),  # three chunks
        ((3, 5, 1, 1, 5), {"z": False}),  # L = 1, N = 1, one channel per group
    ],
)
def test_numba_equals_reference(dtype, shape, options):
    pytest.importorskip("numba")
    batch, dim, L, N, G = shape
    inputs, dout, dlast = problem(np.random.default_rng(0), dtype, batch, dim, L, N, G, **options)
    ref = run_tier("reference", inputs, dout, dlast)
    assert_tiers_equal(ref, run_tier("numba", inputs, dout, dlast), dtype)


def test_numba_non_contiguous_inputs_small_chunks_and_no_softplus():
    pytest.importorskip("numba")
    inputs, dout, dlast = problem(np.random.default_rng(1), np.float64, L=23)
    strided = {}
    for k, v in inputs.items():
        big = np.zeros(v.shape[:-1] + (2 * v.shape[-1],))
        big[..., ::2] = v
        strided[k] = big[..., ::2]
    ref = run_tier("reference", inputs, dout, dlast, softplus=False, chunk=5)
    got = run_tier("numba", strided, dout[..., ::-1].copy()[..., ::-1], dlast, False, chunk=5)
    assert_tiers_equal(ref, got, np.float64)


def test_numba_parallel_equals_serial_twin_bitwise(monkeypatch):
    pytest.importorskip("numba")
    inputs, dout, dlast = problem(np.random.default_rng(2), np.float64, batch=3, L=40)
    monkeypatch.setattr(dispatch, "SERIAL_BELOW", 1 << 40)  # the serial twins
    serial = run_tier("numba", inputs, dout, dlast)
    monkeypatch.setattr(dispatch, "SERIAL_BELOW", 0)  # the parallel kernels
    parallel = run_tier("numba", inputs, dout, dlast)
    for a, b in zip(serial[0] + serial[1], parallel[0] + parallel[1]):
        if a is not None:
            np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- the parallel form
@pytest.mark.parametrize("L", [1, 2, 7, 64, 100])
def test_associative_scan_equals_sequential_scan(L):
    inputs, _, _ = problem(np.random.default_rng(L), np.float64, L=L)
    with K.use("reference"):
        out, last, _ = SS.selective_scan_forward(**inputs, delta_softplus=True)
    out_a, last_a = SS.selective_scan_associative(**inputs, delta_softplus=True)
    np.testing.assert_allclose(out_a, out, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(last_a, last, rtol=1e-13, atol=1e-13)


def test_time_invariant_scan_is_a_causal_convolution():
    """Delta, B, C constant in t: y = K * u with K_k = <C, exp(Delta A)^k Delta B>, + D u."""
    rng = np.random.default_rng(5)
    batch, dim, L, N = 2, 3, 20, 4
    u = rng.standard_normal((batch, dim, L))
    A = -np.exp(rng.standard_normal((dim, N)))
    delta = np.broadcast_to(rng.uniform(0.1, 1.0, (1, dim, 1)), (batch, dim, L)).copy()
    Bc, Cc = rng.standard_normal((batch, N)), rng.standard_normal((batch, N))
    B = np.broadcast_to(Bc[:, None, :, None], (batch, 1, N, L)).copy()
    C = np.broadcast_to(Cc[:, None, :, None], (batch, 1, N, L)).copy()
    D = rng.standard_normal(dim)
    out, _, _ = SS.selective_scan_forward(u, delta, A, B, C, D)
    dt = delta[0, :, 0]  # [dim]
    k = np.arange(L)
    kernel = np.einsum("bn,dnk,dn,bn->bdk", Cc, np.exp(dt[:, None, None] * A[:, :, None] * k),
                       dt[:, None] * np.ones(N), Bc)  # fmt: skip
    conv = np.stack([(kernel[:, :, : t + 1][..., ::-1] * u[:, :, : t + 1]).sum(-1)
                     for t in range(L)], axis=2)  # fmt: skip
    np.testing.assert_allclose(out, conv + D[:, None] * u, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- CUDA: nvcc, emulation, GPU
NVCC = shutil.which("nvcc")
GXX = shutil.which("g++")
SHIM_DIR = Path(__file__).resolve().parents[1] / "kernels"  # tests/kernels/cuda_cpu_shim.h


@pytest.mark.skipif(NVCC is None, reason="nvcc not found: the CUDA source is not compile-checked")
def test_cuda_source_compiles_with_nvcc(tmp_path):
    ptx = tmp_path / "selective_scan.ptx"
    cmd = [
        NVCC,
        "-ptx",
        "-arch=sm_90",
        "-std=c++14",
        str(cuda_loader.source_path("selective_scan.cu")),
    ]
    result = subprocess.run(cmd + ["-o", str(ptx)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for name in ("scan_forward", "scan_backward"):
        for suffix in ("f32", "f64"):
            assert re.search(rf"\.entry {name}_{suffix}\b", ptx.read_text()), name


_CTYPES = {"int": ctypes.c_int32, "float": ctypes.c_float, "double": ctypes.c_double}


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    """selective_scan.cu compiled by g++ against the shim; function(...) as cuda_loader's."""
    if GXX is None:
        pytest.skip("g++ not found: cannot emulate CUDA on CPU")
    tmp = tmp_path_factory.mktemp("scan_emulation")
    source = cuda_loader.source_path("selective_scan.cu").read_text()
    unit = tmp / "scan.cpp"
    flags = ["-std=c++20", f"-I{cuda_loader.KERNEL_DIR}", f"-I{SHIM_DIR}"]
    unit.write_text('#include "cuda_cpu_shim.h"\n' + source)
    expanded = subprocess.run([GXX, "-E", "-P", *flags, str(unit)], capture_output=True,
                              text=True, check=True).stdout  # fmt: skip
    signatures = {
        name: [" ".join(p.split()[:-1]) for p in params.split(",")]
        for name, params in re.findall(
            r'extern "C"\s+void\s+(\w+_f(?:32|64))\s*\(([^)]*)\)', expanded
        )
    }
    launchers = [
        f'extern "C" void emu_{name}(unsigned gx, unsigned bx, void** args) {{ emu_launch('
        f"dim3(gx), dim3(bx), 0, [&] {{ {name}("
        + ", ".join(f"*({t}*)args[{i}]" for i, t in enumerate(types))
        + "); }); }"
        for name, types in signatures.items()
    ]
    unit.write_text(unit.read_text() + "\n" + "\n".join(launchers) + "\n")
    lib_path = tmp / "scan.so"
    cmd = [GXX, "-O1", "-shared", "-fPIC", "-pthread", *flags, str(unit), "-o", str(lib_path)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    lib = ctypes.CDLL(str(lib_path))

    def function(_source, kernel, dtype):
        name = f"{kernel}_{cuda_loader.dtype_suffix(dtype)}"
        types, entry = signatures[name], getattr(lib, "emu_" + name)

        def launch(grid, block, args):
            assert len(args) == len(types), (name, len(args))
            values = []
            for arg, ctype in zip(args, types):
                if isinstance(arg, np.ndarray):
                    assert arg.flags.c_contiguous and ctype.endswith("*"), (name, ctype)
                    base = ctype.replace("const", "").strip(" *")
                    assert arg.dtype == {"float": np.float32, "double": np.float64}[base], name
                    values.append(ctypes.c_void_p(arg.ctypes.data))
                else:
                    values.append(_CTYPES[ctype](arg))
            pointers = [ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values]
            entry(ctypes.c_uint(grid[0]), ctypes.c_uint(block[0]),
                  (ctypes.c_void_p * len(pointers))(*pointers))  # fmt: skip

        return launch

    return function


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cuda_source_on_cpu_equals_reference(emulated, monkeypatch, dtype):
    """NumPy stands in for CuPy; the Python CUDA bodies launch the emulated kernels."""
    monkeypatch.setitem(sys.modules, "cupy", np)
    monkeypatch.setattr(SS, "function", emulated)
    monkeypatch.setattr(SS, "_THREADS", 8)  # few threads per emulated block
    for shape, chunk in (((2, 6, 21, 3, 3), 8), ((1, 2, 5, 2, 1), SS.CHUNK)):
        batch, dim, L, N, G = shape
        inputs, dout, dlast = problem(np.random.default_rng(3), dtype, batch, dim, L, N, G)
        with K.use("reference"):
            ref = SS.selective_scan_forward(**inputs, delta_softplus=True, chunk=chunk)
            ref_g = SS.selective_scan_backward(dout, **inputs, states=ref[2], delta_softplus=True,
                                               dlast=dlast, chunk=chunk)  # fmt: skip
        dt = SS.discretization_step(inputs["delta"], inputs["delta_bias"], True)
        args = [inputs[k] for k in ("u",)] + [dt] + [inputs[k] for k in ("A", "B", "C", "D", "z")]
        fwd = SS._cuda_forward(*args, chunk)
        grads = SS._cuda_backward(dout, dlast, inputs["u"], dt, *args[2:], fwd[2], chunk)
        with K.use("reference"):
            ref_raw = SS._reference_backward(dout, dlast, inputs["u"], dt, *args[2:], ref[2], chunk)
        assert_tiers_equal((ref, ref_raw), (fwd, grads), dtype)
        assert ref_g[0].shape == grads[0].shape


@pytest.mark.skipif(not cuda_is_available(), reason="no GPU (CuPy unavailable or no device)")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cuda_tier_equals_reference_on_gpu(dtype):
    import cupy

    inputs, dout, dlast = problem(np.random.default_rng(4), dtype, L=150)
    on_gpu = {k: None if v is None else cupy.asarray(v) for k, v in inputs.items()}
    ref = run_tier("reference", on_gpu, cupy.asarray(dout), cupy.asarray(dlast))
    got = run_tier("cuda", on_gpu, cupy.asarray(dout), cupy.asarray(dlast))
    as_np = lambda xs: tuple(None if x is None else cupy.asnumpy(x) for x in xs)  # noqa: E731
    assert_tiers_equal((as_np(ref[0]), as_np(ref[1])), (as_np(got[0]), as_np(got[1])), dtype)
