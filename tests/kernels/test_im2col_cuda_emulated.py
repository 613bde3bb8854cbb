"""The CUDA im2col / col2im kernels (kernels/im2col.cu) run on the CPU by the emulator
(tests/cupy_standin/emulator.py), launched by the same Python bodies that launch them
through CuPy on a GPU (NumPy standing in for CuPy), against the NumPy reference; then the
whole conv path (F.conv2d, max_pool2d, avg_pool2d, forward and backward) on device="cuda"
with the strict CuPy stand-in, against the same ops on the CPU, with the CUDA tier proven
to have run."""

import sys
from pathlib import Path

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
import tinyllm.kernels as K
from tinyllm.backend import cuda_is_available
from tinyllm.kernels import cuda_loader, dispatch
from tinyllm.kernels import im2col as IC

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: cupy_standin
import cupy_standin  # noqa: E402
from cupy_standin import cuda as standin_cuda  # noqa: E402

pytestmark = cupy_standin.needs_compiler()

CASES = [  # (N, C, H, W, kh, kw, stride, dilation, pads=(top, bottom, left, right))
    (2, 3, 7, 6, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1)),
    (1, 2, 9, 8, 3, 2, (2, 3), (2, 1), (0, 2, 1, 0)),  # strides, dilation, asymmetric pads
    (3, 1, 5, 5, 1, 1, (1, 1), (1, 1), (0, 0, 0, 0)),
    (2, 4, 8, 8, 4, 4, (4, 4), (1, 1), (0, 0, 0, 0)),  # patch embedding (stride = kernel)
    (1, 1, 4, 4, 2, 2, (1, 1), (3, 3), (2, 2, 2, 2)),  # windows reading only padding
    (1, 70, 5, 5, 2, 2, (1, 1), (1, 1), (0, 0, 0, 0)),  # > 256 threads: several blocks
]


@pytest.fixture(scope="module")
def emulated_function():
    """``function(source, kernel, dtype)`` as cuda_loader's, launching emulated kernels
    after the checks a GPU makes (argument types, contiguity, block size)."""
    code = cuda_loader.source_path("im2col.cu").read_text()
    return standin_cuda.emulated_loader_function(code, "im2col.cu", [str(cuda_loader.KERNEL_DIR)])


@pytest.fixture
def cuda_on_cpu(emulated_function, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", np)
    monkeypatch.setattr(IC, "function", emulated_function)
    emulated_function.launches.clear()
    return emulated_function


def _out_size(case):
    N, C, H, W, kh, kw, stride, dilation, pads = case
    Ho = IC.conv_output_size(H, kh, stride[0], dilation[0], pads[0], pads[1])
    Wo = IC.conv_output_size(W, kw, stride[1], dilation[1], pads[2], pads[3])
    return Ho, Wo


def test_cuda_tier_is_declared():
    assert "cuda" in dispatch.kernel_tiers("im2col")
    assert "cuda" in dispatch.kernel_tiers("col2im")


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pad_value", [0.0, -np.inf])
def test_emulated_im2col_equals_reference(cuda_on_cpu, case, dtype, pad_value):
    N, C, H, W, kh, kw, stride, dilation, pads = case
    x = np.random.default_rng(0).standard_normal((N, C, H, W)).astype(dtype)
    ref = IC._im2col_reference(x, kh, kw, stride, dilation, pads, pad_value)
    got = IC._im2col_cuda(x, kh, kw, stride, dilation, pads, pad_value)
    assert cuda_on_cpu.launches == [f"im2col_{cuda_loader.dtype_suffix(dtype)}"]
    np.testing.assert_array_equal(got, ref)  # pure copies: bitwise


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_emulated_col2im_equals_reference(cuda_on_cpu, case, dtype):
    N, C, H, W, kh, kw, stride, dilation, pads = case
    cols = np.random.default_rng(1).standard_normal((N, C, kh, kw) + _out_size(case))
    cols = cols.astype(dtype)
    ref = IC._col2im_reference(cols, H, W, stride, dilation, pads)
    got = IC._col2im_cuda(cols, H, W, stride, dilation, pads)
    assert cuda_on_cpu.launches == [f"col2im_{cuda_loader.dtype_suffix(dtype)}"]
    # each pixel adds its entries in the reference's (i, j) order, starting from 0: bitwise
    np.testing.assert_array_equal(got, ref)


@pytest.mark.skipif(not cuda_is_available(), reason="no GPU (CuPy unavailable or no device)")
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_im2col_and_col2im_equal_reference(case, dtype):
    import cupy

    N, C, H, W, kh, kw, stride, dilation, pads = case
    rng = np.random.default_rng(4)
    x = cupy.asarray(rng.standard_normal((N, C, H, W)).astype(dtype))
    cols = cupy.asarray(rng.standard_normal((N, C, kh, kw) + _out_size(case)).astype(dtype))
    for fn, args in ((IC.im2col, (x, kh, kw, stride, dilation, pads, -np.inf)),
                     (IC.col2im, (cols, H, W, stride, dilation, pads))):  # fmt: skip
        with K.use("reference"):
            want = cupy.asnumpy(fn(*args))
        got = cupy.asnumpy(fn(*args))
        assert dispatch.last_tier(fn.__name__) == "cuda"
        np.testing.assert_array_equal(got, want)  # copies, and sums in the same order


# ---------------------------------------------------------------- the conv path on the stand-in
@pytest.fixture(scope="module")
def standin():
    cp = cupy_standin.install()
    yield cp
    cupy_standin.uninstall()


def _run(op, arrays, device):
    ts = [tinyllm.tensor(a, device=device, requires_grad=True) for a in arrays]
    out = op(*ts)
    seed = np.random.default_rng(7).standard_normal(out.shape)
    out.backward(tinyllm.tensor(seed, device=device))
    return out.detach().cpu().numpy(), [t.grad.cpu().numpy() for t in ts]


OPS = {
    "conv2d": (lambda x, w: F.conv2d(x, w, stride=2, padding=1, dilation=1, groups=2),
               [(2, 4, 7, 6), (6, 2, 3, 3)]),
    "conv2d dilated": (lambda x, w: F.conv2d(x, w, padding="same", dilation=2),
                       [(1, 2, 6, 6), (3, 2, 3, 3)]),
    "max_pool2d": (lambda x: F.max_pool2d(x, 3, stride=2, padding=1), [(2, 3, 7, 7)]),
    "avg_pool2d": (lambda x: F.avg_pool2d(x, 2, stride=1, padding=1), [(2, 3, 5, 4)]),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(OPS))
def test_conv_path_on_the_standin_equals_cpu(standin, name):
    op, shapes = OPS[name]
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(s) for s in shapes]
    with K.use("reference"):
        out, grads = _run(op, arrays, "cpu")
    dispatch.reset_counts()
    out_c, grads_c = _run(op, arrays, "cuda")
    counts = dispatch.tier_counts()
    assert counts[("im2col", "cuda")] >= 1 and counts[("col2im", "cuda")] >= 1, counts
    # float64; the device GEMMs and the kernels' sums may group additions differently from
    # NumPy's: 1e-12 on O(1) values of sums of <= 72 terms
    np.testing.assert_allclose(out_c, out, rtol=1e-12, atol=1e-12)
    for g, gc in zip(grads, grads_c):
        np.testing.assert_allclose(gc, g, rtol=1e-12, atol=1e-12)
