"""CUDA tier: every .cu source compiles with nvcc (wherever nvcc exists) and exports the
entry points the Python launches; on a machine with a GPU, every CUDA kernel equals the
reference (skipped with the reason elsewhere)."""

import re
import shutil
import subprocess

import numpy as np
import pytest

import tinyllm.kernels as K
from tinyllm.backend import cuda_is_available
from tinyllm.kernels import cuda_loader

NVCC = shutil.which("nvcc")
ENTRY_POINTS = {
    "softmax.cu": [
        "softmax_forward",
        "softmax_backward",
        "cross_entropy_forward",
        "cross_entropy_backward",
    ],
    "norms.cu": ["norm_forward", "norm_backward", "norm_param_grad"],
    "rope.cu": ["rope"],
    "glu.cu": ["glu_forward", "glu_backward", "act_forward", "act_backward"],
    "adamw.cu": ["adamw", "adamw_multi"],
    "flash_attention.cu": ["flash_forward", "flash_backward_dkdv", "flash_backward_dq"],
    "quant_matmul.cu": ["quant_matmul"],
    "selective_scan.cu": ["scan_forward", "scan_backward"],
    "im2col.cu": ["im2col", "col2im"],
    "paged_attention.cu": ["paged_decode"],
    "wkv.cu": ["wkv_forward", "wkv_backward"],
}


def test_every_cuda_source_is_listed():
    on_disk = sorted(p.name for p in cuda_loader.KERNEL_DIR.glob("*.cu"))
    assert on_disk == sorted(cuda_loader.CUDA_SOURCES) == sorted(ENTRY_POINTS)


def test_python_launches_only_listed_entry_points():
    """Every function(_CU, "<kernel>", dtype) call in the wrappers names a listed kernel."""
    listed = {name for names in ENTRY_POINTS.values() for name in names}
    for py in cuda_loader.KERNEL_DIR.glob("*.py"):
        for kernel in re.findall(r'function\(_CU, "(\w+)"', py.read_text()):
            assert kernel in listed, (py.name, kernel)


