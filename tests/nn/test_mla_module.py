"""``MultiHeadLatentAttention`` (DeepSeek-V2 MLA) against a NumPy transcription of the paper's
equations; absorbed == naive (values and gradients); cached decoding == full forward; the
cache holds only the latent and the rope key."""

import math

import numpy as np
import pytest

import tinyllm
from tinyllm.gradcheck import gradcheck_parameters
from tinyllm.nn.attention import Attention
from tinyllm.nn.mla import MultiHeadLatentAttention

C, H, R, DN, DR, DV = 16, 4, 8, 4, 4, 6


def _x(B, T, seed=0):
    return tinyllm.tensor(np.random.default_rng(seed).standard_normal((B, T, C)), dtype="float64")


def _np(t):
    return t.detach().numpy()


def _mla(q_lora_rank=None, seed=0):
    tinyllm.manual_seed(seed)
    m = MultiHeadLatentAttention(C, H, R, DN, DR, DV, q_lora_rank=q_lora_rank).double()
    # non-trivial norm weights, so that the test sees them
    rng = np.random.default_rng(seed + 100)
    state = {k: v.numpy() for k, v in m.state_dict().items()}
    for k in state:
        if "layernorm" in k:
            state[k] = 1 + 0.3 * rng.standard_normal(state[k].shape)
    m.load_state_dict(state)
    return m


def _rms(x, w, eps=1e-6):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def _rope_interleaved(x, base=10000.0):
    """Rotate pairs (2i, 2i+1) of x [..., T, D] by t * base^(-2i/D)."""
    T, D = x.shape[-2], x.shape[-1]
    theta = base ** (-np.arange(0, D, 2) / D)
    ang = np.arange(T)[:, None] * theta[None, :]
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = a * np.cos(ang) - b * np.sin(ang)
    out[..., 1::2] = b * np.cos(ang) + a * np.sin(ang)
    return out


def reference_mla(m, x):
    """The equations of DeepSeek-V2 section 2.1, head by head, in NumPy."""
    s = {k: v.numpy() for k, v in m.state_dict().items()}
    B, T, _ = x.shape
    if m.q_lora_rank is None:
        q = x @ s["q_proj.weight"].T
    else:
        q = _rms(x @ s["q_a_proj.weight"].T, s["q_a_layernorm.weight"]) @ s["q_b_proj.weight"].T
    q = q.reshape(B, T, H, DN + DR)
    ckv = x @ s["kv_a_proj_with_mqa.weight"].T
    c, k_rope = _rms(ckv[..., :R], s["kv_a_layernorm.weight"]), ckv[..., R:]
    k_rope = _rope_interleaved(k_rope)  # [B, T, DR]
    w_ukv = s["kv_b_proj.weight"].reshape(H, DN + DV, R)
    out = np.zeros((B, T, H, DV))
    for h in range(H):
        q_nope, q_rope = q[:, :, h, :DN], _rope_interleaved(q[:, :, h, DN:])
        k_nope = c @ w_ukv[h, :DN].T  # [B, T, DN]
        v = c @ w_ukv[h, DN:].T  # [B, T, DV]
        scores = q_nope @ k_nope.transpose(0, 2, 1) + q_rope @ k_rope.transpose(0, 2, 1)
        scores = scores / math.sqrt(DN + DR)
        scores = np.where(np.tril(np.ones((T, T), bool)), scores, -np.inf)
        p = np.exp(scores - scores.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        out[:, :, h] = p @ v
    return out.reshape(B, T, H * DV) @ s["o_proj.weight"].T


@pytest.mark.parametrize("q_lora_rank", [None, 6])
@pytest.mark.parametrize("absorb", [False, True])
def test_mla_matches_the_papers_equations(q_lora_rank, absorb):
    m = _mla(q_lora_rank)
    x = _x(2, 6, seed=1)
    with tinyllm.no_grad():
        y = m(x, absorb=absorb)
    np.testing.assert_allclose(_np(y), reference_mla(m, x.numpy()), rtol=0, atol=1e-12)


def test_absorbed_and_naive_have_the_same_gradients():
    m = _mla(6, seed=2)
    x = _x(2, 5, seed=3)
    cot = tinyllm.tensor(np.random.default_rng(4).standard_normal((2, 5, C)))
    grads = []
    for absorb in (False, True):
        m.zero_grad()
        m(x, absorb=absorb).backward(cot)
        grads.append({n: p.grad.numpy().copy() for n, p in m.named_parameters()})
    for name in grads[0]:
        np.testing.assert_allclose(grads[1][name], grads[0][name], atol=1e-12, err_msg=name)


@pytest.mark.parametrize("q_lora_rank", [None, 6])
@pytest.mark.parametrize("absorb", [None, False])
def test_cached_decoding_equals_full_forward(q_lora_rank, absorb):
    m = _mla(q_lora_rank, seed=5)
    B, T = 2, 7
    x = _x(B, T, seed=6)
    with tinyllm.no_grad():
        full = m(x)
        cache = m.new_cache()
        steps = [m(x[:, t : t + 1], cache=cache, absorb=absorb) for t in range(4)]
        steps.append(m(x[:, 4:], cache=cache, absorb=absorb))  # a chunk of 3
        cached = tinyllm.cat(steps, dim=1)
    np.testing.assert_allclose(_np(cached), _np(full), rtol=0, atol=1e-12)

    # the cache holds only the latent c_KV [B, T, R] and the shared rope key [B, T, DR]
    shapes = {k: tuple(v.shape) for k, v in cache.tensors.items()}
    assert shapes == {"c_kv": (B, T, R), "k_rope": (B, T, DR)}
    assert cache.nbytes == B * T * (R + DR) * 8
    assert m.kv_cache_bytes_per_token("float32") == (R + DR) * 4
    # against 2 H D per token for an MHA cache of the same heads
    mha_bytes = Attention(C, H, head_dim=DN + DR).kv_cache_bytes_per_token("float32")
    assert m.kv_cache_bytes_per_token("float32") < mha_bytes


def test_parameter_names_follow_deepseek_v2():
    full_q = {k: tuple(v.shape) for k, v in _mla().state_dict().items()}
    assert full_q == {
        "q_proj.weight": (H * (DN + DR), C),
        "kv_a_proj_with_mqa.weight": (R + DR, C),
        "kv_a_layernorm.weight": (R,),
        "kv_b_proj.weight": (H * (DN + DV), R),
        "o_proj.weight": (C, H * DV),
    }
    low_q = set(_mla(6).state_dict())
    assert {"q_a_proj.weight", "q_a_layernorm.weight", "q_b_proj.weight"} <= low_q
    assert "q_proj.weight" not in low_q


def test_mla_gradcheck():
    m = _mla(6, seed=7)
    x = _x(1, 4, seed=8)
    rows = gradcheck_parameters(m, lambda: m(x, absorb=True), atol=1e-7, rtol=1e-5)
    assert all(r["passed"] for r in rows), rows


def test_mla_bad_configs():
    with pytest.raises(ValueError, match="qk_rope_head_dim must be even"):
        MultiHeadLatentAttention(16, 4, 8, 4, 3, 4)
    with pytest.raises(ValueError, match="kv_lora_rank must be a positive int"):
        MultiHeadLatentAttention(16, 4, 0, 4, 4, 4)
    with pytest.raises(TypeError, match="LatentKVCache"):
        _mla()(_x(1, 1), cache=Attention(C, H).new_cache())
