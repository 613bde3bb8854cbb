"""A float ``attn_mask`` is a differentiable input of scaled_dot_product_attention.

S = scale Q K^T + bias, P = softmax(S), O = P V  =>  dBias = dS = P (dP - rowsum(P dP)),
dP = dO V^T, summed over the dims along which the mask was broadcast (PyTorch does the same;
learned biases such as T5's buckets or trainable ALiBi slopes need it). Checked against
central differences in float64 and against that formula restated in NumPy.
"""

import math

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
from tinyllm.functional import attention

SDPA = F.scaled_dot_product_attention


def _t(array, grad=False, dtype=np.float64):
    return tinyllm.tensor(np.asarray(array, dtype=dtype), requires_grad=grad)


def _qkv(rng, B=2, H=2, Hkv=2, Tq=3, Tk=4, D=4, Dv=4):
    return (
        rng.standard_normal((B, H, Tq, D)),
        rng.standard_normal((B, Hkv, Tk, D)),
        rng.standard_normal((B, Hkv, Tk, Dv)),
    )


def _bias_gradient(q, k, v, bias, dout):
    """dS = P (dP - rowsum(P dP)) from a NumPy softmax, summed to bias's shape."""
    group = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    s = q @ k.swapaxes(-1, -2) / math.sqrt(q.shape[-1]) + bias  # [B, H, Tq, Tk]
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    dp = dout @ v.swapaxes(-1, -2)
    ds = p * (dp - (p * dp).sum(-1, keepdims=True))
    extra = ds.ndim - bias.ndim
    ds = ds.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(bias.shape) if n == 1 and ds.shape[i] != 1)
    return ds.sum(axis=stretched, keepdims=True)


# mask shapes broadcast to the scores [B=2, H=4, Tq=3, Tk=4] (GQA: Hkv = 2)
SHAPES = [(3, 4), (1, 4, 3, 4), (2, 1, 3, 4), (2, 4, 3, 4), (4, 1, 4), (4,)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_float_mask_gradient_is_ds_summed_to_the_mask_shape(shape):
    rng = np.random.default_rng(0)
    q, k, v = _qkv(rng, H=4, Hkv=2)
    bias = rng.standard_normal(shape)
    dout = rng.standard_normal((2, 4, 3, 4))
    mask = _t(bias, True)
    SDPA(_t(q, True), _t(k), _t(v), attn_mask=mask, enable_gqa=True).backward(dout)
    assert mask.grad is not None and mask.grad.shape == shape
    # float64 throughout, the same sums in another order: rounding only (~1e-15)
    np.testing.assert_allclose(
        mask.grad.numpy(), _bias_gradient(q, k, v, bias, dout), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"window": 2}, {"dropout_p": 0.4}, {"enable_gqa": True}],
    ids=["plain", "window", "dropout", "gqa"],
)
@pytest.mark.parametrize("shape", [(3, 4), (1, 2, 3, 4), (2, 1, 1, 4)], ids=str)
def test_float_mask_gradcheck_float64(shape, kwargs):
    rng = np.random.default_rng(1)
    q, k, v = _qkv(rng, Hkv=1 if kwargs.get("enable_gqa") else 2)
    bias = rng.standard_normal(shape)
    bias[..., 0, -1] = -np.inf  # a masked entry: no gradient reaches it

    def fn(a, b, c, m):
        tinyllm.manual_seed(3)  # the same dropout keep mask in every call
        return SDPA(a, b, c, attn_mask=m, **kwargs)

    args = [_t(q, True), _t(k, True), _t(v, True), _t(bias, True)]
    assert tinyllm.gradcheck(fn, args)
    SDPA(*args[:3], attn_mask=args[3], **{**kwargs, "dropout_p": 0.0}).sum().backward()
    np.testing.assert_array_equal(args[3].grad.numpy()[..., 0, -1], 0.0)


def test_fully_masked_row_of_a_float_mask_gets_zero_gradient():
    rng = np.random.default_rng(2)
    q, k, v = _qkv(rng)
    bias = rng.standard_normal((1, 1, 3, 4))
    bias[..., 1, :] = -np.inf
    mask = _t(bias, True)
    with np.errstate(invalid="raise", divide="raise", over="raise"):
        out = SDPA(_t(q, True), _t(k, True), _t(v, True), attn_mask=mask)
        out.backward(rng.standard_normal(out.shape))
    np.testing.assert_array_equal(mask.grad.numpy()[..., 1, :], 0.0)
    assert np.isfinite(mask.grad.numpy()).all()


def test_constant_float_mask_gets_no_gradient_and_the_same_other_gradients():
    rng = np.random.default_rng(4)
    q, k, v = _qkv(rng)
    bias = rng.standard_normal((3, 4))
    grads = []
    for grad in (False, True):
        q1, mask = _t(q, True), _t(bias, grad)
        SDPA(q1, _t(k), _t(v), attn_mask=mask).backward(np.ones((2, 2, 3, 4)))
        assert (mask.grad is not None) == grad
        grads.append(q1.grad.numpy())
    np.testing.assert_array_equal(grads[0], grads[1])


@pytest.mark.parametrize("dtype", [np.float32, "float16"])
def test_float_mask_gradient_keeps_the_mask_dtype(dtype):
    rng = np.random.default_rng(5)
    q, k, v = (_t(a, True, dtype) for a in _qkv(rng))
    mask = _t(rng.standard_normal((3, 4)), True, dtype)
    SDPA(q, k, v, attn_mask=mask).sum().backward()
    assert mask.grad.dtype == mask.dtype and mask.grad.shape == (3, 4)


def test_learnable_alibi_slopes_train_through_the_mask():
    """bias[h, i, j] = -m_h |i - j| with slopes m that require grad: dm by central differences."""
    rng = np.random.default_rng(6)
    q, k, v = _qkv(rng, H=4, Hkv=4)
    distance = _t(np.abs(np.arange(3)[:, None] - np.arange(4)[None, :]))  # [Tq, Tk]
    slopes = _t(F.alibi_slopes(4, dtype="float64").numpy(), True)

    def fn(m, a):
        bias = -(m.reshape(4, 1, 1) * distance)  # [H, Tq, Tk]
        return SDPA(a, _t(k), _t(v), attn_mask=bias)

    assert tinyllm.gradcheck(fn, [slopes, _t(q, True)])


def test_float_mask_calls_take_the_general_path_even_past_the_flash_threshold(monkeypatch):
    """Only the general Function takes a mask; it is where the mask's gradient is computed."""
    monkeypatch.setattr(attention, "FLASH_MIN_SCORES", 1)
    rng = np.random.default_rng(7)
    q, k, v = _qkv(rng)
    out = SDPA(_t(q, True), _t(k), _t(v), attn_mask=_t(rng.standard_normal((3, 4)), True))
    assert out.grad_fn.fn is attention.GeneralScaledDotProductAttention
