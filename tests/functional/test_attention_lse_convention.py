"""Fully masked rows: O = 0, zero gradients and lse = -inf in both layers.

lse_i = log sum_j exp(S_ij) is the log of an empty sum, -inf, on a row with no allowed key:
FlashAttention's convention, which ``tinyllm.kernels`` (naive, Numba, CUDA) and the functional
op's general path (the one that takes masks) share. Backward takes P = 0 on such rows.
"""

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
from tinyllm import kernels
from tinyllm.functional import attention


def _t(array, grad=False):
    return tinyllm.tensor(np.asarray(array), requires_grad=grad)


def _qkv(rng, B=2, H=2, Tq=4, Tk=5, D=4):
    return (rng.standard_normal(s) for s in ((B, H, Tq, D), (B, H, Tk, D), (B, H, Tk, D)))


def _saved_lse(out):
    assert out.grad_fn.fn is attention.GeneralScaledDotProductAttention
    return out.grad_fn.saved_arrays[4]  # lse [B, H, Tq]


def _masks(rng):
    keep = rng.random((2, 1, 4, 5)) > 0.3
    keep[..., 0] = True
    keep[1, 0, 2] = False  # row 2 of batch 1: no key
    bias = np.where(keep, rng.standard_normal((2, 1, 4, 5)), -np.inf)
    return {"bool mask": keep, "float mask with -inf": bias}


@pytest.mark.parametrize("kind", ["bool mask", "float mask with -inf"])
def test_functional_lse_is_minus_inf_on_a_fully_masked_row(kind):
    rng = np.random.default_rng(0)
    q, k, v = _qkv(rng)
    mask = _masks(rng)[kind]
    args = [_t(a, True) for a in (q, k, v)]
    out = F.scaled_dot_product_attention(*args, attn_mask=_t(mask))
    lse = _saved_lse(out)
    dead = np.zeros((2, 2, 4), dtype=bool)
    dead[1, :, 2] = True  # the mask has one head, broadcast over both
    np.testing.assert_array_equal(np.isneginf(lse), dead)
    assert np.isfinite(lse[~dead]).all()
    with np.errstate(invalid="raise", divide="raise", over="raise"):
        out.backward(rng.standard_normal(out.shape))
    np.testing.assert_array_equal(out.detach().numpy()[1, :, 2], 0.0)
    np.testing.assert_array_equal(args[0].grad.numpy()[1, :, 2], 0.0)


def test_window_rows_with_no_key_have_minus_inf_lse():
    rng = np.random.default_rng(1)
    q, k, v = _qkv(rng, Tq=5, Tk=2)  # window 2, Tq > Tk: rows 3 and 4 see no key
    out = F.scaled_dot_product_attention(*(_t(a, True) for a in (q, k, v)), window=2)
    lse = _saved_lse(out)
    assert np.isneginf(lse[..., 3:]).all() and np.isfinite(lse[..., :3]).all()


@pytest.mark.parametrize("tier", ["reference", "numba"])
def test_functional_and_kernel_lse_agree_on_key_padding(monkeypatch, tier):
    """The same key padding as a functional bool mask and as the kernels' key_padding_mask:
    outputs equal and lse equal, -inf included. A [B, 1, 1, Tk] mask takes the fused path
    (the softmax kernel's key_mask, no lse saved); the general path's lse is read with the
    key-padding form switched off."""
    rng = np.random.default_rng(2)
    q, k, v = _qkv(rng, B=3, Tq=4, Tk=5)
    keep = rng.random((3, 5)) > 0.4
    keep[0] = False  # batch 0: every row fully masked
    keep[1:, 0] = True
    fused = F.scaled_dot_product_attention(
        *(_t(a, True) for a in (q, k, v)), attn_mask=_t(keep[:, None, None, :])
    )
    assert fused.grad_fn.fn is attention.FusedScaledDotProductAttention
    monkeypatch.setattr(attention, "_key_padding", lambda *a: None)
    out = F.scaled_dot_product_attention(
        *(_t(a, True) for a in (q, k, v)), attn_mask=_t(keep[:, None, None, :])
    )
    assert out.grad_fn.fn is attention.GeneralScaledDotProductAttention
    np.testing.assert_allclose(fused.detach().numpy(), out.detach().numpy(), rtol=1e-12, atol=1e-13)
    with kernels.use(tier):
        o, lse = kernels.attention_forward(q, k, v, key_padding_mask=keep)
    assert kernels.last_tier("attention_forward") == tier
    functional_lse = _saved_lse(out)
    np.testing.assert_array_equal(np.isneginf(functional_lse), np.isneginf(lse))
    assert np.isneginf(lse[0]).all()
    finite = np.isfinite(lse)
    # float64, the same logsumexp up to summation order and fast_exp (1 ulp)
    np.testing.assert_allclose(functional_lse[finite], lse[finite], rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(out.detach().numpy(), o, rtol=1e-12, atol=1e-13)
