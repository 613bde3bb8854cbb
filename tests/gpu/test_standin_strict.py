"""The stand-in refuses what CuPy refuses and counts what CuPy syncs (tests of the test tool)."""

import cupy_standin
import numpy as np
import pytest

from tinyllm import backend


def test_arrays_are_not_numpy_and_refuse_implicit_conversion(standin):
    x = standin.arange(6, dtype=standin.float32).reshape(2, 3)
    assert not isinstance(x, np.ndarray)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(x)
    with pytest.raises(TypeError, match="Unsupported type"):
        x + np.ones(3, np.float32)
    with pytest.raises(TypeError, match="Unsupported type"):
        standin.exp(np.ones(3))
    assert np.sum(x).shape == ()  # __array_function__ dispatches to cupy.sum, a 0-d array
    assert isinstance((x * 2.0).sum(), standin.ndarray)


def test_scalar_reads_and_transfers_are_counted(standin, counters):
    x = standin.asarray(np.arange(4.0))  # host to device
    assert counters.n_h2d == 1 and counters.n_syncs == 0
    y = x * 2
    assert float(y.sum()) == 12.0
    assert y.max().item() == 6.0
    if (y > 5).any():
        pass
    _ = y.get()
    _ = y[y > 1]  # a boolean mask: the result's size needs the values
    kinds = sorted(kind for kind, _ in counters.syncs)
    assert kinds == ["bool", "bool-mask", "float", "get", "item"]
    assert all("test_standin_strict.py" in where for _, where in counters.syncs)


def test_only_cupy_names_and_signatures(standin):
    with pytest.raises(TypeError, match="sparse"):
        standin.indices((2, 3), sparse=True)
    with pytest.raises(TypeError, match="where"):
        standin.sum(standin.ones(3), where=True)
    with pytest.raises(AttributeError):
        standin.random.default_rng(0).normal(0.0, 1.0, 3)
    with pytest.raises(AttributeError):
        standin.random.default_rng(0).permutation(3)
    with pytest.raises(AttributeError):
        standin.random.default_rng(0).uniform(0.0, 1.0, 3)
    with pytest.raises(AttributeError):
        standin.nanargmax  # noqa: B018  (not a CuPy function here)
    g = standin.random.default_rng(0)
    assert g.standard_normal((2, 3), dtype=np.float32).dtype == np.float32
    assert g.integers(0, 5, size=4).dtype == np.int64


def _kernel(standin, body="y[i] = 2.0f * y[i];"):
    code = (
        'extern "C" __global__ void k(float* y, long long n) { '
        "long long i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) { " + body + " } }"
    )
    return standin.RawKernel(code, "k")


def test_raw_kernel_runs_and_checks_its_launch(standin):
    k = _kernel(standin)
    y = standin.ones(10, dtype=standin.float32)
    k((1,), (32,), (y, np.int64(10)))
    assert y.get().tolist() == [2.0] * 10
    with pytest.raises(TypeError, match="2 parameters"):
        k((1,), (32,), (y,))
    with pytest.raises(TypeError, match="float64"):
        k((1,), (32,), (y.astype(np.float64), np.int64(10)))
    with pytest.raises(TypeError, match="int32"):
        k((1,), (32,), (y, np.int32(10)))
    with pytest.raises(TypeError, match="cupy.ndarray"):
        k((1,), (32,), (np.ones(10, np.float32), np.int64(10)))
    with pytest.raises(ValueError, match="non-contiguous"):
        k((1,), (32,), (y[::2], np.int64(5)))
    with pytest.raises(RuntimeError, match="1025 threads"):
        k((1,), (1025,), (y, np.int64(10)))
    with pytest.raises(RuntimeError, match="shared memory"):
        k((1,), (32,), (y, np.int64(10)), shared_mem=64 * 1024)
    k.max_dynamic_shared_size_bytes = 64 * 1024
    k((1,), (32,), (y, np.int64(10)), shared_mem=64 * 1024)  # opted in


def test_barriers_and_shared_memory_work_in_emulation(standin):
    code = """
    extern "C" __global__ void rev(float* y) {
        __shared__ float s[64];
        s[threadIdx.x] = y[blockIdx.x * 64 + threadIdx.x];
        __syncthreads();
        y[blockIdx.x * 64 + threadIdx.x] = s[63 - threadIdx.x];
    }"""
    y = standin.arange(128, dtype=standin.float32)
    standin.RawKernel(code, "rev")((2,), (64,), (y,))
    want = np.concatenate([np.arange(63, -1, -1), np.arange(127, 63, -1)])
    np.testing.assert_array_equal(y.get(), want)


@pytest.mark.parametrize(
    "missing,step", [("driver", "device"), ("nvrtc", "nvrtc"), ("cublas", "cublas"),
                     ("curand", "curand")],
)  # fmt: skip
def test_device_check_names_the_missing_library(standin, missing, step):
    assert backend.check_cuda().ok
    cupy_standin.FAIL.add(missing)
    try:
        result = backend.check_cuda()
        backend._reset_cuda_detection()
        assert not backend.cuda_is_available()
        with pytest.raises(RuntimeError, match=f"CUDA check failed \\({step}\\)"):
            backend.normalize_device("cuda")
    finally:
        cupy_standin.FAIL.clear()
        backend._reset_cuda_detection()
    assert not result.ok and result.step == step
    assert "\n" not in result.message
    if step in ("nvrtc", "cublas", "curand"):
        assert "[ctk]" in result.message or "cuda13" in result.message
    assert backend.cuda_is_available()
