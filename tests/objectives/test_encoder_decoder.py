"""The encoder-decoder: cross-attention's gradients (finite differences and a naive
composition), what each part may see, and a whole-model gradcheck."""

import math

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
from tinyllm.gradcheck import gradcheck_parameters
from tinyllm.models.encoder_decoder import (
    CrossAttention,
    EncoderDecoder,
    EncoderDecoderConfig,
    key_padding_mask,
)

B, T, S, C, H = 2, 3, 5, 8, 2


def _xattn():
    tinyllm.manual_seed(0)
    return CrossAttention(C, H).double()


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    x = tinyllm.tensor(rng.standard_normal((B, T, C)), requires_grad=True)
    m = tinyllm.tensor(rng.standard_normal((B, S, C)), requires_grad=True)
    return x, m


def naive_cross_attention(xattn, x, m, lengths=None):
    """softmax(q k^T / sqrt(D) + mask) v from matmul, softmax and reshapes (no fused
    attention): the composition whose autograd checks the module's gradients."""
    D = C // H

    def heads(t, n):
        return t.reshape(B, n, H, D).transpose(1, 2)

    q = heads(x @ xattn.q_proj.weight.transpose(0, 1), T)
    k = heads(m @ xattn.k_proj.weight.transpose(0, 1), S)
    v = heads(m @ xattn.v_proj.weight.transpose(0, 1), S)
    scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(D))
    if lengths is not None:
        hidden = ~key_padding_mask(lengths, S)  # [B, 1, 1, S]
        scores = scores + tinyllm.tensor(np.where(hidden, -1e30, 0.0))
    o = F.softmax(scores, dim=-1) @ v  # [B, H, T, D]
    return o.transpose(1, 2).reshape(B, T, C) @ xattn.o_proj.weight.transpose(0, 1)


@pytest.mark.parametrize("lengths", [None, [5, 3]])
def test_cross_attention_gradcheck_float64(lengths):
    xattn = _xattn()
    mask = None if lengths is None else key_padding_mask(lengths, S)
    x, m = _inputs()
    assert tinyllm.gradcheck(lambda a, b: xattn(a, b, mask), [x, m])
    rows = gradcheck_parameters(xattn, lambda: xattn(x, m, mask))
    assert all(r["passed"] for r in rows), rows


@pytest.mark.parametrize("lengths", [None, [5, 2]])
def test_cross_attention_equals_the_naive_composition(lengths):
    """Outputs and every gradient (x, memory, the four weights) under one random cotangent;
    float64, so 1e-10 bounds only the different summation orders."""
    xattn = _xattn()
    mask = None if lengths is None else key_padding_mask(lengths, S)
    g = np.random.default_rng(3).standard_normal((B, T, C))
    results = []
    for fn in (
        lambda a, b: xattn(a, b, mask),
        lambda a, b: naive_cross_attention(xattn, a, b, lengths),
    ):
        x, m = _inputs()
        xattn.zero_grad()
        y = fn(x, m)
        y.backward(tinyllm.tensor(g))
        grads = [x.grad.numpy(), m.grad.numpy()] + [p.grad.numpy() for p in xattn.parameters()]
        results.append([y.detach().numpy()] + grads)
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)


def test_padded_memory_is_invisible():
    xattn = _xattn()
    x, m = _inputs()
    mask = key_padding_mask([5, 2], S)
    m2 = m.detach().numpy().copy()
    m2[1, 2:] = 99.0  # change only the padded source tokens of row 1
    with tinyllm.no_grad():
        a = xattn(x, m, mask).numpy()
        b = xattn(x, tinyllm.tensor(m2), mask).numpy()
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def _model():
    tinyllm.manual_seed(0)
    config = EncoderDecoderConfig(vocab_size=11, d_model=8, n_layer=1, n_head=2, ffn_hidden=16)
    return EncoderDecoder(config).double()


def test_the_decoder_is_causal_and_the_encoder_sees_everything():
    model = _model()
    rng = np.random.default_rng(0)
    src, tgt = rng.integers(0, 11, (1, 6)), rng.integers(0, 11, (1, 5))

    def logits(s, t):
        with tinyllm.no_grad():
            return model(tinyllm.tensor(s), tinyllm.tensor(t)).numpy()[0]

    base = logits(src, tgt)
    t2 = tgt.copy()
    t2[0, 3] = (t2[0, 3] + 1) % 11
    change = np.abs(logits(src, t2) - base).max(-1)
    assert (change[:3] < 1e-12).all() and (change[3:] > 1e-6).all(), change
    s2 = src.copy()
    s2[0, 5] = (s2[0, 5] + 1) % 11  # the last source token reaches every target position
    assert (np.abs(logits(s2, tgt) - base).max(-1) > 1e-6).all()


def test_source_padding_changes_nothing_but_the_padding():
    """A padded source row gives the logits of the same row unpadded (float64, 1e-12)."""
    model = _model()
    rng = np.random.default_rng(1)
    src, tgt = rng.integers(0, 11, (1, 4)), rng.integers(0, 11, (1, 3))
    padded = np.concatenate([src, np.full((1, 3), 7)], axis=1)
    with tinyllm.no_grad():
        a = model(tinyllm.tensor(src), tinyllm.tensor(tgt)).numpy()
        b = model(tinyllm.tensor(padded), tinyllm.tensor(tgt),
                  attention_mask=np.array([[True] * 4 + [False] * 3])).numpy()  # fmt: skip
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_whole_model_gradcheck_float64():
    model = _model()
    rng = np.random.default_rng(2)
    src = tinyllm.tensor(rng.integers(0, 11, (2, 5)))
    tgt = tinyllm.tensor(rng.integers(0, 11, (2, 4)))
    mask = np.array([[True] * 5, [True] * 3 + [False] * 2])
    labels = tinyllm.tensor(rng.integers(0, 11, 8))

    def loss():
        logits = model(src, tgt, attention_mask=mask)
        return F.cross_entropy(logits.reshape(8, 11), labels, reduction="none")

    rows = gradcheck_parameters(model, loss, max_elements=64, n_directions=3)
    failed = [(r["parameter"], r["max_rel_error"]) for r in rows if not r["passed"]]
    assert not failed, failed
    assert len(rows) == len(list(model.parameters()))


def test_bad_shapes_raise_naming_the_module():
    xattn = _xattn()
    x, m = _inputs()
    with pytest.raises(ValueError, match=r"CrossAttention: expected memory of shape \[B, \*, 8\]"):
        xattn(x, tinyllm.tensor(np.zeros((B, S, 4))))
    with pytest.raises(ValueError, match="differ in batch size"):
        xattn(x, tinyllm.tensor(np.zeros((1, S, C))))
