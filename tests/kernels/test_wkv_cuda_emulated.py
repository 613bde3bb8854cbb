"""The CUDA WKV kernels (kernels/wkv.cu) run on the CPU by the emulator
(tests/cupy_standin/emulator.py, the .cu text compiled against tests/kernels/cuda_cpu_shim.h),
launched by the same Python bodies that launch them through CuPy on a GPU (NumPy standing in
for CuPy), against the NumPy reference tier: forward and backward, float32 and float64, odd
sizes over several blocks, keys shifted by 800 (where e^k overflows float64). Mutants of the
source (the max trick removed, a wrong reverse scan) must fail the same comparison, so the
check can fail. Where a GPU exists, the real kernels against the reference on the device."""

import sys
from pathlib import Path

import numpy as np
import pytest

import tinyllm.kernels as K
from tinyllm.backend import cuda_is_available
from tinyllm.kernels import cuda_loader
from tinyllm.kernels import wkv as WKV

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: cupy_standin
import cupy_standin  # noqa: E402
from cupy_standin import cuda as standin_cuda  # noqa: E402
from cupy_standin import emulator  # noqa: E402

needs_compiler = cupy_standin.needs_compiler()

# The CUDA bodies run the reference's scalar operations in the same order (C's exp/log
# against NumPy's): float64 differs by rounding only, amplified along a 37-step scan: 1e-12.
# float32: exps rounded differently over 37 steps (the Numba tier's test uses the same): 1e-5.
# dw and du are sums over B x T terms of size O(1): their tolerances are 10x (as there).
# With shifted keys, log D_t ~ the shift is rounded to the spacing of the keys (float32:
# 6.1e-5 at 800), and the reverse scan's e^{k_t - log D_s} turns that absolute error into a
# relative error of dk and dv in every tier (measured over 20 seeds, CUDA vs reference,
# float32 at 800: 3.5e-5; float64: 1.2e-14): dk, dv get 2 spacings of the largest key more.
TOL = {np.float64: 1e-12, np.float32: 1e-5}


def wkv_inputs(rng, B=3, T=37, C=5, shift=0.0, dtype=np.float64):
    """w = -exp(time_decay), u, k (+ shift), v and a cotangent gy: the kernels' arguments."""
    w = -np.exp(0.5 * rng.standard_normal(C))
    u = 0.5 * rng.standard_normal(C)
    k = shift + rng.standard_normal((B, T, C))
    v = rng.standard_normal((B, T, C))
    gy = rng.standard_normal((B, T, C))
    return [x.astype(dtype) for x in (w, u, k, v, gy)]


def emulated(code: str):
    """``function(source, kernel, dtype)`` as cuda_loader's for the CUDA text ``code``,
    launching emulated kernels after the checks a GPU makes (argument types, contiguity,
    block size); ``.launches`` lists the entry points launched."""
    return standin_cuda.emulated_loader_function(code, "wkv.cu", [str(cuda_loader.KERNEL_DIR)])


@pytest.fixture(scope="module")
def source():
    if emulator.CXX is None:
        pytest.skip("no C++ compiler: cannot emulate CUDA on the CPU")
    return cuda_loader.source_path("wkv.cu").read_text()


@pytest.fixture(scope="module")
def emulated_function(source):
    return emulated(source)


@pytest.fixture
def cuda_on_cpu(monkeypatch):
    """Run WKV's CUDA bodies with NumPy as cupy and ``function`` replaced: call it with the
    emulated ``function``."""
    monkeypatch.setitem(sys.modules, "cupy", np)
    monkeypatch.setattr(WKV, "_THREADS", 4)  # B C = 15 tasks: 4 blocks, the last one partial

    def use(function):
        monkeypatch.setattr(WKV, "function", function)
        function.launches.clear()
        return function

    return use


def cuda_mismatches(w, u, k, v, gy, dtype) -> list[str]:
    """Names of the CUDA bodies' outputs that differ from the reference's (or are not
    finite); [] when forward and backward agree within TOL."""
    with K.use("reference"):
        want = [WKV.wkv4_forward(w, u, k, v), *WKV.wkv4_backward(w, u, k, v, gy)]
    assert all(np.isfinite(x).all() for x in want)  # the reference is stable at any shift
    got = [WKV._cuda_forward(w, u, k, v), *WKV._cuda_backward(w, u, k, v, gy)]
    key_spacing = float(np.spacing(np.abs(k).max()))  # of k's dtype
    bad = []
    for name, r, g, scale in zip(("wkv", "dw", "du", "dk", "dv"), want, got, (1, 10, 10, 1, 1)):
        assert g.shape == r.shape and g.dtype == dtype, (name, g.shape, g.dtype)
        tol = TOL[dtype] * scale + (2 * key_spacing if name in ("dk", "dv") else 0.0)
        if not (np.isfinite(g).all() and np.allclose(g, r, rtol=tol, atol=tol)):
            bad.append(name)
    return bad