@pytest.mark.skipif(NVCC is None, reason="nvcc not found: CUDA sources are not compile-checked")
@pytest.mark.parametrize("source", sorted(ENTRY_POINTS))
def test_cuda_source_compiles_with_nvcc(source, tmp_path):
    ptx = tmp_path / (source + ".ptx")
    cmd = [NVCC, "-ptx", "-arch=sm_90", "-std=c++14", str(cuda_loader.source_path(source))]
    result = subprocess.run(cmd + ["-o", str(ptx)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = ptx.read_text()
    for name in ENTRY_POINTS[source]:
        for suffix in ("f32", "f64"):
            assert re.search(rf"\.entry {name}_{suffix}\b", text), f"{name}_{suffix} missing"


# ---------------------------------------------------------------- on a GPU
gpu = pytest.mark.skipif(not cuda_is_available(), reason="no GPU (CuPy unavailable or no device)")
DTYPES = [np.float32, np.float64]
TOL = {np.float32: 1e-5, np.float64: 1e-12}


def _tiers(fn, *args, op=None, **kwargs):
    """(reference on the GPU arrays, cuda) results, both as NumPy arrays."""
    import cupy

    op = op or fn.__name__
    with K.use("reference"):
        ref = fn(*args, **kwargs)
    assert K.last_tier(op) == "reference"
    got = fn(*args, **kwargs)
    assert K.last_tier(op) == "cuda"
    as_np = lambda r: tuple(as_np(a) for a in r) if isinstance(r, tuple) else cupy.asnumpy(r)  # noqa: E731
    return as_np(ref), as_np(got)


def _close(ref, got, dtype, scale=1.0):
    if isinstance(ref, tuple):
        for r, g in zip(ref, got):
            _close(r, g, dtype, scale)
        return
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(finite, np.isfinite(got))
    np.testing.assert_allclose(
        got[finite], ref[finite], rtol=TOL[dtype] * scale, atol=TOL[dtype] * scale
    )


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_softmax_cross_entropy(dtype):
    import cupy

    rng = np.random.default_rng(0)
    x = cupy.asarray(rng.standard_normal((37, 1031)) * 3, dtype=dtype)
    dy = cupy.asarray(rng.standard_normal((37, 1031)), dtype=dtype)
    for fwd, bwd in [
        (K.softmax_forward, K.softmax_backward),
        (K.log_softmax_forward, K.log_softmax_backward),
    ]:
        ref, got = _tiers(fwd, x)
        _close(ref, got, dtype)
        _close(*_tiers(bwd, dy, cupy.asarray(ref)), dtype)
    scores = x[:36].reshape(2, 3, 6, 1031)  # attention's options: scale, causal rows
    ref, got = _tiers(K.softmax_forward, scores, scale=0.3, causal=True)
    _close(ref, got, dtype)
    _close(
        *_tiers(K.softmax_backward, dy[:36].reshape(2, 3, 6, 1031), cupy.asarray(ref), scale=0.3),
        dtype,
    )
    t = cupy.asarray(rng.integers(0, 1031, 37))
    t[3] = -100
    for s in (0.0, 0.1):
        ref, got = _tiers(K.cross_entropy_forward, x, t, label_smoothing=s)
        _close(ref, got, dtype)
        lse = cupy.asarray(ref[1])
        _close(*_tiers(K.cross_entropy_backward, dy[:, 0], x, t, lse, label_smoothing=s), dtype)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_norms(dtype):
    import cupy

    rng = np.random.default_rng(1)
    c = lambda *s: cupy.asarray(rng.standard_normal(s), dtype=dtype)  # noqa: E731
    x, r, dy, ds, w, b = c(130, 257), c(130, 257), c(130, 257), c(130, 257), c(257), c(257)
    ref, got = _tiers(K.layer_norm_forward, x, w, b, 1e-5, r)
    _close(ref, got, dtype)
    _, mean, rstd, summed = (cupy.asarray(a) for a in ref)
    _close(*_tiers(K.layer_norm_backward, dy, summed, mean, rstd, w, ds), dtype, 10)
    ref, got = _tiers(K.rms_norm_forward, x, w, 1e-6)
    _close(ref, got, dtype)
    _close(*_tiers(K.rms_norm_backward, dy, x, cupy.asarray(ref[1]), w), dtype, 10)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_rope_glu_adamw(dtype):
    import cupy

    rng = np.random.default_rng(2)
    x = cupy.asarray(rng.standard_normal((2, 3, 17, 10)), dtype=dtype)
    angles = rng.random((17, 5)) * 10
    cos, sin = cupy.asarray(np.cos(angles)), cupy.asarray(np.sin(angles))
    for inter in (False, True):
        for fn in (K.rope_forward, K.rope_backward):
            _close(*_tiers(fn, x, cos, sin, inter), dtype)
    g = cupy.asarray(rng.standard_normal((33, 2 * 65)) * 3, dtype=dtype)
    dout = cupy.asarray(rng.standard_normal((33, 65)), dtype=dtype)
    for act in ("silu", "gelu_tanh", "gelu"):
        _close(*_tiers(K.glu_forward, g, act), dtype, 10)
        _close(*_tiers(K.glu_backward, dout, g, act), dtype, 10)
        _close(*_tiers(K.activation_forward, g, act), dtype, 10)
        _close(*_tiers(K.activation_backward, g, g, act), dtype, 10)
    results = []
    for tier in ("reference", "cuda"):
        p = cupy.asarray(np.linspace(-1, 1, 1000), dtype=dtype)
        m, v = cupy.zeros_like(p), cupy.zeros_like(p)
        with K.use(tier):
            for step in (1, 2, 3):
                grad = cupy.asarray(np.cos(np.arange(1000) * step), dtype=dtype)
                K.adamw_step(p, grad, m, v, step=step, lr=1e-2, weight_decay=0.1)
            assert K.last_tier("adamw_step") == tier
        results.append([cupy.asnumpy(a) for a in (p, m, v)])
    _close(tuple(results[0]), tuple(results[1]), dtype)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
def test_cuda_flash_attention(dtype, causal):
    import cupy

    rng = np.random.default_rng(3)
    B, H, Hkv, Tq, Tk, D = 2, 4, 2, 70, 93, 64
    c = lambda *s: cupy.asarray(rng.standard_normal(s), dtype=dtype)  # noqa: E731
    q, k, v, do = c(B, H, Tq, D), c(B, Hkv, Tk, D), c(B, Hkv, Tk, D), c(B, H, Tq, D)
    keep = cupy.asarray(rng.random((B, Tk)) > 0.3)
    keep[1] = False
    ref, got = _tiers(K.attention_forward, q, k, v, causal=causal, key_padding_mask=keep)
    _close(ref, got, dtype, 10)
    o, lse = (cupy.asarray(a) for a in ref)
    _close(*_tiers(K.attention_backward, do, q, k, v, o, lse, causal=causal,
                   key_padding_mask=keep), dtype, 100)  # fmt: skip


def test_missing_sources_drop_the_cuda_tier():
    assert cuda_loader.source_exists("softmax.cu")  # and the header it includes
    assert not cuda_loader.source_exists("missing.cu")
    bodies = {"reference": 1, "numba": 2, "cuda": 3}
    assert cuda_loader.with_cuda(bodies, "softmax.cu") == bodies
    assert cuda_loader.with_cuda(bodies, "missing.cu") == {"reference": 1, "numba": 2}
