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


# every configuration flag the models accept, for the cached (Decoder) vs uncached comparison
CONFIG_FLAGS = [
    ("gpt", {}),  # biases, tied embeddings
    ("gpt", {"bias": False}),
    ("gpt", {"tie_embeddings": False}),
    ("gpt", {"dropout": 0.1}),  # off in generate (eval mode)
    ("llama", {}),  # no biases, untied
    ("llama", {"bias": True}),  # biases in q/k/v/o and in the SwiGLU MLP
    ("llama", {"tie_embeddings": True}),
    ("llama", {"n_head": 4, "d_model": 16, "n_kv_head": 2}),  # GQA, 2 queries per kv head
    ("llama", {"n_kv_head": 1}),  # MQA
    ("llama", {"dropout": 0.1}),
    ("llama", {"bias": True, "tie_embeddings": True, "n_head": 4, "d_model": 16,
               "n_kv_head": 2, "ffn_hidden": 24, "rope_base": 100.0, "norm_eps": 1e-3}),
]  # fmt: skip


YARN = {"type": "yarn", "factor": 4.0, "original_max_position": 4}


def randomized(arch, **overrides):
    """A float64 tiny model whose every parameter (biases and norm gains included) is drawn
    from N(0, 0.5^2): zero-initialized biases would hide a path that drops them."""
    model = tiny(arch, **overrides).double()
    rng = np.random.default_rng(11)
    for p in model.parameters():
        p.data[...] = rng.normal(0.0, 0.5, p.shape)
    return model


@pytest.mark.parametrize("arch,flags", CONFIG_FLAGS)
def test_cached_decoding_equals_uncached_for_every_config_flag(arch, flags):
    """Logits of the lean cached path equal model(idx) at every position, and generate()
    gives the same tokens with and without the cache (greedy and sampled, with the context
    sliding twice). float64: the two paths differ only in summation order (fused q/k/v and
    gate/up GEMMs), ~1e-15 relative; a dropped bias changes logits by O(0.1)."""
    from tinyllm.models.decoder import Decoder

    model = randomized(arch, **flags)
    model.train()  # generate() must switch dropout off and restore the mode
    idx = np.random.default_rng(3).integers(0, 11, (2, 8))
    model.eval()
    with tinyllm.no_grad():
        full = model(tinyllm.tensor(idx)).numpy()
    model.train()
    decoder = Decoder(model, batch_size=2, max_len=8)
    steps = np.stack([decoder.step(idx[:, t]) for t in range(8)], axis=1)
    np.testing.assert_allclose(steps, full, rtol=1e-10, atol=1e-10)

    prompt = tinyllm.tensor(idx[:, :3])
    a = model.generate(prompt, 20, temperature=0, use_cache=True)
    b = model.generate(prompt, 20, temperature=0, use_cache=False)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    c = model.generate(prompt, 20, temperature=1.0, generator=np.random.default_rng(5))
    d = model.generate(
        prompt, 20, temperature=1.0, generator=np.random.default_rng(5), use_cache=False
    )
    np.testing.assert_array_equal(c.numpy(), d.numpy())
    assert model.training


@pytest.mark.parametrize("arch,flags", [("gpt", {}), ("gpt", {"bias": False}), ("llama", {})])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_step_kernels_equal_the_public_kernel_functions(monkeypatch, arch, flags, dtype):
    """The decoder's direct calls of the norm / activation kernels (CPU, Numba tier) give
    bit for bit what the public functions give (they run the same serial body on the same
    rows), they are taken on a step, and not under kernels.use("reference")."""
    pytest.importorskip("numba")
    from tinyllm.kernels import use as use_tier
    from tinyllm.models import decoder as D

    model = randomized(arch, **flags)
    if dtype == np.float32:
        model = model.float()
    idx = np.random.default_rng(4).integers(0, 11, (2, 6))
    calls = []
    norm = D._StepKernels.norm
    monkeypatch.setattr(D._StepKernels, "norm", lambda s, x, p: calls.append(1) or norm(s, x, p))

    def steps():
        decoder = D.Decoder(model, batch_size=2, max_len=8)
        decoder.fused = None  # the per-op path (the whole-step kernel: the test below)
        return np.stack([decoder.step(idx[:, t]) for t in range(6)], axis=1)

    fast = steps()
    assert len(calls) == 6 * (2 * 2 + 1)  # 2 norms per layer and the final one, per step
    with use_tier("reference"):
        steps()
    assert len(calls) == 30  # the reference tier ran the public functions
    monkeypatch.setattr(D._StepKernels, "applies", staticmethod(lambda x, dtype: False))
    np.testing.assert_array_equal(fast, steps())


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
@pytest.mark.parametrize(
    "arch,flags",
    CONFIG_FLAGS + [("llama", {"layout": "interleaved"}), ("llama", {"rope_scaling": YARN})],
)
def test_whole_step_kernel_equals_the_array_path(monkeypatch, arch, flags, dtype, tol):
    """The one-call decoding step (kernels/decode_numba.py) gives the logits and the K/V
    cache of the per-op path, for every configuration flag, and the layers' projections hold
    views of its stacked weights (one copy). Tolerance: the two differ in the summation
    order of the matrix products and the attention (BLAS GEMV against BLAS GEMM); float32:
    the logits are O(10), a few ulp of the largest. It is not taken under
    kernels.use("reference") or when the rows reach dispatch.SERIAL_BELOW."""
    pytest.importorskip("numba")
    from tinyllm.kernels import use as use_tier
    from tinyllm.models import decoder as D

    flags = dict(flags)
    layout = flags.pop("layout", "half")
    model = randomized(arch, **flags)
    for block in model.blocks:  # RotaryEmbedding's pair layout (no config field sets it)
        if block.attn.rotary is not None:
            block.attn.rotary.layout = layout
    if dtype == np.float32:
        model.float()
    idx = np.random.default_rng(4).integers(0, 11, (2, 8))
    fused, plain = (D.Decoder(model, batch_size=2, max_len=8) for _ in range(2))
    assert fused.fused is not None
    assert np.shares_memory(fused.layers[1]["qkv"].wT, fused.fused.w["qkv"])
    plain.fused = None
    calls = []
    kernel = D._FusedStep.__call__
    monkeypatch.setattr(D._FusedStep, "__call__", lambda s, *a: calls.append(1) or kernel(s, *a))
    for t in range(8):
        got, want = fused.step(idx[:, t]), plain.step(idx[:, t])
        assert got.dtype == dtype
        scale = np.abs(want).max()
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)
    assert len(calls) == 8
    np.testing.assert_allclose(fused.K, plain.K, rtol=tol, atol=tol * np.abs(plain.K).max())
    np.testing.assert_allclose(fused.V, plain.V, rtol=tol, atol=tol * np.abs(plain.V).max())
    fused.reset()
    with use_tier("reference"):
        fused.step(idx[:, 0])
    monkeypatch.setattr(D.dispatch, "SERIAL_BELOW", 1)
    fused.step(idx[:, 1])
    assert len(calls) == 8


