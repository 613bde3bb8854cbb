"""Attention and positional encodings, beyond the generic registry tests.

scaled_dot_product_attention against a naive loop over (batch, head, query) in NumPy; GQA/MQA
against MHA with repeated kv heads (values and gradients); masks, causal alignment, sliding
window, fully masked rows, dropout reproducibility, what backward keeps, and bad inputs.
RoPE: layout permutation, relative-position property, offset, scaling, inverse rotation.
ALiBi slopes, T5 buckets and sinusoidal tables against values worked out by hand.
"""

import math

import numpy as np
import pytest
import scipy.special

import tinyllm
import tinyllm.functional as F

SDPA = F.scaled_dot_product_attention


def _t(array, grad=False):
    return tinyllm.tensor(np.asarray(array, dtype=np.float64), requires_grad=grad)


def naive_attention(q, k, v, mask=None, bias=None, causal=False, window=None, scale=None):
    """One (batch, head, query) at a time: visible keys, their scores, softmax, weighted sum."""
    B, H, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    group = H // Hkv
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    shape = (B, H, Tq, Tk)
    mask = None if mask is None else np.broadcast_to(mask, shape)
    bias = None if bias is None else np.broadcast_to(bias, shape)
    out = np.zeros((B, H, Tq, v.shape[-1]))
    for b in range(B):
        for h in range(H):
            for i in range(Tq):
                keys, scores = [], []
                for j in range(Tk):
                    if (causal or window is not None) and j > i:
                        continue
                    if window is not None and j <= i - window:
                        continue
                    if mask is not None and not mask[b, h, i, j]:
                        continue
                    s = scale * float(q[b, h, i] @ k[b, h // group, j])
                    if bias is not None:
                        s += bias[b, h, i, j]
                    if s == -np.inf:
                        continue
                    keys.append(j)
                    scores.append(s)
                if not keys:
                    continue  # fully masked row: zeros
                w = np.exp(np.array(scores) - max(scores))
                w /= w.sum()
                out[b, h, i] = sum(wj * v[b, h // group, j] for wj, j in zip(w, keys))
    return out


def _qkv(rng, B=2, H=2, Hkv=None, Tq=4, Tk=4, D=4, Dv=None):
    Hkv = H if Hkv is None else Hkv
    return (
        rng.standard_normal((B, H, Tq, D)),
        rng.standard_normal((B, Hkv, Tk, D)),
        rng.standard_normal((B, Hkv, Tk, Dv or D)),
    )


# ---------------------------------------------------------------- SDPA vs naive
CASES = {
    "plain Tq<Tk": dict(Tq=3, Tk=5),
    "causal square": dict(Tq=5, Tk=5, causal=True),
    "causal Tq<Tk": dict(Tq=3, Tk=6, causal=True),
    "causal Tq>Tk": dict(Tq=6, Tk=3, causal=True),
    "bool mask [B,1,Tq,Tk]": dict(Tq=4, Tk=5, mask="bool4"),
    "bool mask [Tk] (padding)": dict(Tq=4, Tk=5, mask="bool1"),
    "additive mask [H,Tq,Tk]": dict(Tq=4, Tk=5, mask="float3"),
    "window 1": dict(Tq=5, Tk=5, window=1),
    "window 3": dict(Tq=6, Tk=6, window=3),
    "window 2 Tq<Tk": dict(Tq=3, Tk=6, window=2),
    "window + bool mask": dict(Tq=5, Tk=5, window=3, mask="bool4"),
    "window + additive mask": dict(Tq=5, Tk=5, window=2, mask="float3"),
    "scale and Dv": dict(Tq=3, Tk=4, scale=0.3, Dv=3),
    "GQA H=4 Hkv=2 causal": dict(H=4, Hkv=2, Tq=4, Tk=4, causal=True),
    "MQA H=3 Hkv=1 mask": dict(H=3, Hkv=1, Tq=3, Tk=5, mask="bool4"),
}


def _case_inputs(rng, c):
    q, k, v = _qkv(rng, H=c.get("H", 2), Hkv=c.get("Hkv"), Tq=c["Tq"], Tk=c["Tk"], Dv=c.get("Dv"))
    B, H, Tq, Tk = q.shape[0], q.shape[1], c["Tq"], c["Tk"]
    mask = bias = None
    kind = c.get("mask")
    if kind == "bool4":
        mask = rng.random((B, 1, Tq, Tk)) > 0.3
    elif kind == "bool1":
        mask = np.array([True, True, False, True, False])
    elif kind == "float3":
        bias = rng.standard_normal((H, Tq, Tk))
        bias[0, 1, 2] = -np.inf
    return q, k, v, mask, bias


@pytest.mark.parametrize("name", list(CASES))
def test_sdpa_matches_naive_attention(name):
    c = CASES[name]
    rng = np.random.default_rng(len(name))
    q, k, v, mask, bias = _case_inputs(rng, c)
    attn_mask = mask if mask is not None else bias
    out = SDPA(
        _t(q),
        _t(k),
        _t(v),
        attn_mask=None if attn_mask is None else tinyllm.tensor(attn_mask),
        is_causal=c.get("causal", False),
        scale=c.get("scale"),
        enable_gqa="Hkv" in c,
        window=c.get("window"),
    )
    expected = naive_attention(
        q, k, v, mask, bias, c.get("causal", False), c.get("window"), c.get("scale")
    )
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_sdpa_accepts_unbatched_and_extra_leading_dims():
    rng = np.random.default_rng(0)
    q, k, v = _qkv(rng, B=2, H=2, Tq=3, Tk=4)
    full = SDPA(_t(q), _t(k), _t(v), is_causal=True).numpy()
    single = SDPA(_t(q[1, 0]), _t(k[1, 0]), _t(v[1, 0]), is_causal=True).numpy()  # [T, D]
    np.testing.assert_allclose(single, full[1, 0], rtol=1e-13, atol=1e-13)
    heads = SDPA(_t(q[1]), _t(k[1]), _t(v[1]), is_causal=True).numpy()  # [H, T, D]
    np.testing.assert_allclose(heads, full[1], rtol=1e-13, atol=1e-13)
    five = SDPA(_t(q[None]), _t(k[None]), _t(v[None]), is_causal=True).numpy()  # [1, B, H, T, D]
    np.testing.assert_allclose(five[0], full, rtol=1e-13, atol=1e-13)


def test_causal_mask_is_top_left_aligned():
    """is_causal = tril(ones(Tq, Tk)): query 0 sees only key 0, even when Tq < Tk."""
    rng = np.random.default_rng(1)
    q, k, v = _qkv(rng, B=1, H=1, Tq=2, Tk=4)
    out = SDPA(_t(q), _t(k), _t(v), is_causal=True).numpy()
    np.testing.assert_allclose(out[0, 0, 0], v[0, 0, 0], rtol=1e-13)
    tril = np.tril(np.ones((2, 4), dtype=bool))
    masked = SDPA(_t(q), _t(k), _t(v), attn_mask=tinyllm.tensor(tril)).numpy()
    np.testing.assert_allclose(out, masked, rtol=1e-13)


@pytest.mark.parametrize("window", [1, 2, 3, 7])
def test_sliding_window_row_counts(window):
    """Equal scores (q = 0): row i averages exactly min(i + 1, W) keys, the last ones."""
    T = 6
    q = np.zeros((1, 1, T, 4))
    k = np.random.default_rng(2).standard_normal((1, 1, T, 4))
    v = np.eye(T)[None, None]  # value j = one-hot(j): the output row is the weight vector
    weights = SDPA(_t(q), _t(k), _t(v), window=window).numpy()[0, 0]
    for i in range(T):
        visible = np.flatnonzero(weights[i] > 0)
        n = min(i + 1, window)
        assert list(visible) == list(range(i - n + 1, i + 1))
        np.testing.assert_allclose(weights[i, visible], 1.0 / n, rtol=1e-13)


# ---------------------------------------------------------------- GQA / MQA
@pytest.mark.parametrize("H,Hkv", [(4, 2), (6, 3), (4, 1), (3, 1)])
def test_gqa_equals_mha_with_repeated_kv_heads(H, Hkv):
    rng = np.random.default_rng(H * 10 + Hkv)
    q, k, v = _qkv(rng, B=2, H=H, Hkv=Hkv, Tq=3, Tk=5)
    mask = rng.random((2, 1, 3, 5)) > 0.3
    dout = rng.standard_normal((2, H, 3, 4))
    group = H // Hkv

    q1, k1, v1 = _t(q, True), _t(k, True), _t(v, True)
    out = SDPA(q1, k1, v1, attn_mask=tinyllm.tensor(mask), enable_gqa=True)
    out.backward(dout)

    # MHA on explicitly repeated heads: query head h uses kv head h // group
    q2 = _t(q, True)
    k2, v2 = _t(np.repeat(k, group, axis=1), True), _t(np.repeat(v, group, axis=1), True)
    ref = SDPA(q2, k2, v2, attn_mask=tinyllm.tensor(mask))
    ref.backward(dout)

    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(q1.grad.numpy(), q2.grad.numpy(), rtol=1e-11, atol=1e-12)
    for grouped, repeated in ((k1, k2), (v1, v2)):
        summed = repeated.grad.numpy().reshape(2, Hkv, group, 5, 4).sum(axis=2)
        np.testing.assert_allclose(grouped.grad.numpy(), summed, rtol=1e-11, atol=1e-12)


def test_gqa_gradcheck():
    rng = np.random.default_rng(3)
    q, k, v = _qkv(rng, B=1, H=4, Hkv=2, Tq=3, Tk=4)
    args = [_t(q, True), _t(k, True), _t(v, True)]
    assert tinyllm.gradcheck(lambda a, b, c: SDPA(a, b, c, enable_gqa=True, window=2), args)


# ---------------------------------------------------------------- fully masked rows
def _fully_masked_setups(rng):
    q, k, v = _qkv(rng, B=1, H=2, Tq=5, Tk=4)
    mask = rng.random((1, 2, 5, 4)) > 0.4
    mask[..., 0] = True
    mask[0, 0, 2] = False
    mask[0, 1, 4] = False
    bias = rng.standard_normal((1, 1, 5, 4))
    bias[..., 1, :] = -np.inf
    return [
        ((q, k, v), {"attn_mask": mask}, [(0, 0, 2), (0, 1, 4)]),
        ((q, k, v), {"attn_mask": bias}, [(0, 0, 1), (0, 1, 1)]),
        # window with Tq > Tk: rows i >= Tk + W - 1 have no key in (i - W, i]
        ((q, k[:, :, :2], v[:, :, :2]), {"window": 2}, [(0, h, i) for h in (0, 1) for i in (3, 4)]),
    ]


@pytest.mark.parametrize("setup", [0, 1, 2])
def test_fully_masked_rows_give_zeros_and_zero_gradients(setup):
    rng = np.random.default_rng(4)
    (q, k, v), kwargs, rows = _fully_masked_setups(rng)[setup]
    if "attn_mask" in kwargs:
        kwargs = {"attn_mask": tinyllm.tensor(kwargs["attn_mask"])}
    args = [_t(q, True), _t(k, True), _t(v, True)]
    with np.errstate(divide="raise", invalid="raise", over="raise"):
        out = SDPA(*args, **kwargs)
        dout = rng.standard_normal(out.shape)
        out.backward(dout)
    for a in [out.detach()] + [a.grad for a in args]:
        assert np.isfinite(a.numpy()).all()
    for b, h, i in rows:
        np.testing.assert_array_equal(out.detach().numpy()[b, h, i], 0.0)
        np.testing.assert_array_equal(args[0].grad.numpy()[b, h, i], 0.0)
    # the other rows still match the naive loop (and the gradient is right everywhere)
    mask = kwargs.get("attn_mask")
    mask = None if mask is None else mask.numpy()
    expected = naive_attention(
        q,
        k,
        v,
        mask=mask if mask is not None and mask.dtype == bool else None,
        bias=mask if mask is not None and mask.dtype != bool else None,
        window=kwargs.get("window"),
    )
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-12, atol=1e-12)
    fresh = [_t(q, True), _t(k, True), _t(v, True)]
    assert tinyllm.gradcheck(lambda a, b, c: SDPA(a, b, c, **kwargs), fresh)


def test_all_rows_masked_float32_no_nan():
    q = tinyllm.randn(1, 1, 3, 4, requires_grad=True)
    k = tinyllm.randn(1, 1, 3, 4, requires_grad=True)
    v = tinyllm.randn(1, 1, 3, 4, requires_grad=True)
    mask = tinyllm.tensor(np.zeros((3, 3), dtype=bool))
    with np.errstate(divide="raise", invalid="raise", over="raise"):
        out = SDPA(q, k, v, attn_mask=mask)
        out.backward(np.ones(out.shape, dtype=np.float32))
    assert out.dtype == np.float32
    for a in (out.detach(), q.grad, k.grad, v.grad):
        np.testing.assert_array_equal(a.numpy(), 0.0)


# ---------------------------------------------------------------- dropout
def _run(seed, p, rng_seed=5):
    rng = np.random.default_rng(rng_seed)
    q, k, v = _qkv(rng, B=1, H=2, Tq=3, Tk=4)
    args = [_t(q, True), _t(k, True), _t(v, True)]
    tinyllm.manual_seed(seed)
    out = SDPA(*args, dropout_p=p, is_causal=True)
    out.backward(rng.standard_normal(out.shape))
    return out.detach().numpy(), [a.grad.numpy() for a in args], (q, k, v)


def test_dropout_is_deterministic_under_the_same_seed():
    out1, grads1, _ = _run(7, 0.4)
    out2, grads2, _ = _run(7, 0.4)
    out3, _, _ = _run(8, 0.4)
    np.testing.assert_array_equal(out1, out2)
    for g1, g2 in zip(grads1, grads2):
        np.testing.assert_array_equal(g1, g2)
    assert not np.allclose(out1, out3)


def test_dropout_mask_is_drawn_from_the_seeded_generator():
    """keep = generator.random([B, H, Tq, Tk]) >= p, kept probabilities scaled by 1/(1-p)."""
    p = 0.4
    out, _, (q, k, v) = _run(11, p)
    keep = np.random.default_rng(11).random((1, 2, 3, 4)) >= p
    s = np.einsum("bhid,bhjd->bhij", q, k) / 2.0 + np.where(np.tri(3, 4, dtype=bool), 0, -np.inf)
    probs = scipy.special.softmax(s, axis=-1) * keep / (1 - p)
    np.testing.assert_allclose(out, probs @ v, rtol=1e-12, atol=1e-12)


def test_dropout_zero_and_one():
    out0, _, _ = _run(3, 0.0)
    plain, _, _ = _run(99, 0.0)
    np.testing.assert_array_equal(out0, plain)
    out1, grads1, _ = _run(3, 1.0)
    np.testing.assert_array_equal(out1, 0.0)
    for g in grads1:
        np.testing.assert_array_equal(g, 0.0)


def test_dropout_gradcheck_with_fixed_seed():
    rng = np.random.default_rng(6)
    q, k, v = _qkv(rng, B=1, H=2, Hkv=1, Tq=3, Tk=4)

    def fn(a, b, c):
        tinyllm.manual_seed(21)
        return SDPA(a, b, c, dropout_p=0.5, enable_gqa=True)

    assert tinyllm.gradcheck(fn, [_t(q, True), _t(k, True), _t(v, True)])


# ---------------------------------------------------------------- what backward keeps
def test_masked_path_saves_lse_statistics_not_probabilities():
    rng = np.random.default_rng(7)
    q, k, v = _qkv(rng, B=2, H=4, Hkv=2, Tq=3, Tk=5)
    visible = np.tri(3, 5, dtype=bool)  # the causal mask, given as a mask: the general path
    mask = tinyllm.tensor(visible)
    out = SDPA(_t(q, True), _t(k, True), _t(v, True), attn_mask=mask, enable_gqa=True)
    saved = out.grad_fn.saved_arrays
    floats = [a for a in saved if a is not None and a.dtype.kind == "f"]
    assert all(a.shape[-2:] != (3, 5) for a in floats), "a [Tq, Tk] float array was saved"
    lse = saved[4]
    assert lse.shape == (2, 4, 3)
    s = np.einsum("bhid,bhjd->bhij", q, np.repeat(k, 2, axis=1)) / 2.0
    s = np.where(visible, s, -np.inf)
    np.testing.assert_allclose(lse, scipy.special.logsumexp(s, axis=-1), rtol=1e-13)


def test_causal_path_saves_the_probabilities():
    """Without a mask other than causal, short sequences keep P (cheaper than recomputing)."""
    rng = np.random.default_rng(7)
    q, k, v = _qkv(rng, B=2, H=4, Hkv=2, Tq=3, Tk=5)
    out = SDPA(_t(q, True), _t(k, True), _t(v, True), enable_gqa=True, is_causal=True)
    p = out.grad_fn.saved_arrays[3]
    assert p.shape == (2, 2, 2, 3, 5)  # [B, Hkv, G, Tq, Tk]
    s = np.einsum("bhid,bhjd->bhij", q, np.repeat(k, 2, axis=1)) / 2.0
    s = np.where(np.tri(3, 5, dtype=bool), s, -np.inf)
    np.testing.assert_allclose(p.reshape(2, 4, 3, 5), scipy.special.softmax(s, axis=-1), rtol=1e-13)


def test_float16_inputs_compute_in_float32():
    rng = np.random.default_rng(9)
    q, k, v = _qkv(rng, B=1, H=2, Tq=3, Tk=4)
    args = [tinyllm.tensor(a.astype(np.float16), requires_grad=True) for a in (q, k, v)]
    out = SDPA(*args, is_causal=True)
    out.backward(np.ones(out.shape, dtype=np.float16))
    assert out.dtype == np.float16 and all(a.grad.dtype == np.float16 for a in args)
    expected = naive_attention(q, k, v, causal=True)
    np.testing.assert_allclose(out.detach().numpy(), expected, atol=5e-3)


# ---------------------------------------------------------------- bad inputs
def _bad(**shapes):
    rng = np.random.default_rng(0)
    return [_t(rng.standard_normal(shapes[n])) for n in ("q", "k", "v")]


@pytest.mark.parametrize(
    "shapes,kwargs,error,words",
    [
        (dict(q=(1, 2, 3, 4), k=(1, 2, 3, 5), v=(1, 2, 3, 5)), {}, ValueError, ["head size", "(1, 2, 3, 5)"]),
        (dict(q=(1, 3, 3, 4), k=(1, 2, 3, 4), v=(1, 2, 3, 4)), {"enable_gqa": True}, ValueError, ["divisible", "(1, 3, 3, 4)"]),
        (dict(q=(1, 4, 3, 4), k=(1, 2, 3, 4), v=(1, 2, 3, 4)), {}, ValueError, ["enable_gqa", "(1, 2, 3, 4)"]),
        (dict(q=(1, 2, 3, 4), k=(1, 2, 3, 4), v=(1, 2, 5, 4)), {}, ValueError, ["key and value", "(1, 2, 5, 4)"]),
        (dict(q=(2, 2, 3, 4), k=(1, 2, 3, 4), v=(1, 2, 3, 4)), {}, ValueError, ["batch", "(2, 2, 3, 4)"]),
        (dict(q=(2, 3, 4), k=(1, 2, 3, 4), v=(1, 2, 3, 4)), {}, ValueError, ["number of dims"]),
        (dict(q=(1, 2, 3, 4), k=(1, 2, 5, 4), v=(1, 2, 5, 4)), {"attn_mask": np.ones((3, 4), bool)}, ValueError, ["attn_mask", "(3, 4)", "(1, 2, 3, 5)"]),
        (dict(q=(1, 2, 3, 4), k=(1, 2, 5, 4), v=(1, 2, 5, 4)), {"attn_mask": np.ones((3, 3, 3, 5), bool)}, ValueError, ["(3, 3, 3, 5)"]),
        (dict(q=(1, 2, 3, 4), k=(1, 2, 3, 4), v=(1, 2, 3, 4)), {"attn_mask": np.ones((3, 3), np.int64)}, TypeError, ["attn_mask", "int64"]),
        (dict(q=(1, 2, 3, 4), k=(1, 2, 3, 4), v=(1, 2, 3, 4)), {"attn_mask": np.ones((3, 3), bool), "is_causal": True}, ValueError, ["is_causal"]),
        (dict(q=(1, 2, 3, 4), k=(1, 2, 3, 4), v=(1, 2, 3, 4)), {"window": 0}, ValueError, ["window"]),
        (dict(q=(1, 2, 3, 4), k=(1, 2, 3, 4), v=(1, 2, 3, 4)), {"dropout_p": 1.5}, ValueError, ["dropout_p"]),
        (dict(q=(4,), k=(4,), v=(4,)), {}, ValueError, ["at least 2 dims"]),
    ],
)  # fmt: skip
def test_bad_inputs_raise_naming_op_and_shapes(shapes, kwargs, error, words):
    q, k, v = _bad(**shapes)
    if "attn_mask" in kwargs:
        kwargs = dict(kwargs, attn_mask=tinyllm.tensor(kwargs["attn_mask"]))
    with pytest.raises(error) as info:
        SDPA(q, k, v, **kwargs)
    message = str(info.value)
    assert "scaled_dot_product_attention" in message
    for word in words:
        assert word in message, message


# ---------------------------------------------------------------- optional PyTorch oracle
TORCH_CASES = {
    "causal": dict(is_causal=True),
    "causal Tq<Tk (top-left)": dict(Tq=3, Tk=6, is_causal=True),
    "causal Tq>Tk (top-left)": dict(Tq=6, Tk=3, is_causal=True),
    "bool mask": dict(mask="bool"),
    "bool mask, fully masked row": dict(mask="bool, dead row"),
    "additive mask": dict(mask="float"),
    "gqa": dict(H=4, Hkv=2, is_causal=True, enable_gqa=True),
    "mqa with mask": dict(H=3, Hkv=1, mask="bool", enable_gqa=True),
    "scale, Dv != D": dict(scale=0.3, Dv=3),
}


@pytest.mark.parametrize("case", list(TORCH_CASES))
def test_sdpa_matches_pytorch(case):
    """Values and gradients against torch.nn.functional.scaled_dot_product_attention."""
    torch = pytest.importorskip("torch")
    c = dict(TORCH_CASES[case])
    rng = np.random.default_rng(10)
    H, Tq, Tk = c.pop("H", 2), c.pop("Tq", 4), c.pop("Tk", 5)
    q, k, v = _qkv(rng, B=2, H=H, Hkv=c.pop("Hkv", H), Tq=Tq, Tk=Tk, Dv=c.pop("Dv", None))
    mask = c.pop("mask", None)
    if mask in ("bool", "bool, dead row"):
        dead = mask != "bool"
        mask = rng.random((2, 1, Tq, Tk)) > 0.3
        mask[..., 0] = True
        if dead:
            mask[1, 0, 2] = False
    elif mask == "float":
        mask = rng.standard_normal((1, H, Tq, Tk))
    dout = rng.standard_normal(q.shape[:-1] + v.shape[-1:])
    ours = [_t(a, True) for a in (q, k, v)]
    out = SDPA(*ours, attn_mask=None if mask is None else tinyllm.tensor(mask), **c)
    out.backward(dout)
    theirs = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    try:
        ref = torch.nn.functional.scaled_dot_product_attention(
            *theirs, attn_mask=None if mask is None else torch.tensor(mask), **c
        )
    except TypeError:
        pytest.skip("this PyTorch has no enable_gqa")
    ref.backward(torch.tensor(dout))
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-9, atol=1e-11)


# ---------------------------------------------------------------- RoPE
def _rope(x, **kwargs):
    return F.rotary_embedding(_t(x), **kwargs).numpy()


def test_rope_layouts_agree_after_the_pair_permutation():
    """P = [0, 2, 4, ..., 1, 3, 5, ...]: interleaved(x)[..., P] == half(x[..., P])."""
    D = 8
    x = np.random.default_rng(11).standard_normal((2, 5, D))
    perm = np.concatenate([np.arange(0, D, 2), np.arange(1, D, 2)])
    interleaved = _rope(x, layout="interleaved", offset=3)
    half = _rope(x[..., perm], layout="half", offset=3)
    np.testing.assert_allclose(interleaved[..., perm], half, rtol=1e-13, atol=1e-14)
    assert not np.allclose(interleaved, _rope(x, layout="half", offset=3))


@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("shift", [1, 7, 10_000])
def test_rope_scores_depend_only_on_relative_position(layout, shift):
    rng = np.random.default_rng(12)
    T, D = 6, 8
    q, k = rng.standard_normal((T, D)), rng.standard_normal((T, D))
    pos = np.arange(T)
    scores = _rope(q, positions=pos, layout=layout) @ _rope(k, positions=pos, layout=layout).T
    shifted = (
        _rope(q, positions=pos + shift, layout=layout)
        @ _rope(k, positions=pos + shift, layout=layout).T
    )
    np.testing.assert_allclose(shifted, scores, rtol=1e-9, atol=1e-9)
    # one query vector and one key vector at every position: score(m, n) = f(m - n)
    qs, ks = np.tile(q[0], (T, 1)), np.tile(k[0], (T, 1))
    s = _rope(qs, layout=layout) @ _rope(ks, layout=layout).T
    np.testing.assert_allclose(s[1:, 1:], s[:-1, :-1], rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_rope_offset_equals_the_tail_of_a_longer_sequence(layout):
    x = np.random.default_rng(13).standard_normal((2, 3, 9, 6))
    full = _rope(x, layout=layout)
    np.testing.assert_allclose(
        _rope(x[..., 4:7, :], layout=layout, offset=4), full[..., 4:7, :], rtol=1e-13, atol=1e-14
    )
    np.testing.assert_allclose(
        _rope(x[..., 4:7, :], layout=layout, positions=np.arange(4, 7)), full[..., 4:7, :]
    )


def test_rope_linear_scaling_divides_positions():
    x = np.random.default_rng(14).standard_normal((5, 8))
    f = 4.0
    scaled = _rope(x, scaling={"type": "linear", "factor": f}, offset=2)
    np.testing.assert_allclose(scaled, _rope(x, positions=(np.arange(5) + 2) / f), rtol=1e-12)

    class Config:  # an object with attributes works like the dict
        rope_type, factor = "linear", f

    np.testing.assert_allclose(_rope(x, scaling=Config(), offset=2), scaled, rtol=1e-15)


def test_rope_ntk_scaling_frequencies():
    """base' = base f^(D/(D-2)): theta_0 unchanged, the lowest frequency divided by f."""
    D, f = 128, 2.0
    plain = F.rope_frequencies(D, dtype="float64").numpy()
    ntk = F.rope_frequencies(D, scaling={"type": "ntk", "factor": f}, dtype="float64").numpy()
    assert ntk[0] == plain[0] == 1.0
    np.testing.assert_allclose(ntk[-1], plain[-1] / f, rtol=1e-13)
    # base' = 10000 * 2^(128/126) = 20221.3 (research notes): theta_1 = base'^(-2/128)
    np.testing.assert_allclose(ntk[1], 20221.3 ** (-2 / 128), rtol=1e-6)
    cos, sin = F.rope_cos_sin(4, D, scaling={"type": "ntk", "factor": f}, dtype="float64")
    np.testing.assert_allclose(cos.numpy(), np.cos(np.outer(np.arange(4), ntk)), rtol=1e-13)
    np.testing.assert_allclose(sin.numpy(), np.sin(np.outer(np.arange(4), ntk)), atol=1e-15)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_rope_backward_is_the_inverse_rotation(layout):
    rng = np.random.default_rng(15)
    x = _t(rng.standard_normal((2, 5, 6)), True)
    pos = np.array([3, 0, 8, 1, 2])
    out = F.rotary_embedding(x, pos, layout=layout)
    g = rng.standard_normal(out.shape)
    out.backward(g)
    np.testing.assert_allclose(x.grad.numpy(), _rope(g, positions=-pos, layout=layout), rtol=1e-13)
    # a rotation keeps norms, and position 0 is the identity
    np.testing.assert_allclose(
        np.linalg.norm(out.detach().numpy(), axis=-1), np.linalg.norm(x.detach().numpy(), axis=-1)
    )
    x0 = x.detach().numpy()[:, :1]
    np.testing.assert_array_equal(_rope(x0, layout=layout), x0)


def test_rope_half_layout_matches_rotate_half_formula():
    """HF Llama: x cos + rotate_half(x) sin with cos = concat(c, c), rotate_half = (-x2, x1)."""
    T, D = 4, 6
    x = np.random.default_rng(16).standard_normal((T, D))
    ang = np.outer(np.arange(T), 10000.0 ** (-np.arange(0, D, 2) / D))
    cos, sin = np.concatenate([np.cos(ang)] * 2, -1), np.concatenate([np.sin(ang)] * 2, -1)
    rotate_half = np.concatenate([-x[:, D // 2 :], x[:, : D // 2]], -1)
    np.testing.assert_allclose(_rope(x), x * cos + rotate_half * sin, rtol=1e-13, atol=1e-15)


def test_rope_float32_large_positions():
    x = np.random.default_rng(17).standard_normal((3, 8))
    out32 = F.rotary_embedding(tinyllm.tensor(x.astype(np.float32)), offset=50_000)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32.numpy(), _rope(x, offset=50_000), atol=1e-5)


@pytest.mark.parametrize(
    "shape,kwargs,words",
    [
        ((3, 5), {}, ["even", "(3, 5)"]),
        ((3, 4), {"layout": "neox"}, ["layout"]),
        ((2, 3, 4), {"positions": np.arange(4)}, ["positions", "(4,)", "(2, 3)"]),
        ((3, 4), {"scaling": {"type": "yarn", "factor": 2.0}}, ["scaling"]),
        ((3, 4), {"scaling": {"type": "linear", "factor": 0.0}}, ["factor"]),
        ((4,), {}, ["[..., T, D]"]),
    ],
)
def test_rope_bad_inputs(shape, kwargs, words):
    with pytest.raises(ValueError) as info:
        F.rotary_embedding(_t(np.zeros(shape)), **kwargs)
    assert "rotary_embedding" in str(info.value)
    for word in words:
        assert word in str(info.value)


# ---------------------------------------------------------------- ALiBi
def test_alibi_slopes_eight_heads():
    # power of two: start = ratio = 2^(-8/8) = 1/2, so m_h = 2^-h, h = 1..8
    expected = [1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32, 1 / 64, 1 / 128, 1 / 256]
    np.testing.assert_array_equal(F.alibi_slopes(8, dtype="float64").numpy(), expected)


def test_alibi_slopes_six_heads():
    # not a power of two: the 4 slopes of 4 heads (2^(-8h/4) = 2^-2h: 1/4, 1/16, 1/64, 1/256),
    # then every other slope of 8 heads (1/2, 1/4, 1/8, ... -> 1/2, 1/8, 1/32, ...), first 6 - 4
    expected = [1 / 4, 1 / 16, 1 / 64, 1 / 256, 1 / 2, 1 / 8]
    np.testing.assert_array_equal(F.alibi_slopes(6, dtype="float64").numpy(), expected)


def test_alibi_slopes_twelve_heads():
    # 8 slopes 2^-1..2^-8, then 16-head slopes 2^(-h/2) at h = 1, 3, 5, 7
    expected = [2.0**-h for h in range(1, 9)] + [2.0 ** (-h / 2) for h in (1, 3, 5, 7)]
    np.testing.assert_allclose(F.alibi_slopes(12, dtype="float64").numpy(), expected, rtol=1e-15)


def test_alibi_bias_values_and_causal_shift_invariance():
    bias = F.alibi_bias(2, 4, dtype="float64").numpy()  # slopes 2^-4, 2^-8
    assert bias.shape == (2, 4, 4)
    assert bias[0, 3, 0] == -3 / 16 and bias[1, 2, 1] == -1 / 256 and bias[0, 2, 2] == 0.0
    cached = F.alibi_bias(2, 2, 5, offset=3, dtype="float64").numpy()  # last 2 of 5 tokens
    np.testing.assert_array_equal(cached, F.alibi_bias(2, 5, dtype="float64").numpy()[:, 3:])
    # causal rows: softmax(S - m (i - j)) == softmax(S + m j) (a row constant cancels)
    rng = np.random.default_rng(18)
    q, k, v = _qkv(rng, B=1, H=2, Tq=4, Tk=4)
    causal = np.where(np.tri(4, dtype=bool), 0.0, -np.inf)
    slopes = F.alibi_slopes(2, dtype="float64").numpy()
    fairseq = slopes[:, None, None] * np.arange(4)[None, None, :]
    a = SDPA(_t(q), _t(k), _t(v), attn_mask=_t(bias + causal)).numpy()
    b = SDPA(_t(q), _t(k), _t(v), attn_mask=_t(fairseq + causal)).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------- T5 relative buckets
def test_relative_position_bucket_bidirectional():
    # 32 buckets -> 16 per sign (positive offsets add 16), max_exact = 8,
    # n >= 8: 8 + floor(ln(n / 8) / ln(128 / 8) * 8), capped at 15
    #   n=9: ln(1.125)/ln(16)*8 = 0.34 -> 8;  n=16: ln2/ln16*8 = 2 -> 10;  n=32: 4 -> 12
    #   n=64: 6 -> 14;  n=128: 8 -> 16 -> capped 15;  n=200: capped 15
    rel = np.array([-200, -128, -64, -32, -16, -9, -8, -7, -1, 0, 1, 7, 8, 16, 64, 128])
    expected = [15, 15, 14, 12, 10, 8, 8, 7, 1, 0, 17, 23, 24, 26, 30, 31]
    out = F.relative_position_bucket(tinyllm.tensor(rel))
    assert out.dtype == np.int64
    assert out.numpy().tolist() == expected


def test_relative_position_bucket_causal():
    # n = max(0, -rel), all 32 buckets, max_exact = 16, n >= 16: 16 + floor(ln(n/16)/ln(8)*16)
    #   n=16: 16;  n=32: ln2/ln8*16 = 5.33 -> 21;  n=64: 10.67 -> 26;  n=128: 32 -> capped 31
    rel = np.array([-200, -128, -64, -32, -16, -9, -8, -1, 0, 1, 50])
    expected = [31, 31, 26, 21, 16, 9, 8, 1, 0, 0, 0]
    assert F.relative_position_bucket(rel, bidirectional=False).numpy().tolist() == expected


def test_relative_position_bucket_is_monotone_and_integer_only():
    n = np.arange(0, 300)
    for bidirectional in (True, False):
        past = F.relative_position_bucket(-n, bidirectional).numpy()
        assert (np.diff(past) >= 0).all()
    future = F.relative_position_bucket(n).numpy()
    assert (np.diff(future) >= 0).all()
    with pytest.raises(TypeError, match="relative_position_bucket"):
        F.relative_position_bucket(np.array([0.5]))


# ---------------------------------------------------------------- sinusoidal
def test_sinusoidal_position_encoding_closed_form():
    pe = F.sinusoidal_position_encoding(50, 16, dtype="float64").numpy()
    assert pe.shape == (50, 16)
    np.testing.assert_array_equal(pe[0], [0.0, 1.0] * 8)
    assert pe[1, 0] == pytest.approx(math.sin(1.0), abs=1e-15)
    assert pe[1, 1] == pytest.approx(math.cos(1.0), abs=1e-15)
    # column pair i = 2: frequency 10000^(-4/16) = 1/10, so position 7 has angle 0.7
    assert pe[7, 4] == pytest.approx(math.sin(0.7), abs=1e-14)
    assert pe[7, 5] == pytest.approx(math.cos(0.7), abs=1e-14)
    assert pe[49, 14] == pytest.approx(math.sin(49 / 10000 ** (14 / 16)), abs=1e-14)
    assert F.sinusoidal_position_encoding(3, 4).dtype == np.float32
    with pytest.raises(ValueError, match="sinusoidal_position_encoding"):
        F.sinusoidal_position_encoding(3, 5)


def test_public_names():
    for name in (
        "scaled_dot_product_attention", "rotary_embedding", "rope_frequencies", "rope_cos_sin",
        "alibi_slopes", "alibi_bias", "relative_position_bucket", "sinusoidal_position_encoding",
    ):  # fmt: skip
        assert name in F.__all__
