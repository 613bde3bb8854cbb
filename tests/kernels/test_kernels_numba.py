"""Every Numba kernel equals its reference: float32 and float64, odd sizes, non-contiguous
inputs, extreme values; and the parallel kernels give bitwise the same result on 1 thread
as on 2. (Attention: test_kernels_flash.py.)"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyllm.kernels as K

pytest.importorskip("numba")

DTYPES = [np.float64, np.float32]
TOL = {np.float64: 1e-12, np.float32: 2e-5}


def tiers(fn, *args, op=None, **kwargs):
    """(reference result, numba result), asserting which tier ran each."""
    op = op or fn.__name__
    with K.use("reference"):
        ref = fn(*args, **kwargs)
    assert K.last_tier(op) == "reference"
    with K.use("numba"):
        got = fn(*args, **kwargs)
    assert K.last_tier(op) == "numba"
    return ref, got


def assert_close(ref, got, dtype, scale=1.0):
    if isinstance(ref, tuple):
        assert len(ref) == len(got)
        for r, g in zip(ref, got):
            assert_close(r, g, dtype, scale)
        return
    assert ref.shape == got.shape and ref.dtype == got.dtype, (ref.shape, got.shape, got.dtype)
    tol = TOL[dtype] * scale
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)


def data(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


# ---------------------------------------------------------------- softmax family
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (3, 5, 37), (130, 1031)])
def test_softmax_family(dtype, shape):
    rng = np.random.default_rng(0)
    x, dy = data(rng, shape, dtype, 3), data(rng, shape, dtype)
    for fwd, bwd in [
        (K.softmax_forward, K.softmax_backward),
        (K.log_softmax_forward, K.log_softmax_backward),
    ]:
        ref, got = tiers(fwd, x)
        assert_close(ref, got, dtype)
        assert_close(*tiers(bwd, dy, ref), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_non_contiguous_large_and_masked_values(dtype):
    rng = np.random.default_rng(1)
    x = data(rng, (40, 2 * 67), dtype, 1e4)[:, ::2]  # strided view, logits of 1e4
    x[3, :10] = -np.inf  # partly masked row
    assert not x.flags.c_contiguous
    ref, got = tiers(K.softmax_forward, x)
    assert_close(ref, got, dtype)
    ref, got = tiers(K.log_softmax_forward, x.T.copy().T)  # Fortran order
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(np.isfinite(got), finite)
    assert_close(ref[finite], got[finite], dtype, scale=1e4 if dtype == np.float32 else 1e2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 3, 5, 5), (2, 1, 7, 4), (2, 3, 130, 260)])  # last: parallel
def test_scaled_causal_softmax(dtype, shape):
    rng = np.random.default_rng(3)
    x, dy = data(rng, shape, dtype, 3), data(rng, shape, dtype)
    ref, got = tiers(K.softmax_forward, x, scale=0.3, causal=True)
    assert_close(ref, got, dtype)
    assert_close(*tiers(K.softmax_backward, dy, ref, scale=0.3), dtype)
    # scale 1 and no mask: the plain softmax, bit for bit
    with K.use("numba"):
        np.testing.assert_array_equal(K.softmax_forward(x, scale=1.0), K.softmax_forward(x))


def test_read_only_inputs_compile_no_extra_signature():
    from tinyllm.kernels import dispatch, softmax_numba

    row = np.linspace(-1, 1, 7)
    x = np.broadcast_to(row, (5, 7))  # read-only view
    ref, got = tiers(K.softmax_forward, x)
    assert_close(ref, got, np.float64)
    signatures = dispatch.serial_twin(softmax_numba.softmax_rows).signatures  # 35 elements
    assert signatures and all(sig[0].mutable for sig in signatures)


def test_softmax_all_minus_inf_row_is_nan_like_numpy():
    x = np.zeros((2, 5))
    x[1] = -np.inf
    ref, got = tiers(K.softmax_forward, x)
    assert np.all(np.isnan(ref[1])) and np.all(np.isnan(got[1]))
    np.testing.assert_array_equal(ref[0], got[0])


@given(
    R=st.integers(1, 20),
    C=st.integers(1, 300),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)
def test_softmax_generated_shapes(R, C, dtype, seed):
    rng = np.random.default_rng(seed)
    x, dy = data(rng, (R, C), dtype, 4), data(rng, (R, C), dtype)
    ref, got = tiers(K.log_softmax_forward, x)
    assert_close(ref, got, dtype)
    assert_close(*tiers(K.softmax_backward, dy, K.softmax_forward(x)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy(dtype, smoothing):
    rng = np.random.default_rng(2)
    R, V = 37, 1031
    logits = data(rng, (R, 2 * V), dtype, 4)[:, ::2]  # non-contiguous
    target = rng.integers(0, V, R)
    target[[0, 5, 36]] = -100
    ref, got = tiers(K.cross_entropy_forward, logits, target, label_smoothing=smoothing)
    assert_close(ref, got, dtype)
    for dloss in (data(rng, R, dtype), 1.0 / R):
        assert_close(
            *tiers(K.cross_entropy_backward, dloss, logits, target, ref[1],
                   label_smoothing=smoothing),
            dtype,
        )  # fmt: skip


def test_cross_entropy_leading_dims_and_custom_ignore_index():
    rng = np.random.default_rng(3)
    logits = data(rng, (2, 3, 7), np.float64)
    target = rng.integers(0, 7, (2, 3))
    target[0, 1] = 5
    ref, got = tiers(K.cross_entropy_forward, logits, target, ignore_index=5)
    assert_close(ref, got, np.float64)
    assert ref[0][0, 1] == 0 and got[0].shape == (2, 3)


# ---------------------------------------------------------------- norms
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (3, 7, 129), (257, 33)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm(dtype, shape, affine):
    rng = np.random.default_rng(4)
    C = shape[-1]
    x, dy = data(rng, shape, dtype, 2) + 3, data(rng, shape, dtype)
    w, b = (data(rng, C, dtype), data(rng, C, dtype)) if affine else (None, None)
    ref, got = tiers(K.layer_norm_forward, x, w, b, 1e-5)
    assert_close(ref, got, dtype)
    _, mean, rstd = ref
    assert_close(*tiers(K.layer_norm_backward, dy, x, mean, rstd, w), dtype, scale=10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_norms_fused_residual_and_non_contiguous(dtype):
    rng = np.random.default_rng(5)
    x = data(rng, (33, 2 * 70), dtype)[:, ::2]  # non-contiguous
    r, dy, ds = data(rng, (33, 70), dtype), data(rng, (33, 70), dtype), data(rng, (33, 70), dtype)
    w, b = data(rng, 70, dtype), data(rng, 70, dtype)
    ref, got = tiers(K.layer_norm_forward, x, w, b, 1e-5, r)
    assert_close(ref, got, dtype)
    _, mean, rstd, summed = ref
    assert_close(*tiers(K.layer_norm_backward, dy, summed, mean, rstd, w, ds), dtype, scale=10)
    ref, got = tiers(K.rms_norm_forward, x, w, 1e-6, r)
    assert_close(ref, got, dtype)
    _, rstd, summed = ref
    assert_close(*tiers(K.rms_norm_backward, dy, summed, rstd, w, ds), dtype, scale=10)


@given(
    R=st.integers(1, 70),
    C=st.integers(1, 200),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)
def test_rms_norm_generated_shapes(R, C, dtype, seed):
    rng = np.random.default_rng(seed)
    x, dy, w = data(rng, (R, C), dtype), data(rng, (R, C), dtype), data(rng, C, dtype)
    ref, got = tiers(K.rms_norm_forward, x, w)
    assert_close(ref, got, dtype)
    assert_close(*tiers(K.rms_norm_backward, dy, x, ref[1], w), dtype, scale=10)


# ---------------------------------------------------------------- rope
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("interleaved", [False, True])
def test_rope(dtype, interleaved):
    rng = np.random.default_rng(6)
    B, H, T, D = 2, 3, 17, 10
    x = data(rng, (B, T, H, D), dtype).transpose(0, 2, 1, 3)  # [B, H, T, D], non-contiguous
    angles = rng.random((T, D // 2)) * 10
    cos, sin = np.cos(angles), np.sin(angles)  # float64 tables: cast by the wrapper
    for fn in (K.rope_forward, K.rope_backward):
        assert_close(*tiers(fn, x, cos, sin, interleaved), dtype)
    per_seq = (
        np.cos(angles + 1)[None, None].repeat(B, 0),
        np.sin(angles + 1)[None, None].repeat(B, 0),
    )
    assert_close(*tiers(K.rope_forward, x, *per_seq, interleaved), dtype)


# ---------------------------------------------------------------- glu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["silu", "gelu_tanh", "gelu"])
def test_glu(dtype, act):
    rng = np.random.default_rng(7)
    x = data(rng, (3, 4, 2 * 65), dtype, 3)
    x[0, 0, :8] = [-100, -30, -1e-8, 0, 1e-8, 30, 100, 5]  # tails and zero
    dout = data(rng, (3, 4, 65), dtype)
    assert_close(*tiers(K.glu_forward, x, act), dtype)
    assert_close(*tiers(K.glu_backward, dout, x, act), dtype)
    xs = data(rng, (9, 4 * 13), dtype)[:, ::2]  # non-contiguous [9, 26]
    assert_close(*tiers(K.glu_forward, xs, act), dtype)


# ---------------------------------------------------------------- adamw
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1000,), (33, 17)])
def test_adamw(dtype, shape):
    states = []
    for tier in ("reference", "numba"):
        r = np.random.default_rng(9)
        p = data(r, shape[::-1], dtype).T  # non-contiguous when 2-D
        m, v = np.zeros(shape, dtype), np.zeros(shape, dtype)
        with K.use(tier):
            for step in range(1, 4):
                g = data(r, shape, dtype)
                K.adamw_step(p, g, m, v, step=step, lr=1e-2, betas=(0.9, 0.999), eps=1e-8,
                             weight_decay=0.1)  # fmt: skip
                assert K.last_tier("adamw_step") == tier
        states.append((p, m, v))
    for ref, got in zip(*states):
        np.testing.assert_allclose(got, ref, rtol=TOL[dtype], atol=TOL[dtype])


def test_adamw_mixed_dtypes_run_the_reference():
    p = np.ones(4, np.float32)
    state = [np.zeros(4, np.float64) for _ in range(2)]
    K.adamw_step(p, np.ones(4, np.float32), *state, step=1, lr=0.1)
    assert K.last_tier("adamw_step") == "reference"


# ---------------------------------------------------------------- parallel == serial
def test_parallel_kernels_equal_serial_twins_bitwise(monkeypatch):
    """The parallel kernels on 1 thread and on 2, and their serial twins, give identical bits
    (the row-chunked reductions of dweight/dbias depend on the row count only)."""
    numba = pytest.importorskip("numba")
    from tinyllm.kernels import dispatch

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 Numba threads")
    rng = np.random.default_rng(10)
    x, dy, w = (
        data(rng, (301, 67), np.float64),
        data(rng, (301, 67), np.float64),
        data(rng, 67, np.float64),
    )
    q = data(rng, (2, 2, 45, 8), np.float64)
    target = rng.integers(0, 67, 301)

    def run_all():
        with K.use("numba"):
            y, mean, rstd = K.layer_norm_forward(x, w, w)
            out = [y, *K.layer_norm_backward(dy, x, mean, rstd, w)]
            out += list(K.cross_entropy_forward(x, target))
            out.append(K.softmax_forward(x))
            o, lse = K.attention_forward(q, q, q, causal=True, block_q=16, block_k=8)
            out += [
                o,
                *K.attention_backward(q, q, q, q, o, lse, causal=True, block_q=16, block_k=8),
            ]
        return out

    monkeypatch.setattr(dispatch, "SERIAL_BELOW", 1 << 40)  # every launch: the serial twin
    twins = run_all()
    monkeypatch.setattr(dispatch, "SERIAL_BELOW", 0)  # every launch: the parallel kernel
    previous = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one_thread = run_all()
        numba.set_num_threads(2)
        two_threads = run_all()
    finally:
        numba.set_num_threads(previous)
    for a, b, c in zip(twins, one_thread, two_threads):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_small_work_launches_the_serial_twin():
    pytest.importorskip("numba")
    from tinyllm.kernels import dispatch, softmax_numba

    kernel = softmax_numba.softmax_rows
    twin = dispatch.numba_for_work(kernel, 10)
    assert twin is dispatch.serial_twin(kernel) and twin is not kernel
    assert kernel.targetoptions["parallel"] and "parallel" not in twin.targetoptions
    assert twin.targetoptions["error_model"] == kernel.targetoptions["error_model"]
    # large work: the parallel kernel behind the thread-policy launcher (or, with one
    # kernel thread, the twin again)
    from tinyllm import runtime

    big = dispatch.numba_for_work(kernel, dispatch.SERIAL_BELOW)
    assert big is not kernel and big is dispatch.numba_for_work(kernel, 10**9)
    if runtime.kernel_threads() == 1:
        assert big is twin
    else:
        assert big is not twin
        x = np.linspace(-1.0, 1.0, 2 * dispatch.SERIAL_BELOW).reshape(2, -1)
        out_parallel, out_serial = np.empty_like(x), np.empty_like(x)
        big(x, out_parallel, False, 1.0, 0)
        twin(x, out_serial, False, 1.0, 0)
        np.testing.assert_array_equal(out_parallel, out_serial)
    # the two compilations are cached on disk under different names, never mixed up
    files = {k._cache._cache_file._index_path for k in (kernel, twin)}
    assert len(files) == 2
