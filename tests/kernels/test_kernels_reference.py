"""The reference tier checked on its own: against SciPy/PyTorch, direct formulas and float64
central differences under random cotangents. (The Numba and CUDA tiers are then checked
against this reference.)"""

import math

import numpy as np
import pytest
import scipy.special

import tinyllm.kernels as K

rng = np.random.default_rng(1234)


def randn(*shape):
    return rng.standard_normal(shape)


def directional_check(f, grads, inputs, cotangent, h=1e-6, n_dirs=3, tol=1e-7):
    """<cotangent, df(x)[u]> by central differences equals sum_i <grads_i, u_i>."""
    for _ in range(n_dirs):
        dirs = [randn(*x.shape) for x in inputs]
        plus = f(*[x + h * u for x, u in zip(inputs, dirs)])
        minus = f(*[x - h * u for x, u in zip(inputs, dirs)])
        numeric = np.sum(cotangent * (plus - minus)) / (2 * h)
        analytic = sum(np.sum(g * u) for g, u in zip(grads, dirs))
        assert abs(numeric - analytic) <= tol * max(1.0, abs(numeric)), (numeric, analytic)


@pytest.fixture(autouse=True)
def reference_tier():
    with K.use("reference"):
        yield


# ---------------------------------------------------------------- softmax family
def test_softmax_and_log_softmax_match_scipy():
    x = randn(4, 3, 7) * 5
    np.testing.assert_allclose(K.softmax_forward(x), scipy.special.softmax(x, axis=-1), atol=1e-15)
    np.testing.assert_allclose(
        K.log_softmax_forward(x), scipy.special.log_softmax(x, axis=-1), atol=1e-13
    )
    assert K.last_tier("log_softmax_forward") == "reference"


def test_softmax_backward_matches_finite_differences():
    x, dy = randn(5, 9), randn(5, 9)
    dx = K.softmax_backward(dy, K.softmax_forward(x))
    directional_check(K.softmax_forward, [dx], [x], dy)
    dx = K.log_softmax_backward(dy, K.log_softmax_forward(x))
    directional_check(K.log_softmax_forward, [dx], [x], dy)


@pytest.mark.parametrize("tq, tk", [(5, 5), (6, 4), (3, 7)])
def test_scaled_causal_softmax_matches_masked_scipy_and_finite_differences(tq, tk):
    x, dy = randn(2, 3, tq, tk) * 3, randn(2, 3, tq, tk)
    scale = 0.37
    visible = np.tri(tq, tk, dtype=bool)  # query i sees keys j <= i
    masked = np.where(visible, scale * x, -np.inf)
    y = K.softmax_forward(x, scale=scale, causal=True)
    np.testing.assert_allclose(y, scipy.special.softmax(masked, axis=-1), atol=1e-15)
    assert np.all(y[..., ~visible] == 0)
    dx = K.softmax_backward(dy, y, scale=scale)
    assert np.all(dx[..., ~visible] == 0)

    def f(x):
        return K.softmax_forward(x, scale=scale, causal=True)

    directional_check(f, [dx], [x], dy)


def test_softmax_options_validated():
    with pytest.raises(
        ValueError, match=r"softmax_forward: x must be \[\.\.\., C\] \(\[\.\.\., Tq, Tk\]"
    ):
        K.softmax_forward(randn(4), causal=True)
    with pytest.raises(ValueError, match="softmax_forward: scale must be a finite number"):
        K.softmax_forward(randn(2, 2), scale=float("nan"))


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_matches_direct_formula_and_finite_differences(smoothing):
    R, V = 7, 11
    x = randn(R, V) * 3
    t = rng.integers(0, V, R)
    t[2] = -100
    loss, lse = K.cross_entropy_forward(x, t, label_smoothing=smoothing)
    logp = scipy.special.log_softmax(x, axis=1)
    q = np.full((R, V), smoothing / V)
    q[np.arange(R), np.where(t >= 0, t, 0)] += 1 - smoothing
    want = np.where(t >= 0, -(q * logp).sum(axis=1), 0.0)
    np.testing.assert_allclose(loss, want, atol=1e-13)
    np.testing.assert_allclose(lse, scipy.special.logsumexp(x, axis=1), atol=1e-13)
    dloss = randn(R)
    dx = K.cross_entropy_backward(dloss, x, t, lse, label_smoothing=smoothing)
    assert np.all(dx[2] == 0)

    def f(xx):
        return K.cross_entropy_forward(xx, t, label_smoothing=smoothing)[0]

    directional_check(f, [dx], [x], dloss)


