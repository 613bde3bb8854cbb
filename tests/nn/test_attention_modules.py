"""``Attention`` (MHA / GQA / MQA) and ``KVCache``: equivalences, cached decoding, masks, errors.

- GQA/MQA equal MHA whose k/v projection rows repeat each kv head G times (values and
  gradients: the GQA gradient is the sum over the G copies).
- Decoding token by token (and in chunks) through a ``KVCache`` equals the full causal
  forward, for no positional encoding, RoPE, ALiBi and T5, and with a sliding window.
- A left-padding mask reproduces the unpadded outputs; T5's learned bias gets gradients.
"""

import numpy as np
import pytest

import tinyllm
from tinyllm.gradcheck import gradcheck_parameters
from tinyllm.nn.attention import Attention
from tinyllm.nn.kv_cache import KVCache


def _x(B, T, C, seed=0):
    return tinyllm.tensor(np.random.default_rng(seed).standard_normal((B, T, C)), dtype="float64")


def _np(t):
    return t.detach().numpy()


def _repeat_kv_rows(w, n_kv, group):
    """[Hkv*D, C] -> [Hkv*G*D, C]: each kv head's D rows repeated G times (repeat_interleave)."""
    D = w.shape[0] // n_kv
    return np.repeat(w.reshape(n_kv, D, -1), group, axis=0).reshape(n_kv * group * D, -1)


@pytest.mark.parametrize("n_kv_heads", [2, 1])
@pytest.mark.parametrize("positional", [None, "rope", "alibi"])
def test_gqa_equals_mha_with_repeated_kv_weights(n_kv_heads, positional):
    tinyllm.manual_seed(1)
    C, H = 16, 4
    G = H // n_kv_heads
    gqa = Attention(C, H, n_kv_heads, bias=True, positional=positional).double()
    mha = Attention(C, H, bias=True, positional=positional).double()
    state = {k: v.numpy() for k, v in gqa.state_dict().items()}
    for name in ("k_proj", "v_proj"):
        state[f"{name}.weight"] = _repeat_kv_rows(state[f"{name}.weight"], n_kv_heads, G)
        state[f"{name}.bias"] = _repeat_kv_rows(state[f"{name}.bias"][:, None], n_kv_heads, G)[:, 0]
    mha.load_state_dict(state)

    x1 = _x(2, 6, C).requires_grad_()
    x2 = _x(2, 6, C).requires_grad_()
    y1, y2 = gqa(x1), mha(x2)
    np.testing.assert_allclose(_np(y1), _np(y2), rtol=0, atol=1e-12)

    cot = np.random.default_rng(5).standard_normal(y1.shape)
    y1.backward(tinyllm.tensor(cot))
    y2.backward(tinyllm.tensor(cot))
    np.testing.assert_allclose(x1.grad.numpy(), x2.grad.numpy(), atol=1e-12)
    for name in ("q_proj", "o_proj"):
        for p in ("weight", "bias"):
            g1 = getattr(getattr(gqa, name), p).grad.numpy()
            g2 = getattr(getattr(mha, name), p).grad.numpy()
            np.testing.assert_allclose(g1, g2, atol=1e-12)
    for name in ("k_proj", "v_proj"):
        g_gqa = getattr(gqa, name).weight.grad.numpy()  # [Hkv*D, C]
        g_mha = getattr(mha, name).weight.grad.numpy()  # [H*D, C]
        D = C // H
        summed = g_mha.reshape(n_kv_heads, G, D, C).sum(axis=1).reshape(n_kv_heads * D, C)
        np.testing.assert_allclose(g_gqa, summed, atol=1e-12)


def _decode(attn, x, chunks):
    cache = attn.new_cache()
    outs, start = [], 0
    for size in chunks:
        outs.append(attn(x[:, start : start + size], cache=cache))
        start += size
    assert len(cache) == x.shape[1]
    return tinyllm.cat(outs, dim=1), cache


