"""The WKV kernels (kernels/wkv.py): the Numba tier equals the reference tier (float32 and
float64, odd sizes, keys shifted by 800, non-contiguous input), its parallel launch equals
its serial twin bitwise, the path taken is recorded, and F.wkv4 runs them."""

import numpy as np
import pytest

import tinyllm
import tinyllm.kernels as K
from tinyllm.functional import wkv4
from tinyllm.kernels import dispatch
from tinyllm.kernels import wkv as wkv_kernels

pytest.importorskip("numba")


def _inputs(rng, B=3, T=37, C=5, shift=0.0, dtype=np.float64):
    w = -np.exp(0.5 * rng.standard_normal(C))
    u = 0.5 * rng.standard_normal(C)
    k = shift + rng.standard_normal((B, T, C))
    v = rng.standard_normal((B, T, C))
    gy = rng.standard_normal((B, T, C))
    return [x.astype(dtype) for x in (w, u, k, v, gy)]


def _both(name, *args):
    with K.use("reference"):
        ref = getattr(wkv_kernels, name)(*args)
    assert K.last_tier(name) == "reference"
    with K.use("numba"):
        got = getattr(wkv_kernels, name)(*args)
    assert K.last_tier(name) == "numba"
    return ref, got


# float64: the same operations in the same order (libm exp vs NumPy's exp): 1e-12.
# float32: the same scan, exps rounded differently over 37 steps: 1e-5.
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("shift", [0.0, 800.0])
def test_numba_equals_reference(dtype, tol, shift):
    rng = np.random.default_rng(0)
    w, u, k, v, gy = _inputs(rng, shift=shift, dtype=dtype)
    ref, got = _both("wkv4_forward", w, u, k, v)
    assert got.dtype == dtype and np.isfinite(got).all()
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)
    ref_g, got_g = _both("wkv4_backward", w, u, k, v, gy)
    for a, b in zip(got_g, ref_g):
        assert a.dtype == dtype and np.isfinite(a).all()
        # dw, du are sums over the batch and T: scale the tolerance by their size
        np.testing.assert_allclose(a, b, rtol=tol * 10, atol=tol * 10)


def test_non_contiguous_input():
    rng = np.random.default_rng(1)
    w, u, k, v, gy = _inputs(rng, B=2, T=9, C=6)
    kt = np.ascontiguousarray(k.transpose(0, 2, 1)).transpose(0, 2, 1)  # strided view
    assert not kt.flags.c_contiguous
    ref, got = _both("wkv4_backward", w, u, kt, v, gy)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11)


def test_parallel_launch_equals_serial_twin_bitwise():
    from tinyllm.kernels import wkv_numba

    rng = np.random.default_rng(2)
    w, u, k, v, gy = _inputs(rng, B=4, T=64, C=300)  # the parallel kernel, called directly
    outs = []
    for kernel in (wkv_numba.wkv_forward, dispatch.serial_twin(wkv_numba.wkv_forward)):
        out = np.empty_like(k)
        kernel(w, u, k, v, out)
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])


def test_functional_wkv4_runs_the_numba_tier():
    rng = np.random.default_rng(3)
    w, u, k, v, gy = _inputs(rng, B=2, T=11, C=3)
    td = np.log(-w)  # w = -exp(time_decay)
    K.reset_counts()
    ts = [tinyllm.tensor(x, requires_grad=True) for x in (td, u, k, v)]
    wkv4(*ts).backward(tinyllm.tensor(gy))
    counts = K.tier_counts()
    assert counts.get(("wkv4_forward", "numba")) == 1
    assert counts.get(("wkv4_backward", "numba")) == 1


def test_bad_arrays_are_named():
    rng = np.random.default_rng(4)
    w, u, k, v, _ = _inputs(rng)
    with pytest.raises(ValueError, match="wkv4_forward: expected"):
        wkv_kernels.wkv4_forward(w, u, k, v[:, :3])
    with pytest.raises(TypeError, match="wkv4_forward: w, u, k, v must share"):
        wkv_kernels.wkv4_forward(w.astype(np.float32), u, k, v)