@pytest.mark.parametrize("fn", [K.cross_entropy_forward, K.cross_entropy_backward])
def test_cross_entropy_rejects_out_of_range_target_with_index_error(fn):
    """IndexError, as PyTorch's nll_loss and F.cross_entropy (the same type in both layers)."""
    x, t = randn(2, 3), np.array([0, 3])
    args = (x, t) if fn is K.cross_entropy_forward else (1.0, x, t, np.zeros(2))
    with pytest.raises(IndexError, match=rf"{fn.__name__}: target value 3 is out of range"):
        fn(*args)


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_soft_cross_entropy_matches_direct_formula_and_finite_differences(smoothing):
    """Probability targets (not normalized: sum q != 1 is allowed), both gradients."""
    R, V = 5, 7
    x, t = randn(2, R, V) * 3, rng.uniform(0, 1, (2, R, V))
    loss, lse = K.cross_entropy_soft_forward(x, t, smoothing)
    q = (1 - smoothing) * t + smoothing / V
    want = -(q * scipy.special.log_softmax(x, axis=-1)).sum(axis=-1)
    np.testing.assert_allclose(loss, want, atol=1e-13)
    np.testing.assert_allclose(lse, scipy.special.logsumexp(x, axis=-1), atol=1e-13)
    dloss = randn(2, R)
    dx, dt = K.cross_entropy_soft_backward(dloss, x, t, lse, smoothing, target_grad=True)
    assert K.cross_entropy_soft_backward(dloss, x, t, lse, smoothing)[1] is None

    def f(xx, tt):
        return K.cross_entropy_soft_forward(xx, tt, smoothing)[0]

    directional_check(f, [dx, dt], [x, t], dloss)


def test_soft_cross_entropy_checks_shapes_and_dtypes():
    with pytest.raises(ValueError, match=r"cross_entropy_soft_forward: target must have"):
        K.cross_entropy_soft_forward(randn(2, 3), randn(2, 4))
    with pytest.raises(TypeError, match="cross_entropy_soft_forward: target must be a float"):
        K.cross_entropy_soft_forward(randn(2, 3), np.ones((2, 3), np.int64))


# ---------------------------------------------------------------- norms
def test_layer_norm_matches_direct_formula_and_finite_differences():
    x, w, b, dy = randn(3, 4, 10) * 2 + 1, randn(10), randn(10), randn(3, 4, 10)
    y, mean, rstd = K.layer_norm_forward(x, w, b, 1e-5)
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    np.testing.assert_allclose(y, (x - mu) / np.sqrt(var + 1e-5) * w + b, atol=1e-13)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(var[..., 0] + 1e-5), atol=1e-13)
    dx, dw, db = K.layer_norm_backward(dy, x, mean, rstd, w)
    directional_check(
        lambda xx, ww, bb: K.layer_norm_forward(xx, ww, bb, 1e-5)[0], [dx, dw, db], [x, w, b], dy
    )


def test_layer_norm_fused_residual_matches_unfused():
    x, r, w, dy, ds = randn(6, 8), randn(6, 8), randn(8), randn(6, 8), randn(6, 8)
    y, mean, rstd, summed = K.layer_norm_forward(x, w, None, 1e-5, residual=r)
    np.testing.assert_array_equal(summed, x + r)
    y2, _, _ = K.layer_norm_forward(x + r, w, None, 1e-5)
    np.testing.assert_allclose(y, y2, atol=1e-14)
    dx, _, _ = K.layer_norm_backward(dy, summed, mean, rstd, w, dsummed=ds)
    dx2, _, _ = K.layer_norm_backward(dy, summed, mean, rstd, w)
    np.testing.assert_allclose(dx, dx2 + ds, atol=1e-14)


def test_rms_norm_matches_direct_formula_and_finite_differences():
    x, w, dy = randn(5, 12), randn(12), randn(5, 12)
    y, rstd = K.rms_norm_forward(x, w, 1e-6)
    np.testing.assert_allclose(
        y, x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6) * w, atol=1e-13
    )
    dx, dw = K.rms_norm_backward(dy, x, rstd, w)
    directional_check(lambda xx, ww: K.rms_norm_forward(xx, ww, 1e-6)[0], [dx, dw], [x, w], dy)


