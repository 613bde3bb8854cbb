"""The functional ops run their kernel tiers, and the tiers agree (the "path taken" tests)."""

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
from tinyllm import kernels
from tinyllm.functional import attention


@pytest.mark.parametrize("causal", [True, False])
def test_attention_runs_fused_softmax_kernels_or_flash_and_they_agree(monkeypatch, causal):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 2, 37, 8)) for _ in range(3))
    dout = rng.standard_normal((1, 2, 37, 8))

    def run():
        ts = [tinyllm.tensor(a, requires_grad=True) for a in (q, k, v)]
        out = F.scaled_dot_product_attention(*ts, is_causal=causal)
        out.backward(dout)
        return out.numpy() if not out.requires_grad else out.detach().numpy(), [
            t.grad.numpy() for t in ts
        ]

    kernels.reset_counts()
    batched, batched_grads = run()  # the fused path: GEMMs around the softmax kernels
    counts = kernels.tier_counts()
    assert counts.get(("attention_forward", "numba"), 0) == 0
    assert counts[("softmax_forward", "numba")] == counts[("softmax_backward", "numba")] == 1
    monkeypatch.setattr(attention, "FLASH_MIN_SCORES", 1)  # every call takes the flash path
    flash, flash_grads = run()
    assert kernels.last_tier("attention_forward") == "numba"
    assert kernels.last_tier("attention_backward") == "numba"
    np.testing.assert_allclose(flash, batched, rtol=1e-12, atol=1e-12)
    for a, b in zip(flash_grads, batched_grads):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def _path_of(monkeypatch, threshold, shapes=((2, 4, 6, 8), (2, 2, 7, 8), (2, 2, 7, 8)), **kw):
    """(the Function that ran, its saved arrays) for one call under FLASH_MIN_SCORES."""
    monkeypatch.setattr(attention, "FLASH_MIN_SCORES", threshold)
    rng = np.random.default_rng(1)
    ts = [tinyllm.tensor(rng.standard_normal(s), requires_grad=True) for s in shapes]
    out = F.scaled_dot_product_attention(*ts, enable_gqa=True, **kw)
    return out.grad_fn.fn, out.grad_fn.saved_arrays


def test_each_path_is_one_function_and_saves_what_its_backward_needs(monkeypatch):
    """fused: q, k, v and P [B, Hkv, G, Tq, Tk]; flash: q, k, v, O and lse [B, H, Tq];
    general: q, k, v, O, lse and the masks (no [Tq, Tk] float array)."""
    fn, saved = _path_of(monkeypatch, 1 << 62, is_causal=True)
    assert fn is attention.FusedScaledDotProductAttention
    assert [a.shape for a in saved] == [(2, 4, 6, 8), (2, 2, 7, 8), (2, 2, 7, 8), (2, 2, 2, 6, 7)]
    fn, saved = _path_of(monkeypatch, 1, is_causal=True)
    assert fn is attention.FlashScaledDotProductAttention
    assert [a.shape for a in saved] == [
        (2, 4, 6, 8),
        (2, 2, 7, 8),
        (2, 2, 7, 8),
        (2, 4, 6, 8),
        (2, 4, 6),
    ]
    fn, saved = _path_of(monkeypatch, 1, window=3)
    assert fn is attention.GeneralScaledDotProductAttention
    floats = [a.shape for a in saved if a is not None and a.dtype.kind == "f"]
    assert floats == [(2, 4, 6, 8), (2, 2, 7, 8), (2, 2, 7, 8), (2, 4, 6, 8), (2, 4, 6)]
    # Dv != D: the flash kernels hold V in D-sized rows, so such calls stay on the fused path
    shapes = ((2, 4, 6, 8), (2, 2, 7, 8), (2, 2, 7, 3))
    fn, _ = _path_of(monkeypatch, 1, shapes, is_causal=True)
    assert fn is attention.FusedScaledDotProductAttention


@pytest.mark.parametrize(
    "op,kernel",
    [
        (lambda x: F.layer_norm(x, (x.shape[-1],)), "layer_norm"),
        (lambda x: F.rms_norm(x, (x.shape[-1],)), "rms_norm"),
        (lambda x: F.softmax(x, -1), "softmax"),
        (lambda x: F.log_softmax(x, -1), "log_softmax"),
        (lambda x: F.swiglu(x), "glu"),
        (lambda x: F.geglu(x, approximate="tanh"), "glu"),
        (lambda x: F.gelu(x, approximate="tanh"), "activation"),
        (lambda x: F.gelu(x), "activation"),
        (lambda x: F.silu(x), "activation"),
    ],
)
def test_functional_ops_take_the_numba_tier_and_reference_is_forced(op, kernel):
    x = tinyllm.randn(6, 10, requires_grad=True)
    op(x).sum().backward()
    assert kernels.last_tier(f"{kernel}_forward") == "numba"
    assert kernels.last_tier(f"{kernel}_backward") == "numba"
    with kernels.use("reference"):
        op(x).sum().backward()
    assert kernels.last_tier(f"{kernel}_forward") == "reference"


def test_cross_entropy_rope_and_adamw_take_the_numba_tier():
    x = tinyllm.randn(6, 5, requires_grad=True)
    F.cross_entropy(x, tinyllm.tensor(np.arange(6) % 5)).backward()
    assert kernels.last_tier("cross_entropy_forward") == "numba"
    assert kernels.last_tier("cross_entropy_backward") == "numba"
    r = tinyllm.randn(2, 4, 8, requires_grad=True)
    F.rotary_embedding(r).sum().backward()
    assert kernels.last_tier("rope_forward") == kernels.last_tier("rope_backward") == "numba"
    p = tinyllm.nn.Parameter(np.ones(3, np.float32))
    p.grad = tinyllm.ones(3)
    tinyllm.optim.AdamW([p]).step()
    assert kernels.last_tier("adamw_step_multi") == "numba"
