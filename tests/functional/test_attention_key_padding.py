"""Key-padding masks on the fused and flash paths, chunked inference, packed attention.

A boolean ``attn_mask`` of shape [B, 1, 1, Tk] (BERT's padding mask) goes to the softmax
kernel's ``key_mask`` (fused path) or the flash kernels' ``key_padding_mask``; everything here
is compared with the general path (the array code that takes any mask) and with NumPy.
"""

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
from tinyllm import kernels
from tinyllm.functional import attention


def _numpy_masked_softmax(x, scale, allowed):
    s = np.where(allowed, x * scale, -np.inf)
    m = s.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    e = np.exp(s - m)
    total = e.sum(-1, keepdims=True)
    return np.where(total > 0, e / np.where(total > 0, total, 1), 0)


# ---------------------------------------------------------------- the softmax kernel
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-14), (np.float32, 1e-6)])
@pytest.mark.parametrize("tier", ["reference", "numba"])
@pytest.mark.parametrize("causal", [False, True])
def test_softmax_key_mask_matches_numpy(dtype, tol, tier, causal):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 5, 7)).astype(dtype)
    keep = rng.random((3, 7)) > 0.4
    keep[1] = False  # a fully hidden batch entry: zeros, not NaN
    allowed = np.broadcast_to(keep[:, None, None, :], x.shape)
    if causal:
        allowed = allowed & (np.arange(7)[None, :] <= np.arange(5)[:, None])
    with kernels.use(tier):
        y = kernels.softmax_forward(x, 0.7, causal, key_mask=keep)
    assert kernels.last_tier("softmax_forward") == tier
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_allclose(y, _numpy_masked_softmax(x, 0.7, allowed), rtol=tol, atol=tol)
    assert not np.isnan(y).any() and (y[1] == 0).all()
    # the backward formula needs nothing new: hidden entries have y = 0, so dx = 0 there
    dy = rng.standard_normal(x.shape).astype(dtype)
    dx = kernels.softmax_backward(dy, y, 0.7)
    assert (dx[~allowed] == 0).all()


def test_softmax_key_mask_of_one_row_serves_every_entry():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 6))
    keep = np.array([[True, True, False, True, False, True]])
    y = kernels.softmax_forward(x, key_mask=keep)
    want = _numpy_masked_softmax(x, 1.0, np.broadcast_to(keep, x.shape))
    np.testing.assert_allclose(y, want, rtol=1e-14, atol=1e-14)


def test_softmax_key_mask_is_checked():
    x = np.zeros((2, 3, 4))
    with pytest.raises(TypeError, match="key_mask must be boolean"):
        kernels.softmax_forward(x, key_mask=np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"key_mask \(3, 4\) must be \[B, C\]"):
        kernels.softmax_forward(x, key_mask=np.ones((3, 4), bool))
    with pytest.raises(ValueError, match="must be"):
        kernels.softmax_forward(x, key_mask=np.ones((2, 5), bool))


# ---------------------------------------------------------------- scaled_dot_product_attention
def _qkv(dtype=np.float64, shape=(3, 4, 6, 8), kv_heads=None, seed=0):
    rng = np.random.default_rng(seed)
    B, H, T, D = shape
    kv = (B, kv_heads or H, T, D)
    return [rng.standard_normal(s).astype(dtype) for s in (shape, kv, kv)]


def _padding(lengths, T):
    return (np.arange(T)[None, :] < np.asarray(lengths)[:, None])[:, None, None, :]


def _run(arrays, mask, grad=True, general=False, monkeypatch=None, **kw):
    """(output, grads or None, the Function that ran or None)."""
    if general:
        monkeypatch.setattr(attention, "_key_padding", lambda *a: None)
    ts = [tinyllm.tensor(a, requires_grad=grad) for a in arrays]
    out = F.scaled_dot_product_attention(*ts, attn_mask=tinyllm.tensor(mask), **kw)
    fn = out.grad_fn.fn if out.grad_fn is not None else None
    grads = None
    if grad:
        out.backward(np.random.default_rng(5).standard_normal(out.shape).astype(out.dtype))
        grads = [t.grad.numpy() for t in ts]
    if general:
        monkeypatch.undo()
    return (out.detach() if grad else out).numpy(), grads, fn


@pytest.mark.parametrize("gqa", [False, True])
def test_key_padding_mask_takes_the_fused_path_and_equals_the_general_one(monkeypatch, gqa):
    arrays = _qkv(kv_heads=2 if gqa else None)
    mask = _padding([6, 3, 0], 6)  # the last entry has no key at all: zeros, zero gradients
    kernels.reset_counts()
    out, grads, fn = _run(arrays, mask, enable_gqa=gqa)
    assert fn is attention.FusedScaledDotProductAttention
    counts = kernels.tier_counts()
    assert counts[("softmax_forward", "numba")] == counts[("softmax_backward", "numba")] == 1
    ref, ref_grads, ref_fn = _run(arrays, mask, general=True, monkeypatch=monkeypatch,
                                  enable_gqa=gqa)  # fmt: skip
    assert ref_fn is attention.GeneralScaledDotProductAttention
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, ref_grads):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert (out[2] == 0).all() and all((g[2] == 0).all() for g in grads)


