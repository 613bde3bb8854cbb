"""Every registered attention sample, run with the flash threshold forced to 1.

With ``FLASH_MIN_SCORES = 1`` every call the flash kernels can take goes to them ([B, H, T, D]
float32/64, no mask other than causal or a boolean key-padding mask [B|1, 1, 1, Tk], no
window, no dropout, Dv == D); the others (other masks,
windows, dropout, Dv != D, no batch dims) must still run their own path. Outputs and
gradients are compared with the default dispatch (the fused or general path, which the
registry gradchecks) and the outputs with the registry's NumPy reference.
"""

import math

import numpy as np
import pytest

import tinyllm
from tinyllm import kernels
from tinyllm.functional import attention
from tinyllm.registry import all_ops

INFO = all_ops()["scaled_dot_product_attention"]
SAMPLES = INFO.samples(np.random.default_rng(0), np.float64)


def _flash_eligible(sample) -> bool:
    """Whether the flash kernels cover the sample, restated from the kernels' contract."""
    q, k, v = sample.args[:3]
    kw = sample.kwargs
    mask = sample.args[3] if len(sample.args) > 3 else kw.get("attn_mask")
    if hasattr(mask, "numpy"):
        mask = mask.numpy()
    key_padding = (
        mask is not None
        and np.asarray(mask).dtype == bool
        and attention._key_padding(np.asarray(mask), q, k) is not None
    )
    return (
        (mask is None or key_padding)
        and len(sample.args) <= 4
        and q.ndim == 4
        and v.shape[-1] == q.shape[-1]
        and kw.get("window") is None
        and not kw.get("dropout_p")
    )


def _run(sample):
    args = INFO.tensors(sample)
    out = INFO.op(*args, **sample.kwargs)
    out.backward(np.random.default_rng(3).standard_normal(out.shape))
    grads = [a.grad.numpy() for a in args if isinstance(a, tinyllm.Tensor) and a.requires_grad]
    return out, grads


def test_some_samples_reach_flash_and_some_do_not():
    eligible = [s.name for s in SAMPLES if _flash_eligible(s)]
    assert len(eligible) >= 5 and len(eligible) < len(SAMPLES), eligible


@pytest.mark.parametrize("k", range(len(SAMPLES)), ids=[s.name for s in SAMPLES])
def test_sample_with_flash_forced_matches_the_default_path(monkeypatch, k):
    sample = SAMPLES[k]
    default, default_grads = _run(sample)
    monkeypatch.setattr(attention, "FLASH_MIN_SCORES", 1)
    kernels.reset_counts()
    forced, forced_grads = _run(sample)
    took_flash = forced.grad_fn.fn is attention.FlashScaledDotProductAttention
    assert took_flash == _flash_eligible(sample)
    ran = kernels.tier_counts()
    assert (ran.get(("attention_forward", "numba"), 0) == 1) == took_flash
    assert (ran.get(("attention_backward", "numba"), 0) == 1) == took_flash

    expected = INFO.reference(*sample.args, **sample.kwargs)
    np.testing.assert_allclose(forced.detach().numpy(), expected, rtol=1e-10, atol=1e-12)
    # float64 both ways; flash differs only in summation order and fast_exp (1 ulp)
    np.testing.assert_allclose(
        forced.detach().numpy(), default.detach().numpy(), rtol=1e-10, atol=1e-12
    )
    assert len(forced_grads) == len(default_grads)
    for a, b in zip(forced_grads, default_grads):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_value_head_size_different_from_key_head_size_past_the_threshold():
    """The review's repro: q, k [1, 1, 4096, 1], v [1, 1, 4096, 2] reach FLASH_MIN_SCORES."""
    rng = np.random.default_rng(9)
    T = 4096
    assert T * T >= attention.FLASH_MIN_SCORES
    q, k = (rng.standard_normal((1, 1, T, 1)).astype(np.float32) for _ in range(2))
    v = rng.standard_normal((1, 1, T, 2)).astype(np.float32)
    ts = [tinyllm.tensor(a, requires_grad=True) for a in (q, k, v)]
    out = tinyllm.functional.scaled_dot_product_attention(*ts, is_causal=True)
    out.backward(np.ones(out.shape, np.float32))
    assert out.shape == (1, 1, T, 2)
    assert out.grad_fn.fn is not attention.FlashScaledDotProductAttention
    rows = [0, 1, 100, T - 1]  # a few rows against float64 softmax attention
    s = q[0, 0, rows].astype(np.float64) @ k[0, 0].T.astype(np.float64) / math.sqrt(1)
    s = np.where(np.arange(T)[None, :] <= np.array(rows)[:, None], s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    want = (p / p.sum(-1, keepdims=True)) @ v[0, 0].astype(np.float64)
    # float32 sums over <= 4096 keys of O(1) terms: ~1e-6 relative error
    np.testing.assert_allclose(out.detach().numpy()[0, 0, rows], want, rtol=1e-4, atol=1e-5)
    assert all(np.isfinite(t.grad.numpy()).all() for t in ts)