@needs_compiler
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shift", [0.0, 800.0])
def test_emulated_cuda_equals_the_reference(emulated_function, cuda_on_cpu, dtype, shift):
    launches = cuda_on_cpu(emulated_function).launches
    for seed in range(8):  # several draws: the tolerances hold with a margin, not by luck
        w, u, k, v, gy = wkv_inputs(np.random.default_rng(seed), shift=shift, dtype=dtype)
        assert cuda_mismatches(w, u, k, v, gy, dtype) == [], seed
    suffix = cuda_loader.dtype_suffix(dtype)
    assert launches == [f"wkv_forward_{suffix}", f"wkv_backward_{suffix}"] * 8


@needs_compiler
@pytest.mark.parametrize("B,T,C", [(1, 1, 2), (2, 3, 1), (1, 150, 3)])
def test_emulated_cuda_odd_sizes_and_non_contiguous_input(emulated_function, cuda_on_cpu, B, T,
                                                          C):  # fmt: skip
    """T = 1 (the first step only), C = 1, a long scan; k given as a strided view."""
    cuda_on_cpu(emulated_function)
    w, u, k, v, gy = wkv_inputs(np.random.default_rng(B * 100 + T), B, T, C, shift=30.0)
    k = np.ascontiguousarray(k.transpose(0, 2, 1)).transpose(0, 2, 1)
    assert not k.flags.c_contiguous or C == 1 or T == 1
    assert cuda_mismatches(w, u, k, v, gy, np.float64) == []


@needs_compiler
def test_emulated_cuda_on_an_empty_batch_launches_nothing(emulated_function, cuda_on_cpu):
    launches = cuda_on_cpu(emulated_function).launches
    w, u, k, v, gy = wkv_inputs(np.random.default_rng(1), B=0, T=4, C=3)
    assert WKV._cuda_forward(w, u, k, v).shape == (0, 4, 3)
    gw, gu, dk, dv = WKV._cuda_backward(w, u, k, v, gy)
    np.testing.assert_array_equal(gw, np.zeros(3))  # a sum over no batch rows
    assert dk.shape == dv.shape == (0, 4, 3) and launches == []


# Mutants: each edit must be found in the source (so a mutant cannot silently be the original)
# and must make the comparison above fail.
MUTANTS = {
    # the naive scan: states held unscaled (p = 0), exact in exact arithmetic, so it passes
    # unshifted keys; e^{k} overflows at k ~ 800 (float64), which only the shifted case sees
    "no max trick": [("d_max(pp, ww)", "T(0)"), ("p = d_max(ww, kk)", "p = T(0)")],
    # beta_t without wkv_s: only dk's reverse-scan term changes
    "beta without wkv": [("e2 * g * Y[i]", "e2 * g")],
}


def mutant(source: str, name: str) -> str:
    text = source
    for old, new in MUTANTS[name]:
        assert old in text, (name, old)
        text = text.replace(old, new)
    return text


@needs_compiler
def test_mutants_fail_the_comparison(source, cuda_on_cpu):
    args = wkv_inputs(np.random.default_rng(0), shift=0.0)
    shifted = wkv_inputs(np.random.default_rng(0), shift=800.0)
    cuda_on_cpu(emulated(mutant(source, "no max trick")))
    assert cuda_mismatches(*args, np.float64) == []  # exact math: equal without a shift ...
    assert "wkv" in cuda_mismatches(*shifted, np.float64)  # ... and not finite with one
    cuda_on_cpu(emulated(mutant(source, "beta without wkv")))
    assert cuda_mismatches(*args, np.float64) == ["dk"]


# ---------------------------------------------------------------- on a GPU
@pytest.mark.skipif(not cuda_is_available(), reason="no GPU (CuPy unavailable or no device)")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shift", [0.0, 800.0])
def test_cuda_tier_equals_the_reference_on_gpu(dtype, shift):
    import cupy

    w, u, k, v, gy = (
        cupy.asarray(x) for x in wkv_inputs(np.random.default_rng(2), 4, 200, 300, shift, dtype)
    )
    outs = {}
    for tier in ("reference", "cuda"):
        with K.use(tier):
            outs[tier] = [WKV.wkv4_forward(w, u, k, v), *WKV.wkv4_backward(w, u, k, v, gy)]
        assert K.last_tier("wkv4_forward") == K.last_tier("wkv4_backward") == tier
    # a 200-step scan (the tests above: 37); dw, du sum 800 terms: 10x and 100x TOL; dk, dv
    # with the keys' spacing as above
    key_spacing = float(np.spacing(cupy.asnumpy(abs(k).max())))
    for name, r, g, scale in zip(("wkv", "dw", "du", "dk", "dv"), outs["reference"],
                                 outs["cuda"], (10, 100, 100, 10, 10)):  # fmt: skip
        tol = TOL[dtype] * scale + (2 * key_spacing if name in ("dk", "dv") else 0.0)
        np.testing.assert_allclose(cupy.asnumpy(g), cupy.asnumpy(r), rtol=tol, atol=tol,
                                   err_msg=name)  # fmt: skip
