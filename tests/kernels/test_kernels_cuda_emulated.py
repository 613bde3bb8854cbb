"""The CUDA tier run on the CPU: the .cu sources compiled by g++ against a shim (each block's
threads as fibers, with real barriers and shared memory: tests/cupy_standin/emulator.py, the
one copy of that build code, shared with the CuPy stand-in), launched by the same Python
bodies that launch them through CuPy on a GPU (with NumPy standing in for CuPy). Checks the
kernels' indexing, reductions, tiling and masks against the reference where no GPU exists,
and each launch against the kernel's signature and a GPU's limits (threads per block,
shared memory without opt-in). Not a substitute for the GPU run (test_kernels_cuda.py): it
cannot see races the barrier model hides or NVRTC differences.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

import tinyllm.kernels as K
from tinyllm.kernels import adamw, attention, cuda_loader, glu, norms, rope, softmax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: cupy_standin
from cupy_standin import cuda as standin_cuda  # noqa: E402
from cupy_standin import emulator  # noqa: E402

pytestmark = pytest.mark.skipif(
    emulator.CXX is None, reason="no C++ compiler: cannot emulate CUDA on the CPU"
)
_PY_SCALARS = {bool: np.dtype(np.bool_), int: np.dtype(np.int64), float: np.dtype(np.float64)}


class Emulator:
    """The compiled sources; ``function(source, kernel, dtype)`` mimics cuda_loader's."""

    def __init__(self):
        self.modules = {}  # source -> emulator.EmulatedModule
        self.launches = []

    def function(self, source, kernel, dtype):
        if source not in self.modules:
            code = cuda_loader.source_path(source).read_text()
            self.modules[source] = emulator.compile_source(code, [str(cuda_loader.KERNEL_DIR)])
        name = f"{kernel}_{cuda_loader.dtype_suffix(dtype)}"
        entry = self.modules[source].entries[name]

        def launch(grid, block, args, shared_mem=0):
            grid = tuple(grid) + (1,) * (3 - len(grid))
            block = tuple(block) + (1,) * (3 - len(block))
            threads = block[0] * block[1] * block[2]
            assert 0 < threads <= standin_cuda.MAX_THREADS, (name, block)
            assert shared_mem <= standin_cuda.STATIC_SHARED_LIMIT, (name, shared_mem)
            kinds = entry.param_kinds()
            assert len(args) == len(kinds), (name, len(args), entry.params)
            for arg, (pointer, dt), ctype in zip(args, kinds, entry.params):
                if pointer:
                    assert isinstance(arg, np.ndarray), (name, ctype, type(arg))
                    assert arg.dtype == dt and arg.flags.c_contiguous, (name, ctype, arg.dtype)
                else:
                    got = _PY_SCALARS.get(type(arg)) or np.dtype(type(arg))
                    assert got == dt, (name, ctype, got)
            entry.launch(grid, block, list(args), int(shared_mem))
            self.launches.append(name)

        return launch


@pytest.fixture(scope="module")
def emulated():
    return Emulator()


@pytest.fixture
def cuda_on_cpu(emulated, monkeypatch):
    """NumPy stands in for CuPy; the modules' ``function`` launches emulated kernels."""
    monkeypatch.setitem(sys.modules, "cupy", np)
    for module in (softmax, norms, rope, glu, adamw, attention):
        monkeypatch.setattr(module, "function", emulated.function)
    emulated.launches.clear()
    return emulated


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


# (B, H, Hkv, Tq, Tk, D): T not a multiple of any tile, Tq != Tk both ways, D from 1 to 128
FLASH_SHAPES = [
    (1, 2, 2, 67, 45, 1),
    (1, 1, 1, 33, 70, 3),
    (1, 3, 1, 20, 21, 17),
    (1, 2, 1, 40, 37, 64),
    (1, 1, 1, 37, 29, 96),
    (1, 1, 1, 21, 35, 128),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", FLASH_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_emulated_flash_attention_tiles_against_the_reference(cuda_on_cpu, shape, causal, dtype):
    """The tiled kernels (query tiles of br rows, key tiles of bc rows, accumulators in
    registers) against the naive algorithm, with and without a padding mask."""
    B, H, Hkv, Tq, Tk, D = shape
    rng = np.random.default_rng(D)
    q, do = data(rng, (B, H, Tq, D), dtype), data(rng, (B, H, Tq, D), dtype)
    k, v = data(rng, (B, Hkv, Tk, D), dtype), data(rng, (B, Hkv, Tk, D), dtype)
    keep = rng.random((B, Tk)) > 0.25
    keep[:, 0] = False  # causal: row 0 then sees nothing (o = 0, lse = -inf)
    scale = 1 / np.sqrt(D)
    for mask in (None, keep):
        want = attention._naive_forward(q, k, v, causal, mask, scale)
        got = attention._cuda_forward(q, k, v, causal, mask, scale, 64, 64)
        close(want, got, dtype, 10)
        grads = attention._cuda_backward(do, q, k, v, got[0], got[1], causal, mask, scale, 64, 64)
        close(attention._naive_backward(do, q, k, v, *want, causal, mask, scale), grads, dtype, 100)
    suffix = cuda_loader.dtype_suffix(dtype)
    assert {f"flash_forward_{suffix}", f"flash_backward_dkdv_{suffix}",
            f"flash_backward_dq_{suffix}"} <= set(cuda_on_cpu.launches)  # fmt: skip


@pytest.mark.parametrize("itemsize", [4, 8])
@pytest.mark.parametrize("D", [1, 2, 7, 32, 64, 100, 128, 256, 512])
def test_flash_tiles_fit_without_shared_memory_opt_in(D, itemsize):
    """Every kernel's tiles need at most 48 KiB of dynamic shared memory and at most
    FLASH_MAX_OUT accumulator numbers per thread; bigger heads get smaller tiles."""
    for kernel, smem in (("forward", attention._smem_forward), ("dkdv", attention._smem_dkdv),
                         ("dq", attention._smem_dq)):  # fmt: skip
        br, bc, nbytes = attention._cuda_tiles(kernel, D, itemsize)
        assert nbytes == smem(br, bc, D, itemsize) <= 48 * 1024
        own = bc if kernel == "dkdv" else br
        assert own * D <= attention._CUDA_THREADS * attention._CUDA_MAX_OUT
    assert attention._cuda_tiles("forward", 64, 4)[:2] == (64, 32)
