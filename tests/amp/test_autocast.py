"""autocast: the per-op policy table, the rounding op's gradient (gradchecked), gradients
through autocast GEMMs against their composition, and a tiny model's loss under autocast
against float32 within a bound derived from the formats' unit roundoff."""

import threading

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
from tinyllm.amp import autocast, is_autocast_enabled, round_to
from tinyllm.amp.autocast import FLOAT32_OPS, LOW_PRECISION_OPS, policy_of
from tinyllm.amp.low_precision import UNIT_ROUNDOFF, round_array

pytest.importorskip("ml_dtypes", reason="bfloat16 rounding on NumPy goes through ml_dtypes")
DTYPES = ["bfloat16", "float16"]


def _t(rng, *shape, grad=False):
    return tinyllm.tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=grad)


def _on_grid(a, dtype):
    return np.array_equal(round_array(a, dtype), a)


def _low_calls(rng):
    """One call per LOW_PRECISION_OPS entry, on float32 inputs off the 16-bit grids."""
    x, w, b = _t(rng, 2, 5, 8), _t(rng, 6, 8), _t(rng, 6)
    img, k = _t(rng, 1, 2, 5, 5), _t(rng, 3, 2, 3, 3)
    q, kk, v = _t(rng, 1, 2, 4, 8), _t(rng, 1, 2, 4, 8), _t(rng, 1, 2, 4, 8)
    return {
        "matmul": lambda: F.matmul(x, w.transpose(0, 1)),
        "linear": lambda: F.linear(x, w, b),
        "conv2d": lambda: F.conv2d(img, k),
        "scaled_dot_product_attention": lambda: F.scaled_dot_product_attention(q, kk, v),
    }


def test_policy_table_covers_every_listed_op():
    assert set(_low_calls(np.random.default_rng(0))) == set(LOW_PRECISION_OPS)
    for name in list(LOW_PRECISION_OPS) + list(FLOAT32_OPS):
        assert hasattr(F, name), name  # the table names real ops
    assert policy_of("linear") == "low" and policy_of("softmax") == "float32"
    assert policy_of("silu") == "unchanged"


@pytest.mark.parametrize("dtype", DTYPES)
def test_low_precision_ops_round_operands_and_output(dtype):
    calls = _low_calls(np.random.default_rng(1))
    for name, call in calls.items():
        full = call().data
        assert not _on_grid(full, dtype), name  # float32 results are off the 16-bit grid
        with autocast(dtype=dtype):
            low = call()
        assert low.dtype == np.float32, name  # emulated: float32 carrier
        assert _on_grid(low.data, dtype), name  # the output is stored in the low format
        # |low - full| <= u per operand entry and output, relative to |x||w| sums: a loose
        # bound (3 roundings) on entries of size ~1 with 8 terms: 8 * 3u * max|x||w|
        u = UNIT_ROUNDOFF[dtype]
        assert np.max(np.abs(low.data - full)) <= 8 * 3 * u * 16, name
        assert np.max(np.abs(low.data - full)) > 0, name


def test_linear_under_autocast_is_the_composition_of_rounded_parts():
    rng = np.random.default_rng(2)
    x, w, b = _t(rng, 3, 7), _t(rng, 4, 7), _t(rng, 4)
    r = lambda a: round_array(a, "bfloat16")  # noqa: E731
    with autocast(dtype="bfloat16"):
        got = F.linear(x, w, b).data
    want = r(r(x.data) @ r(w.data).T + r(b.data))  # float32 GEMM on rounded operands
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_float32_ops_compute_in_float32(dtype):
    rng = np.random.default_rng(3)
    z = tinyllm.tensor(rng.standard_normal((4, 9)).astype(np.float16))  # a real float16 tensor
    y = tinyllm.tensor(rng.integers(0, 9, 4))
    with autocast(dtype=dtype):
        for name, out in {
            "softmax": F.softmax(z, -1),
            "log_softmax": F.log_softmax(z, -1),
            "cross_entropy": F.cross_entropy(z, y),
            "layer_norm": F.layer_norm(z, (9,)),
            "rms_norm": F.rms_norm(z, (9,)),
            "sum": z.sum(),
            "exp": z.exp(),
        }.items():
            assert out.dtype == np.float32, name
    x = _t(rng, 4, 9)
    with autocast(dtype=dtype):
        p = F.softmax(x, -1).data
    assert not _on_grid(p, dtype)  # not rounded: computed and kept in float32
    np.testing.assert_array_equal(p, F.softmax(x, -1).data)


