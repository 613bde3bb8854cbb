"""GPT and Llama: shapes, names, whole-model gradcheck, KV-cache generation."""

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
from tinyllm.gradcheck import gradcheck_parameters
from tinyllm.models import GPT, Llama, ModelConfig, build_model

TINY = dict(vocab_size=11, d_model=8, n_layer=2, n_head=2, block_size=8)


def tiny(arch, **overrides):
    tinyllm.manual_seed(0)
    return build_model(ModelConfig(arch=arch, **{**TINY, **overrides}))


@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_forward_shapes_and_families(arch):
    model = tiny(arch)
    idx = tinyllm.tensor(np.random.default_rng(0).integers(0, 11, (3, 5)))
    assert model(idx).shape == (3, 5, 11)
    names = list(model.state_dict())
    if arch == "gpt":
        assert isinstance(model, GPT) and "transformer.wpe.weight" in names
        assert model.lm_head.weight is model.transformer["wte"].weight  # tied
        assert "transformer.h.0.attn.q_proj.bias" in names
    else:
        assert isinstance(model, Llama) and "model.layers.1.mlp.gate_up_proj.weight" in names
        assert not any(n.endswith(".bias") for n in names)


def test_default_llama_has_the_documented_size():
    model = build_model(ModelConfig(arch="llama"))  # d 256, 4 layers, SwiGLU 704
    assert model.num_parameters() == 3_344_640


def test_config_errors():
    with pytest.raises(ValueError, match="not divisible by n_head"):
        ModelConfig(d_model=10, n_head=3)
    with pytest.raises(ValueError, match="not divisible by n_kv_head"):
        ModelConfig(n_head=4, n_kv_head=3)


@pytest.mark.parametrize("arch,kv", [("gpt", None), ("llama", 1)])
def test_whole_model_gradcheck_float64(arch, kv):
    """Every parameter of a tiny model: elementwise when small, random directions otherwise."""
    model = tiny(arch, n_kv_head=kv).double()
    rng = np.random.default_rng(1)
    idx = tinyllm.tensor(rng.integers(0, 11, (2, 6)))
    target = tinyllm.tensor(rng.integers(0, 11, 12))

    def loss():
        return F.cross_entropy(model(idx).reshape(12, 11), target, reduction="none")

    rows = gradcheck_parameters(model, loss, max_elements=64, n_directions=3)
    failed = [(r["parameter"], r["max_rel_error"]) for r in rows if not r["passed"]]
    assert not failed, failed
    assert len(rows) == len(list(model.parameters()))


@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_generation_with_cache_equals_without(arch):
    model = tiny(arch, block_size=8).double()
    prompt = tinyllm.tensor(np.array([[1, 2, 3]]))
    # 20 new tokens: the context slides (block 8) twice, rebuilding the cache
    a = model.generate(prompt, 20, temperature=0, use_cache=True)
    b = model.generate(prompt, 20, temperature=0, use_cache=False)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    c = model.generate(prompt, 20, temperature=1.0, generator=np.random.default_rng(5))
    d = model.generate(
        prompt, 20, temperature=1.0, generator=np.random.default_rng(5), use_cache=False
    )
    np.testing.assert_array_equal(c.numpy(), d.numpy())


def test_cached_logits_equal_full_forward():
    model = tiny("llama").double()
    idx = tinyllm.tensor(np.random.default_rng(2).integers(0, 11, (2, 7)))
    with tinyllm.no_grad():
        full = model(idx).numpy()
        caches = model.new_caches()
        parts = [model(idx[:, :4], caches=caches).numpy()]
        for t in range(4, 7):
            parts.append(model(idx[:, t : t + 1], caches=caches).numpy())
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, rtol=1e-10, atol=1e-12)


def test_generate_streams_tokens_and_validates():
    model = tiny("gpt")
    seen = []
    out = model.generate(tinyllm.tensor(np.array([[0]])), 5, temperature=0, callback=seen.append)
    assert out.shape == (1, 6) and seen == out.numpy()[0, 1:].tolist()
    with pytest.raises(ValueError, match="idx must be"):
        model.generate(tinyllm.tensor(np.array([1, 2])), 3)


@pytest.mark.parametrize("arch,kv", [("gpt", None), ("llama", 1), ("llama", 2)])
def test_decoder_logits_equal_the_module_forward(arch, kv):
    """The lean inference path computes what model(idx) computes, position by position."""
    from tinyllm.models.decoder import Decoder

    model = tiny(arch, n_kv_head=kv).double()
    idx = np.random.default_rng(3).integers(0, 11, (2, 7))
    with tinyllm.no_grad():
        full = model(tinyllm.tensor(idx)).numpy()
    decoder = Decoder(model, batch_size=2, max_len=8)
    steps = np.stack([decoder.step(idx[:, t]) for t in range(7)], axis=1)
    np.testing.assert_allclose(steps, full, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="the cache holds 8 tokens"):
        decoder.step(idx[:, 0])
        decoder.step(idx[:, 0])
