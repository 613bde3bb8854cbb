"""The CUDA paged decode kernel (kernels/paged_attention.cu) run on the CPU by the emulator
(tests/cupy_standin/emulator.py, the shim's fibers with real barriers and shared memory),
launched by the same Python body that launches it through CuPy on a GPU (NumPy standing in
for CuPy), against the NumPy reference through a shuffled block table; and, where a GPU
exists, the real kernel against the reference on the device."""

import sys
from pathlib import Path

import numpy as np
import pytest

import tinyllm.kernels as K
from tinyllm.backend import cuda_is_available
from tinyllm.kernels import cuda_loader
from tinyllm.kernels import paged_attention as PA

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: cupy_standin
import cupy_standin  # noqa: E402
from cupy_standin import cuda as standin_cuda  # noqa: E402

needs_compiler = cupy_standin.needs_compiler()
# float64: a different order of additions (tiles, a reduction tree) than the reference's
# GEMM; values are O(1) sums of <= 70 terms, 1e-12 is ~1e4 ulps. float32: ~1e2 ulps.
TOL = {np.float64: 1e-12, np.float32: 2e-5}


@pytest.fixture(scope="module")
def emulated_function():
    """``function(source, kernel, dtype)`` as cuda_loader's, launching emulated kernels
    after the checks a GPU makes (argument types, contiguity, block size, shared memory)."""
    code = cuda_loader.source_path("paged_attention.cu").read_text()
    return standin_cuda.emulated_loader_function(
        code, "paged_attention.cu", [str(cuda_loader.KERNEL_DIR)]
    )


@pytest.fixture
def cuda_on_cpu(emulated_function, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", np)
    monkeypatch.setattr(PA, "function", emulated_function)
    emulated_function.launches.clear()
    return emulated_function


def paged_problem(rng, dtype, H, Hkv, D, S, lens, spare=3):
    """q [N, H, D] and caches whose blocks are handed out in a random order (garbage in the
    unused slots and blocks), with the block tables (padded with block 0)."""
    num_blocks = sum(-(-L // S) for L in lens) + spare
    k_cache = rng.standard_normal((num_blocks, Hkv, S, D)).astype(dtype)
    v_cache = rng.standard_normal((num_blocks, Hkv, S, D)).astype(dtype)
    free = list(rng.permutation(num_blocks))
    tables = [[int(free.pop()) for _ in range(-(-L // S))] for L in lens]
    bt = np.zeros((len(lens), max(map(len, tables)) + 1), dtype=np.int64)  # one spare column
    for i, t in enumerate(tables):
        bt[i, : len(t)] = t
    q = rng.standard_normal((len(lens), H, D)).astype(dtype)
    return q, k_cache, v_cache, bt


@needs_compiler
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "H,Hkv,D,S,lens",
    [
        (4, 2, 8, 4, [1, 7, 8, 21]),  # GQA; lengths 1, within a tile, across tiles
        (3, 3, 5, 1, [2, 17]),  # block size 1, D not a multiple of anything
        (2, 1, 19, 16, [33, 70]),  # D > threads: two output elements per thread
    ],
)
def test_emulated_cuda_decode_equals_the_reference(cuda_on_cpu, monkeypatch, dtype, H, Hkv, D,
                                                   S, lens):  # fmt: skip
    monkeypatch.setattr(PA, "_THREADS", 8)  # tiles of 8 tokens: every length spans tiles
    rng = np.random.default_rng(H * 100 + D)
    q, k_cache, v_cache, bt = paged_problem(rng, dtype, H, Hkv, D, S, lens)
    scale = 1 / np.sqrt(D)
    want = PA._reference_decode(q, k_cache, v_cache, bt, lens, scale)
    got = PA._cuda_decode(q, k_cache, v_cache, bt, np.array(lens), scale)
    assert got.dtype == dtype and got.shape == q.shape
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype])
    assert cuda_on_cpu.launches == [f"paged_decode_{cuda_loader.dtype_suffix(dtype)}"]


@needs_compiler
def test_emulated_cuda_decode_with_the_default_block(cuda_on_cpu):
    """The launch the engine makes (128 threads), a long context and a custom scale."""
    rng = np.random.default_rng(7)
    q, k_cache, v_cache, bt = paged_problem(rng, np.float64, 4, 2, 16, 16, [150, 3])
    want = PA._reference_decode(q, k_cache, v_cache, bt, [150, 3], 0.3)
    got = PA._cuda_decode(q, k_cache, v_cache, bt, np.array([150, 3]), 0.3)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_decode_dispatch_and_argument_errors():
    rng = np.random.default_rng(1)
    q, k_cache, v_cache, bt = paged_problem(rng, np.float64, 4, 2, 8, 4, [5, 9])
    with K.use("reference"):
        want = PA.paged_attention_forward(q, k_cache, v_cache, bt, [5, 9])
    assert K.last_tier("paged_attention_forward") == "reference"
    got = PA.paged_attention_forward(q, k_cache, v_cache, bt, [5, 9])
    assert K.last_tier("paged_attention_forward") == "numba"
    np.testing.assert_allclose(got, want, atol=1e-12)  # online softmax: rounding only
    assert K.kernel_tiers("paged_attention_forward")[:2] == ("reference", "numba")
    with pytest.raises(ValueError, match=r"paged_attention_forward: context_lens must hold N = 2"):
        PA.paged_attention_forward(q, k_cache, v_cache, bt, [5, 0])
    with pytest.raises(ValueError, match=r"paged_attention_forward: block_tables must be"):
        PA.paged_attention_forward(q, k_cache, v_cache, bt[:, :1], [5, 9])


@pytest.mark.skipif(not cuda_is_available(), reason="no GPU (CuPy unavailable or no device)")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cuda_decode_equals_the_reference_on_gpu(dtype):
    import cupy

    rng = np.random.default_rng(3)
    lens = [1, 100, 257, 31]
    q, k_cache, v_cache, bt = (
        cupy.asarray(a) for a in paged_problem(rng, dtype, 8, 2, 64, 16, lens)
    )
    with K.use("reference"):
        want = PA.paged_attention_forward(q, k_cache, v_cache, bt, lens)
    got = PA.paged_attention_forward(q, k_cache, v_cache, bt, lens)
    assert K.last_tier("paged_attention_forward") == "cuda"
    np.testing.assert_allclose(
        cupy.asnumpy(got), cupy.asnumpy(want), rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10
    )  # fmt: skip  (sums over 257 keys)