@pytest.mark.parametrize("positional", [None, "rope", "alibi", "t5"])
@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_cached_decoding_equals_full_causal_forward(positional, n_kv_heads):
    tinyllm.manual_seed(2)
    attn = Attention(16, 4, n_kv_heads, positional=positional).double().eval()
    x = _x(2, 7, 16, seed=3)
    with tinyllm.no_grad():
        full = attn(x)
        by_token, cache = _decode(attn, x, [1] * 7)
        chunked, _ = _decode(attn, x, [3, 1, 2, 1])
    np.testing.assert_allclose(_np(by_token), _np(full), rtol=0, atol=1e-12)
    np.testing.assert_allclose(_np(chunked), _np(full), rtol=0, atol=1e-12)
    # the cache holds k, v after RoPE for Hkv heads only: [B, Hkv, T, D] each
    assert cache.tensors["k"].shape == (2, n_kv_heads, 7, 4)
    assert cache.tensors["v"].shape == (2, n_kv_heads, 7, 4)
    assert cache.nbytes == 2 * 2 * n_kv_heads * 7 * 4 * 8
    assert attn.kv_cache_bytes_per_token("float32") == 2 * n_kv_heads * 4 * 4


def test_single_token_with_cache_attends_to_every_cached_key():
    """The last token decoded alone equals the full forward's last row (not a top-left mask)."""
    tinyllm.manual_seed(4)
    attn = Attention(8, 2, positional="rope").double()
    x = _x(1, 5, 8, seed=4)
    with tinyllm.no_grad():
        cache = attn.new_cache()
        attn(x[:, :4], cache=cache)
        last = attn(x[:, 4:], cache=cache)
        full = attn(x)
    np.testing.assert_allclose(_np(last)[0, 0], _np(full)[0, 4], atol=1e-12)


def test_sliding_window_cached_decoding_equals_full():
    tinyllm.manual_seed(5)
    attn = Attention(8, 2, 1, positional="rope", window=3).double()
    x = _x(2, 9, 8, seed=6)
    with tinyllm.no_grad():
        full = attn(x)
        by_token, _ = _decode(attn, x, [1] * 9)
        chunked, _ = _decode(attn, x, [4, 5])
    np.testing.assert_allclose(_np(by_token), _np(full), atol=1e-12)
    np.testing.assert_allclose(_np(chunked), _np(full), atol=1e-12)
    # the window really restricts: W = 9 (everything visible) gives another function
    wide = Attention(8, 2, 1, positional="rope", window=9).double()
    wide.load_state_dict(attn.state_dict())
    with tinyllm.no_grad():
        assert not np.allclose(_np(wide(x)), _np(full))
        np.testing.assert_allclose(_np(wide(x)[:, :3]), _np(full[:, :3]), atol=1e-12)


@pytest.mark.parametrize("positional", [None, "alibi", "t5"])
def test_left_padding_mask_reproduces_unpadded_outputs(positional):
    """With relative (or no) positions, masking two left pad keys gives the unpadded
    sequence's outputs; the pad rows (no visible key) are zeros, never NaN."""
    tinyllm.manual_seed(6)
    attn = Attention(8, 2, 1, positional=positional).double()
    x = _x(1, 5, 8, seed=7)
    pad = _x(1, 2, 8, seed=8)
    padded = tinyllm.cat([pad, x], dim=1)  # [1, 7, 8]
    keep = np.ones((1, 1, 1, 7), dtype=bool)
    keep[..., :2] = False
    with tinyllm.no_grad():
        ref = attn(x)
        out = attn(padded, attn_mask=keep)
    # ALiBi and T5 depend on j - i only, so the shift by two positions does not matter
    np.testing.assert_allclose(_np(out)[:, 2:], _np(ref), atol=1e-12)
    assert np.isfinite(_np(out)).all()
    # gradients flow (through the composite path for T5) and stay finite
    padded.requires_grad_()
    attn(padded, attn_mask=keep).backward(tinyllm.ones(1, 7, 8, dtype="float64"))
    assert np.isfinite(padded.grad.numpy()).all()


def test_kv_cache_crop_and_reset():
    tinyllm.manual_seed(7)
    attn = Attention(8, 2, positional="rope").double()
    x = _x(1, 6, 8, seed=9)
    with tinyllm.no_grad():
        cache = attn.new_cache()
        attn(x[:, :4], cache=cache)
        attn(_x(1, 2, 8, seed=10), cache=cache)  # two "rejected draft" tokens
        cache.crop(4)
        tail = attn(x[:, 4:], cache=cache)
        full = attn(x)
    np.testing.assert_allclose(_np(tail), _np(full)[:, 4:], atol=1e-12)
    cache.reset()
    assert len(cache) == 0 and cache.nbytes == 0
    with pytest.raises(ValueError, match="crop"):
        cache.crop(3)