def test_llama_with_bias_has_mlp_biases():
    """The flag the cached decoder used to ignore: Llama(bias=True) has SwiGLU biases."""
    names = set(tiny("llama", bias=True).state_dict())
    assert {"model.layers.0.mlp.gate_up_proj.bias", "model.layers.0.mlp.down_proj.bias"} <= names


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("arch,flags", CONFIG_FLAGS)
def test_prefill_equals_token_by_token_steps(arch, flags, dtype, tol):
    """Decoder.prefill (the whole prompt in one forward) returns the last step's logits and
    leaves the same K/V cache as T calls of step; a second prefill continues at pos > 0."""
    from tinyllm.models.decoder import Decoder

    model = randomized(arch, **flags)
    if dtype == np.float32:
        model.float()
    idx = np.random.default_rng(4).integers(0, 11, (2, 8))
    stepper = Decoder(model, batch_size=2, max_len=8)
    steps = [stepper.step(idx[:, t]) for t in range(8)]
    scale = max(np.abs(s).max() for s in steps)  # logits of N(0, 0.5^2) weights are O(10)
    for cut in (1, 5, 8):  # prefill of the first `cut` tokens, then the rest in one prefill
        decoder = Decoder(model, batch_size=2, max_len=8)
        got = decoder.prefill(idx[:, :cut])
        assert got.shape == (2, 11) and got.dtype == dtype and decoder.pos == cut
        np.testing.assert_allclose(got, steps[cut - 1], rtol=tol, atol=tol * scale)
        if cut < 8:
            rest = decoder.prefill(idx[:, cut:])
            np.testing.assert_allclose(rest, steps[7], rtol=tol, atol=tol * scale)
        np.testing.assert_allclose(decoder.K, stepper.K, rtol=tol, atol=tol * scale)
        np.testing.assert_allclose(decoder.V, stepper.V, rtol=tol, atol=tol * scale)


def test_prefill_validates_and_generate_prefills_a_prompt_longer_than_the_context():
    from tinyllm.models.decoder import Decoder

    model = randomized("llama", n_kv_head=1)
    decoder = Decoder(model, batch_size=2, max_len=8)
    with pytest.raises(ValueError, match=r"tokens must be \[2, T\]"):
        decoder.prefill(np.zeros((1, 3), np.int64))
    decoder.prefill(np.zeros((2, 6), np.int64))
    with pytest.raises(ValueError, match="6 are used and 3 more do not fit"):
        decoder.prefill(np.zeros((2, 3), np.int64))
    # an 11-token prompt: the last 8 fill the cache in one prefill, the next token slides it
    prompt = tinyllm.tensor(np.random.default_rng(6).integers(0, 11, (2, 11)))
    a = model.generate(prompt, 6, temperature=0, use_cache=True)
    b = model.generate(prompt, 6, temperature=0, use_cache=False)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(a.numpy()[:, :11], prompt.numpy())


def test_generate_prefills_the_prompt_in_one_call(monkeypatch):
    """One prefill for the prompt, one per context slide, one step per other token."""
    from tinyllm.models.decoder import Decoder

    calls = []
    prefill, step = Decoder.prefill, Decoder.step
    monkeypatch.setattr(
        Decoder, "prefill", lambda s, t: calls.append(("p", t.shape[1])) or prefill(s, t)
    )
    monkeypatch.setattr(Decoder, "step", lambda s, t: calls.append(("s", 1)) or step(s, t))
    model = tiny("gpt", block_size=8)
    model.generate(tinyllm.tensor(np.array([[1, 2, 3]])), 10, temperature=0)
    # tokens 4..8 by steps after the prompt; the 9th overflows: slide to the last 4 (prefill)
    assert calls == [("p", 3)] + [("s", 1)] * 5 + [("p", 4)] + [("s", 1)] * 3