def test_unchanged_ops_float64_and_disabled_regions():
    rng = np.random.default_rng(4)
    x = _t(rng, 3, 5)
    with autocast(dtype="bfloat16"):
        assert not hasattr(F.silu, "__autocast_original__")  # not wrapped: runs as it is
        assert not _on_grid(F.silu(x).data, "bfloat16")
        x64 = tinyllm.tensor(rng.standard_normal((3, 5)))
        out64 = (x64 @ x64.transpose(0, 1)).data
        assert is_autocast_enabled()
        with autocast(dtype="bfloat16", enabled=False):
            assert not is_autocast_enabled()
            assert not _on_grid((x @ x.transpose(0, 1)).data, "bfloat16")
    np.testing.assert_array_equal(out64, x64.data @ x64.data.T)  # float64: left alone
    assert not is_autocast_enabled()
    assert F.linear.__name__ == "linear" and not hasattr(F.linear, "__autocast_original__")


def test_autocast_is_thread_local():
    rng = np.random.default_rng(5)
    a, b = _t(rng, 4, 6), _t(rng, 6, 3)
    entered, done = threading.Event(), threading.Event()
    seen = {}

    def other():
        entered.wait()
        seen["other"] = (a @ b).data  # another thread, while the main one is in autocast
        done.set()

    t = threading.Thread(target=other)
    t.start()
    with autocast(dtype="bfloat16"):
        entered.set()
        done.wait()
        inside = (a @ b).data
    t.join()
    assert _on_grid(inside, "bfloat16")
    np.testing.assert_array_equal(seen["other"], a.data @ b.data)


def test_decorator_and_bad_dtype():
    @autocast(dtype="float16")
    def f(a, b):
        return a @ b

    rng = np.random.default_rng(6)
    assert _on_grid(f(_t(rng, 2, 3), _t(rng, 3, 2)).data, "float16")
    with pytest.raises(ValueError, match="autocast: dtype must be 'float16' or 'bfloat16'"):
        autocast(dtype="int8")


@pytest.mark.parametrize("dtype", DTYPES)
def test_rounding_op_gradcheck(dtype):
    """round_to is the identity plus a rounding error |e| <= u |x|. Central differences with
    step h then give  c_i (1 + d),  |d| <= u (|x_i| + h) / h  (two roundings of a value of
    size <= |x_i| + h, over 2h);  the analytic gradient round(c_i) = c_i (1 + d'), |d'| <= u.
    With |x| < 4 and h = 1 the relative gap is <= 6u: rtol 8u (float16 3.9e-3, bf16 3.1e-2).
    A wrong backward (zero, or a factor) fails by far more."""
    rng = np.random.default_rng(7)
    x = tinyllm.tensor(np.clip(rng.standard_normal(12), -3.9, 3.9), requires_grad=True)
    u = UNIT_ROUNDOFF[dtype]
    assert tinyllm.gradcheck(lambda t: round_to(t, dtype), [x], eps=1.0, atol=0.0, rtol=8 * u)
    # and the backward is exactly "round the incoming gradient"
    y = round_to(x, dtype)
    c = rng.standard_normal(12)
    y.backward(tinyllm.tensor(c))
    np.testing.assert_array_equal(x.grad.data, round_array(c, dtype))