def test_key_padding_mask_gradcheck_float64():
    q, k, v = (tinyllm.tensor(a, requires_grad=True) for a in _qkv(shape=(2, 2, 4, 3)))
    mask = tinyllm.tensor(_padding([4, 2], 4))

    def fn(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    assert fn(q, k, v).grad_fn.fn is attention.FusedScaledDotProductAttention
    assert tinyllm.gradcheck(fn, [q, k, v])


@pytest.mark.parametrize("mask_shape", ["[B,1,1,T]", "[1,1,1,T]", "[B,1,T]-like 3d"])
def test_key_padding_forms_on_the_flash_path(monkeypatch, mask_shape):
    arrays = _qkv()
    mask = _padding([6, 4, 1], 6)
    if mask_shape == "[1,1,1,T]":
        mask = mask[:1]
    elif mask_shape != "[B,1,1,T]":
        mask = mask[:1, 0]  # [1, 1, T]: unit dims are prepended
    ref, ref_grads, _ = _run(arrays, mask, general=True, monkeypatch=monkeypatch)
    monkeypatch.setattr(attention, "FLASH_MIN_SCORES", 1)
    out, grads, fn = _run(arrays, mask)
    assert fn is attention.FlashScaledDotProductAttention
    assert kernels.last_tier("attention_forward") == kernels.last_tier("attention_backward")
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)
    for a, b in zip(grads, ref_grads):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)


def test_other_boolean_masks_stay_on_the_general_path():
    arrays = _qkv()
    rng = np.random.default_rng(2)
    for mask in (rng.random((3, 1, 6, 6)) > 0.3, rng.random((3, 4, 1, 6)) > 0.3):
        _, _, fn = _run(arrays, mask)
        assert fn is attention.GeneralScaledDotProductAttention


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-6)])
@pytest.mark.parametrize("chunk", [1, 1 << 20])
def test_inference_is_chunked_saves_nothing_and_equals_the_general_path(
    monkeypatch, dtype, tol, chunk
):
    arrays = _qkv(dtype, shape=(5, 4, 7, 8))
    mask = _padding([7, 5, 2, 7, 1], 7)
    ref, _, _ = _run(arrays, mask, grad=False, general=True, monkeypatch=monkeypatch)
    monkeypatch.setattr(attention, "INFERENCE_CHUNK_SCORES", chunk)
    monkeypatch.setattr(attention, "FLASH_MIN_SCORES", 1)  # inference never takes flash
    kernels.reset_counts()
    with tinyllm.no_grad():
        ts = [tinyllm.tensor(a, requires_grad=True) for a in arrays]
        out = F.scaled_dot_product_attention(*ts, attn_mask=tinyllm.tensor(mask))
    counts = kernels.tier_counts()
    assert counts.get(("attention_forward", "numba"), 0) == 0
    assert counts[("softmax_forward", "numba")] == (5 if chunk == 1 else 1)
    assert out.grad_fn is None and out.dtype == dtype
    np.testing.assert_allclose(out.numpy(), ref, rtol=tol, atol=tol)
    # O is written in [B, T, H, D] memory: the heads merge back without a copy
    assert out.transpose(1, 2).numpy().flags["C_CONTIGUOUS"]


def test_inference_without_mask_and_causal_equals_the_recorded_path():
    arrays = _qkv(shape=(2, 3, 9, 4))
    for causal in (False, True):
        ts = [tinyllm.tensor(a, requires_grad=True) for a in arrays]
        recorded = F.scaled_dot_product_attention(*ts, is_causal=causal).detach().numpy()
        with tinyllm.no_grad():
            plain = F.scaled_dot_product_attention(*ts, is_causal=causal).numpy()
        np.testing.assert_allclose(plain, recorded, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- packed_attention
def test_packed_attention_equals_padded_attention_at_the_real_positions():
    rng = np.random.default_rng(3)
    H, D, T = 3, 4, 6
    lengths = [6, 6, 4, 0, 4, 4, 1]  # runs of equal lengths, and an empty sequence
    B = len(lengths)
    q, k, v = (rng.standard_normal((B, T, H * D)) for _ in range(3))
    real = np.arange(T)[None, :] < np.array(lengths)[:, None]  # [B, T]

    def heads(x):
        return tinyllm.tensor(x.reshape(B, T, H, D).transpose(0, 2, 1, 3))

    with tinyllm.no_grad():
        padded = F.scaled_dot_product_attention(
            heads(q), heads(k), heads(v), attn_mask=real[:, None, None, :]
        )
        padded = padded.numpy().transpose(0, 2, 1, 3).reshape(B, T, H * D)[real]
        kernels.reset_counts()
        packed = attention.packed_attention(
            tinyllm.tensor(q[real]), tinyllm.tensor(k[real]), tinyllm.tensor(v[real]), lengths, H
        )
    assert kernels.last_tier("softmax_forward") == "numba"
    assert packed.shape == (int(real.sum()), H * D)
    np.testing.assert_allclose(packed.numpy(), padded, rtol=1e-12, atol=1e-12)


def test_packed_attention_is_inference_only_and_checks_its_arguments():
    x = tinyllm.randn(5, 6, requires_grad=True)
    with pytest.raises(RuntimeError, match="inference only"):
        attention.packed_attention(x, x, x, [5], 2)
    with tinyllm.no_grad():
        assert attention.packed_attention(x, x, x, [2, 3], 2).shape == (5, 6)
        with pytest.raises(ValueError, match="sum to N"):
            attention.packed_attention(x, x, x, [2, 2], 2)
        with pytest.raises(ValueError, match="heads"):
            attention.packed_attention(x, x, x, [5], 4)