# ---------------------------------------------------------------- rope
@pytest.mark.parametrize("interleaved", [False, True])
def test_rope_is_complex_rotation_and_backward_is_transpose(interleaved):
    B, T, D = 2, 5, 8
    x, dy = randn(B, T, D), randn(B, T, D)
    theta = 10000.0 ** (-np.arange(D // 2) * 2 / D)
    angles = np.arange(T)[:, None] * theta  # [T, D/2]
    cos, sin = np.cos(angles), np.sin(angles)
    y = K.rope_forward(x, cos, sin, interleaved)
    if interleaved:
        z = x[..., 0::2] + 1j * x[..., 1::2]
    else:
        z = x[..., : D // 2] + 1j * x[..., D // 2 :]
    rotated = z * np.exp(1j * angles)
    want = np.empty_like(x)
    if interleaved:
        want[..., 0::2], want[..., 1::2] = rotated.real, rotated.imag
    else:
        want[..., : D // 2], want[..., D // 2 :] = rotated.real, rotated.imag
    np.testing.assert_allclose(y, want, atol=1e-14)
    dx = K.rope_backward(dy, cos, sin, interleaved)
    np.testing.assert_allclose(np.sum(dy * y), np.sum(dx * x), rtol=1e-13)  # <dy, Rx> = <R^T dy, x>
    np.testing.assert_allclose(K.rope_backward(y, cos, sin, interleaved), x, atol=1e-14)


def test_rope_broadcasts_per_sequence_tables():
    B, H, T, D = 2, 3, 4, 6
    x = randn(B, H, T, D)
    cos, sin = randn(B, 1, T, D // 2), randn(B, 1, T, D // 2)
    y = K.rope_forward(x, cos, sin)
    for b in range(B):
        np.testing.assert_allclose(y[b], K.rope_forward(x[b], cos[b, 0], sin[b, 0]), atol=1e-15)


# ---------------------------------------------------------------- glu
@pytest.mark.parametrize("act", ["silu", "gelu_tanh", "gelu"])
def test_glu_matches_direct_formula_and_finite_differences(act):
    x, dout = randn(4, 3, 10) * 2, randn(4, 3, 5)
    g, u = x[..., :5], x[..., 5:]
    if act == "silu":
        want = g / (1 + np.exp(-g)) * u
    elif act == "gelu_tanh":
        want = 0.5 * g * (1 + np.tanh(math.sqrt(2 / math.pi) * (g + 0.044715 * g**3))) * u
    else:
        want = 0.5 * g * (1 + scipy.special.erf(g / math.sqrt(2))) * u
    np.testing.assert_allclose(K.glu_forward(x, act), want, atol=1e-14)
    dx = K.glu_backward(dout, x, act)
    directional_check(lambda xx: K.glu_forward(xx, act), [dx], [x], dout)


def test_swiglu_and_geglu_names():
    x = randn(3, 8)
    np.testing.assert_array_equal(K.swiglu_forward(x), K.glu_forward(x, "silu"))
    np.testing.assert_array_equal(K.geglu_forward(x, "tanh"), K.glu_forward(x, "gelu_tanh"))
    np.testing.assert_array_equal(K.geglu_forward(x, "none"), K.glu_forward(x, "gelu"))


def test_geglu_kernel_defaults_to_the_exact_gelu_as_f_geglu():
    """kernels.geglu_* and F.geglu share one default (approximate="none", PyTorch's)."""
    import inspect

    import tinyllm
    import tinyllm.functional as F

    for fn in (K.geglu_forward, K.geglu_backward, F.geglu):
        assert inspect.signature(fn).parameters["approximate"].default == "none", fn
    x, dout = randn(3, 8), randn(3, 4)
    np.testing.assert_array_equal(K.geglu_forward(x), K.glu_forward(x, "gelu"))
    np.testing.assert_array_equal(K.geglu_backward(dout, x), K.glu_backward(dout, x, "gelu"))
    np.testing.assert_array_equal(F.geglu(tinyllm.tensor(x)).numpy(), K.geglu_forward(x))


# ---------------------------------------------------------------- adamw
def _adamw_loop(p, g, m, v, step, lr, b1, b2, eps, wd):
    """The textbook update, one element at a time, in float64."""
    p, m, v = p.copy(), m.copy(), v.copy()
    for i in np.ndindex(p.shape):
        p[i] *= 1 - lr * wd
        m[i] = b1 * m[i] + (1 - b1) * g[i]
        v[i] = b2 * v[i] + (1 - b2) * g[i] ** 2
        mhat = m[i] / (1 - b1**step)
        vhat = v[i] / (1 - b2**step)
        p[i] -= lr * mhat / (math.sqrt(vhat) + eps)
    return p, m, v


def test_adamw_matches_textbook_loop():
    p, g, m, v = randn(4, 5), randn(4, 5), randn(4, 5) * 0.1, rng.random((4, 5)) * 0.1
    arrays = [p.copy(), g, m.copy(), v.copy()]
    K.adamw_step(*arrays, step=7, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    # torch's denominator sqrt(v)/sqrt(bc2) + eps equals sqrt(vhat) + eps
    pw, mw, vw = _adamw_loop(p, g, m, v, 7, 1e-2, 0.9, 0.99, 1e-8, 0.1)
    np.testing.assert_allclose(arrays[0], pw, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(arrays[2], mw, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(arrays[3], vw, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("tier", ["reference", "numba"])
def test_adamw_matches_torch(dtype, tier):
    torch = pytest.importorskip("torch")
    shape = (6, 7)
    p0 = randn(*shape).astype(dtype)
    grads = [randn(*shape).astype(dtype) for _ in range(3)]
    tp = torch.tensor(p0, requires_grad=True)
    opt = torch.optim.AdamW([tp], lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    p, m, v = p0.copy(), np.zeros(shape, dtype), np.zeros(shape, dtype)
    for step, g in enumerate(grads, start=1):
        tp.grad = torch.tensor(g)
        opt.step()
        with K.use(tier):
            K.adamw_step(p, g, m, v, step=step, lr=3e-3, betas=(0.9, 0.95), eps=1e-8,
                         weight_decay=0.1)  # fmt: skip
        assert K.last_tier("adamw_step") == tier
    state = opt.state[tp]
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(m, state["exp_avg"].numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(v, state["exp_avg_sq"].numpy(), rtol=tol, atol=tol)


# ---------------------------------------------------------------- naive attention
def _attention_loop(q, k, v, causal, keep, scale):
    """Per (b, h, i) softmax attention written with no shared code."""
    B, H, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    o = np.zeros_like(q)
    lse = np.full((B, H, Tq), -np.inf)
    for b in range(B):
        for h in range(H):
            kv = h // (H // Hkv)
            for i in range(Tq):
                js = [
                    j for j in range(Tk) if (not causal or j <= i) and (keep is None or keep[b, j])
                ]
                if not js:
                    continue
                s = np.array([scale * q[b, h, i] @ k[b, kv, j] for j in js])
                lse[b, h, i] = scipy.special.logsumexp(s)
                o[b, h, i] = np.exp(s - lse[b, h, i]) @ v[b, kv, js]
    return o, lse


@pytest.mark.parametrize("causal", [False, True])
def test_naive_attention_matches_loop_and_finite_differences(causal):
    B, H, Hkv, Tq, Tk, D = 2, 4, 2, 5, 7, 3
    q, k, v = randn(B, H, Tq, D), randn(B, Hkv, Tk, D), randn(B, Hkv, Tk, D)
    keep = rng.random((B, Tk)) > 0.3
    keep[1, :] = False  # batch 1: every key masked
    o, lse = K.naive_attention_forward(q, k, v, causal=causal, key_padding_mask=keep)
    o2, lse2 = _attention_loop(q, k, v, causal, keep, 1 / math.sqrt(D))
    np.testing.assert_allclose(o, o2, atol=1e-14)
    np.testing.assert_array_equal(np.isinf(lse), np.isinf(lse2))
    np.testing.assert_allclose(lse[np.isfinite(lse)], lse2[np.isfinite(lse2)], atol=1e-14)
    assert np.all(o[1] == 0)
    do = randn(*q.shape)
    grads = K.naive_attention_backward(do, q, k, v, o, lse, causal=causal, key_padding_mask=keep)
    assert all(np.all(g[1] == 0) for g in grads)

    def f(qq, kk, vv):
        return K.naive_attention_forward(qq, kk, vv, causal=causal, key_padding_mask=keep)[0]

    directional_check(f, list(grads), [q, k, v], do)


def test_kernel_modules_declare_their_bodies_where_they_build_them():
    """rope.py and attention.py call dispatch.declare on their bodies dicts themselves (as
    adamw.py, softmax.py ... do); kernels/__init__.py only re-exports, declaring nothing."""
    import ast
    from pathlib import Path

    from tinyllm.kernels import adamw, dispatch

    folder = Path(K.__file__).resolve().parent

    def declared_in(name):
        ops = set()
        for node in ast.walk(ast.parse((folder / name).read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "declare":
                ops |= {a.value for a in node.args if isinstance(a, ast.Constant)}
        return ops

    assert declared_in("rope.py") == {"rope_forward", "rope_backward"}
    assert declared_in("attention.py") == {"attention_forward", "attention_backward"}
    init = ast.parse((folder / "__init__.py").read_text())
    assert not [n for n in init.body if isinstance(n, (ast.For, ast.While, ast.Expr))
                and not isinstance(getattr(n, "value", None), ast.Constant)]  # fmt: skip
    assert not declared_in("__init__.py")
    for op in ("rope_forward", "rope_backward", "attention_forward", "attention_backward"):
        assert dispatch.kernel_tiers(op) == ("reference", "numba", "cuda")
    assert K.adamw_step_multi is adamw.adamw_step_multi and "adamw_step_multi" in K.__all__