def test_float16_gradient_overflow_becomes_inf():
    """A gradient above float16's max (65504) is stored as inf: what GradScaler detects."""
    x = tinyllm.tensor(np.ones(3, np.float32), requires_grad=True)
    round_to(x, "float16").backward(tinyllm.tensor(np.array([1.0, 7e4, -7e4], np.float32)))
    np.testing.assert_array_equal(x.grad.data, [1.0, np.inf, -np.inf])


def test_gradients_through_autocast_linear_are_the_rounded_composition():
    """dx = round(round(dy) W_r), dW = round(round(dy)^T x_r), db = round(sum round(dy)),
    where _r is the rounded operand (each GEMM output and the gradient flowing back are
    16-bit); compared to one bfloat16 ulp (2u relative), the float32 sums may be ordered
    differently than in the Linear backward."""
    rng = np.random.default_rng(8)
    x, w, b = _t(rng, 5, 7, grad=True), _t(rng, 4, 7, grad=True), _t(rng, 4, grad=True)
    c = rng.standard_normal((5, 4)).astype(np.float32)
    with autocast(dtype="bfloat16"):
        y = F.linear(x, w, b)
    y.backward(tinyllm.tensor(c))
    r = lambda a: round_array(a, "bfloat16")  # noqa: E731
    dy = r(c)
    u = UNIT_ROUNDOFF["bfloat16"]
    np.testing.assert_allclose(x.grad.data, r(dy @ r(w.data)), rtol=2 * u, atol=1e-6)
    np.testing.assert_allclose(w.grad.data, r(dy.T @ r(x.data)), rtol=2 * u, atol=1e-6)
    np.testing.assert_allclose(b.grad.data, r(dy.sum(0)), rtol=2 * u, atol=1e-6)
    assert x.grad.dtype == w.grad.dtype == np.float32  # float32 master gradients


def _tiny_model_loss(dtype):
    from tinyllm.models import ModelConfig, build_model

    tinyllm.manual_seed(0)
    model = build_model(ModelConfig(arch="llama", vocab_size=64, d_model=32, n_layer=2,
                                    n_head=4, block_size=16))  # fmt: skip
    rng = np.random.default_rng(9)
    idx = rng.integers(0, 64, (4, 17))
    x, y = tinyllm.tensor(idx[:, :-1]), tinyllm.tensor(idx[:, 1:].reshape(-1))

    def loss():
        logits = model(x)
        return F.cross_entropy(logits.reshape(-1, 64), y)

    full = loss()
    if dtype is None:
        return full
    with autocast(dtype=dtype):
        low = loss()
    low.backward()
    grads = [p.grad for p in model.parameters()]
    return full, low, grads


def test_tiny_model_loss_under_autocast_is_close_to_float32():
    """Each GEMM rounds its operands and output: relative error <= 3u per GEMM to first
    order. A logit sees 2 layers x (qkv, attention, o, gate/up, down) + the head, about 12
    GEMMs: |d logit| <= 12 * 3u * |logit|-scale; cross-entropy moves by at most
    2 max|d logit| (its gradient p - onehot has l1 norm <= 2), and at init the loss ~ ln 64
    with logits of size ~1. Bound: 2 * 36u * 1 = 72u (bf16 0.28, fp16 0.035) -- loose, as a
    worst-case bound is (independent rounding errors mostly cancel in the mean over 64
    tokens: measured 1.0e-5 for bf16, 2.4e-6 for fp16), so float16 (u 8x smaller) must also
    land closer than bfloat16."""
    gaps = {}
    for dtype in DTYPES:
        full, low, grads = _tiny_model_loss(dtype)
        gap = abs(low.item() - full.item())
        gaps[dtype] = gap
        assert 0 < gap <= 72 * UNIT_ROUNDOFF[dtype], (dtype, gap)
        # gradients flowed to every float32 master parameter, finite, float32
        assert all(g is not None and g.dtype == np.float32 for g in grads)
        assert all(np.isfinite(g.data).all() for g in grads)
    assert gaps["float16"] < gaps["bfloat16"]
