"""F.conv2d, F.max_pool2d, F.avg_pool2d: forward against direct loops (the registry's
references, written without im2col) on both kernel tiers; forward and gradients against
torch.nn.functional as an optional oracle (skipped without torch); torch-compatible
indices; clear errors. (The float64 gradchecks of every option are the registry's.)"""

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
import tinyllm.kernels as K
from tinyllm.registry.conv import avg_pool2d_loop, conv2d_loop, max_pool2d_loop

CONV = [  # (x shape, w shape, kwargs)
    ((2, 3, 6, 5), (4, 3, 3, 3), {}),
    ((1, 2, 7, 7), (3, 2, 3, 2), {"stride": 2, "padding": 1}),
    ((1, 2, 9, 8), (2, 2, 2, 3), {"stride": (2, 1), "padding": (2, 0), "dilation": (2, 1)}),
    ((2, 4, 5, 5), (6, 2, 3, 3), {"groups": 2, "padding": 1}),
    ((1, 3, 5, 4), (3, 1, 3, 3), {"groups": 3, "padding": "same"}),
    ((1, 2, 6, 6), (2, 2, 2, 2), {"padding": "same", "dilation": 2}),
    ((2, 3, 8, 8), (5, 3, 4, 4), {"stride": 4, "padding": "valid"}),
]
# float64 GEMM vs a loop summing the same products in another order: 1e-12
TOL64 = 1e-12


@pytest.mark.parametrize("tier", ["reference", "numba"])
@pytest.mark.parametrize("xs, ws, kw", CONV)
def test_conv2d_equals_direct_loop(tier, xs, ws, kw):
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    with K.use(tier):
        out = F.conv2d(tinyllm.tensor(x), tinyllm.tensor(w), tinyllm.tensor(b), **kw)
    np.testing.assert_allclose(out.numpy(), conv2d_loop(x, w, b, **kw), rtol=0, atol=TOL64)


POOL = [
    ((2, 3, 6, 6), 2, {}),
    ((1, 2, 7, 6), 3, {"stride": 2, "padding": 1}),
    ((1, 2, 7, 7), (3, 2), {"stride": (1, 2), "padding": (1, 1)}),
]


@pytest.mark.parametrize("xs, k, kw", POOL)
def test_pools_equal_direct_loops(xs, k, kw):
    x = np.random.default_rng(1).standard_normal(xs)
    out, idx = F.max_pool2d(tinyllm.tensor(x), k, return_indices=True, **kw)
    ref, ref_idx = max_pool2d_loop(x, k, return_indices=True, **kw)
    np.testing.assert_array_equal(out.numpy(), ref)
    np.testing.assert_array_equal(idx.numpy(), ref_idx)
    for cip in (True, False):
        got = F.avg_pool2d(tinyllm.tensor(x), k, count_include_pad=cip, **kw).numpy()
        np.testing.assert_allclose(got, avg_pool2d_loop(x, k, count_include_pad=cip, **kw),
                                   rtol=0, atol=TOL64)  # fmt: skip


def _grads(fn, *arrays):
    ts = [tinyllm.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*ts)
    g = np.random.default_rng(5).standard_normal(out.shape)
    (out * tinyllm.tensor(g)).sum().backward()
    return out.detach().numpy(), [t.grad.numpy() for t in ts], g


@pytest.mark.parametrize("xs, ws, kw", CONV)
def test_conv2d_matches_torch(xs, ws, kw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    out, grads, g = _grads(lambda x, w, b: F.conv2d(x, w, b, **kw), x, w, b)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    tout = torch.nn.functional.conv2d(tx, tw, tb, **kw)
    (tout * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=0, atol=TOL64)
    for mine, theirs in zip(grads, (tx.grad, tw.grad, tb.grad)):
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=0, atol=TOL64)


@pytest.mark.parametrize("xs, k, kw", POOL + [((2, 5, 5), 2, {"stride": 1, "dilation": 2})])
def test_pools_match_torch(xs, k, kw):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(3).standard_normal(xs)
    tf = torch.nn.functional
    out, (gx,), g = _grads(lambda t: F.max_pool2d(t, k, **kw), x)
    tx = torch.tensor(x, requires_grad=True)
    tout, tidx = tf.max_pool2d(tx, k, return_indices=True, **kw)
    (tout * torch.tensor(g)).sum().backward()
    np.testing.assert_array_equal(out, tout.detach().numpy())
    # overlapping windows add several terms into one pixel, in another order than torch
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=0, atol=TOL64)
    _, idx = F.max_pool2d(tinyllm.tensor(x), k, return_indices=True, **kw)
    np.testing.assert_array_equal(idx.numpy(), tidx.numpy())
    kw = {k2: v for k2, v in kw.items() if k2 != "dilation"}
    for opts in ({}, {"count_include_pad": False}, {"divisor_override": 3}):
        out, (gx,), g = _grads(lambda t: F.avg_pool2d(t, k, **kw, **opts), x)
        tx = torch.tensor(x, requires_grad=True)
        tout = tf.avg_pool2d(tx, k, **kw, **opts)
        (tout * torch.tensor(g)).sum().backward()
        np.testing.assert_allclose(out, tout.detach().numpy(), rtol=0, atol=TOL64)
        np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=0, atol=TOL64)


def test_errors_name_op_argument_and_shapes():
    x, w = tinyllm.randn(1, 4, 5, 5), tinyllm.randn(6, 3, 3, 3)
    with pytest.raises(ValueError, match=r"conv2d: input \(1, 4, 5, 5\) and weight"):
        F.conv2d(x, w)
    with pytest.raises(ValueError, match="conv2d: padding='same' needs stride 1"):
        F.conv2d(x, tinyllm.randn(2, 4, 3, 3), padding="same", stride=2)
    with pytest.raises(ValueError, match="conv2d: bias must have shape"):
        F.conv2d(x, tinyllm.randn(2, 4, 3, 3), tinyllm.randn(3))
    with pytest.raises(ValueError, match="conv2d: kernel"):
        F.conv2d(x, tinyllm.randn(2, 4, 7, 7))
    with pytest.raises(ValueError, match="max_pool2d: padding"):
        F.max_pool2d(x, 2, padding=2)
    with pytest.raises(NotImplementedError, match="avg_pool2d: ceil_mode"):
        F.avg_pool2d(x, 2, ceil_mode=True)
    with pytest.raises(TypeError, match="conv2d: weight has dtype"):
        F.conv2d(x.double(), tinyllm.randn(2, 4, 3, 3))


def test_conv2d_and_max_pool_free_what_they_saved_after_backward():
    """The im2col columns and the argmax indices are saved arrays: backward releases them."""
    rng = np.random.default_rng(0)
    x = tinyllm.tensor(rng.standard_normal((2, 3, 6, 6)), requires_grad=True)
    w = tinyllm.tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
    y = F.conv2d(x, w)
    z = F.max_pool2d(x, 2)
    conv_ctx, pool_ctx = y.grad_fn, z.grad_fn
    assert any(a is not None and a.size == 2 * 27 * 16 for a in conv_ctx.saved_arrays)
    assert len(pool_ctx.saved_arrays) == 1
    (y.sum() + z.sum()).backward()
    assert conv_ctx.saved_arrays == () and pool_ctx.saved_arrays == ()