def test_kv_cache_rejects_mismatched_appends():
    cache = KVCache()
    cache.append(tinyllm.zeros(1, 2, 3, 4), tinyllm.zeros(1, 2, 3, 4))
    with pytest.raises(ValueError, match="does not extend"):
        cache.append(tinyllm.zeros(1, 1, 1, 4), tinyllm.zeros(1, 1, 1, 4))
    with pytest.raises(TypeError, match="KVCache"):
        Attention(8, 2)(tinyllm.zeros(1, 1, 8), cache=object())


def test_parameter_names_and_shapes():
    attn = Attention(32, 8, 2, bias=False)
    shapes = {k: tuple(v.shape) for k, v in attn.state_dict().items()}
    assert shapes == {
        "q_proj.weight": (32, 32),
        "k_proj.weight": (8, 32),
        "v_proj.weight": (8, 32),
        "o_proj.weight": (32, 32),
    }
    t5 = Attention(32, 8, positional="t5", causal=False)
    assert tuple(t5.state_dict()["relative_attention_bias.weight"].shape) == (32, 8)
    assert t5.relative_attention_bias.bidirectional
    assert "slopes" not in Attention(32, 8, positional="alibi").state_dict()


def test_shared_t5_bias_is_one_parameter():
    from tinyllm.nn.containers import ModuleList
    from tinyllm.nn.positional import T5RelativePositionBias

    shared = T5RelativePositionBias(n_heads=4, bidirectional=False)
    layers = ModuleList([Attention(16, 4, positional="t5", relative_attention_bias=shared)
                         for _ in range(3)])  # fmt: skip
    names = [n for n, _ in layers.named_parameters() if "relative" in n]
    assert names == ["0.relative_attention_bias.weight"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"d_model": 30, "n_heads": 4}, "d_model=30 must be divisible by n_heads=4"),
        (
            {"d_model": 32, "n_heads": 8, "n_kv_heads": 3},
            "n_heads=8 must be divisible by n_kv_heads=3",
        ),
        ({"d_model": 32, "n_heads": 8, "n_kv_heads": 0}, "n_kv_heads must be a positive int"),
        ({"d_model": 32, "n_heads": 4, "positional": "sinusoidal"}, "positional must be one of"),
        (
            {"d_model": 32, "n_heads": 4, "window": 4, "causal": False},
            "sliding window needs causal",
        ),
        ({"d_model": 32, "n_heads": 4, "window": 0}, "window must be a positive int"),
        ({"d_model": 24, "n_heads": 8, "positional": "rope"}, "RoPE needs an even head size"),
        ({"d_model": 32, "n_heads": 4, "dropout": 1.0}, "dropout must be in"),
    ],
)
def test_bad_configs_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Attention(**kwargs)


def test_bad_input_shape():
    with pytest.raises(ValueError, match=r"expected x of shape \[B, T, 8\]"):
        Attention(8, 2)(tinyllm.zeros(2, 3, 4))


def test_t5_bias_is_trained_gradcheck():
    """A learned bias must receive gradients (the fused attention treats float masks as
    constants, so the module takes its composite path): float64 gradcheck of every parameter."""
    tinyllm.manual_seed(8)
    attn = Attention(8, 2, 1, positional="t5", t5_num_buckets=8, t5_max_distance=16).double()
    x = _x(2, 5, 8, seed=11)
    rows = gradcheck_parameters(attn, lambda: attn(x), atol=1e-7, rtol=1e-5)
    assert all(r["passed"] for r in rows), rows
    assert any(r["parameter"] == "relative_attention_bias.weight" for r in rows)


def test_attention_gradcheck_rope_gqa_window():
    tinyllm.manual_seed(9)
    attn = Attention(8, 4, 2, bias=True, positional="rope", window=3).double()
    x = _x(2, 5, 8, seed=12)
    rows = gradcheck_parameters(attn, lambda: attn(x), atol=1e-7, rtol=1e-5)
    assert all(r["passed"] for r in rows), rows


def test_dropout_only_in_training():
    tinyllm.manual_seed(10)
    attn = Attention(8, 2, dropout=0.5).double()
    x = _x(1, 4, 8)
    with tinyllm.no_grad():
        a, b = attn(x), attn(x)
        assert not np.allclose(_np(a), _np(b))
        attn.eval()
        np.testing.assert_array_equal(_np(attn(x)), _np(attn(x)))
