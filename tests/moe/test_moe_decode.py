"""Cached decoding of MoE Llamas: the lean ``Decoder`` (array code, KV cache) gives the logits
of the module forward for every router that routes a token by itself (top-k both orders,
unnormalized top-k, noisy top-k at inference, aux-free with its selection bias, hash), with
shared and fine-grained experts; step by step, by prefill, and through ``generate``.
Expert choice, Soft MoE and a capacity factor make a token's output depend on other tokens:
the Decoder refuses them by name and ``generate`` decodes them uncached.

float64 with every weight drawn from N(0, 0.5^2) (as tests/models' decoder tests): the two
paths differ in summation order only (fused w1/w3 GEMM, softmax over the chosen logits
instead of renormalized probabilities), ~1e-15 relative; a missing shared expert, a wrong
gate or a wrong expert moves the logits by O(0.1)."""

import numpy as np
import pytest

import tinyllm
from tinyllm.models import ModelConfig, build_model
from tinyllm.models.decoder import Decoder
from tinyllm.nn.moe import MoE, SoftMoE, routing_token_ids

V, T = 11, 8
ROUTERS = {
    "mixtral": dict(router="softmax_topk"),
    "mixtral-unnormalized": dict(router="softmax_topk"),  # gate.normalize = False below
    "topk-softmax": dict(router="topk_softmax", top_k=1),
    "noisy": dict(router="noisy_topk"),
    "aux-free": dict(router="aux_free"),
    "hash": dict(router="hash", vocab_size=V),
    "shared+fine-grained": dict(
        router="softmax_topk", num_experts=8, top_k=3, expert_hidden=6, num_shared_experts=2
    ),  # fmt: skip
}


def moe_llama(seed=11, **moe):
    tinyllm.manual_seed(0)
    moe = {"num_experts": 4, "top_k": 2, "expert_hidden": 12, **moe}
    config = ModelConfig(arch="llama", vocab_size=V, d_model=8, n_layer=2, n_head=2,
                         n_kv_head=1, block_size=T, moe=moe)  # fmt: skip
    model = build_model(config).double()
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data[...] = rng.normal(0.0, 0.5, p.shape)
    for _, m in model.named_modules():
        if isinstance(m, MoE) and m.router == "aux_free":  # a bias that changes the choice
            m.gate.e_score_correction_bias.data[...] = rng.normal(0.0, 0.5, m.num_experts)
    return model.eval()


def full_logits(model, idx):
    x = tinyllm.tensor(idx)
    with tinyllm.no_grad(), routing_token_ids(model, x):
        return model(x).numpy()


@pytest.mark.parametrize("name", list(ROUTERS))
def test_cached_moe_decoding_equals_the_module_forward(name, monkeypatch):
    model = moe_llama(**ROUTERS[name])
    if name == "mixtral-unnormalized":
        for block in model.blocks:
            block.mlp.gate.normalize = False
    if name == "noisy":  # a noise scale that would change the routing if it were applied
        model.train()
        for block in model.blocks:
            tinyllm.nn.init.normal_(block.mlp.gate.w_noise.weight, 0.0, 5.0)
        model.eval()
    idx = np.random.default_rng(3).integers(0, V, (2, T))
    full = full_logits(model, idx)
    tol = dict(rtol=1e-10, atol=1e-10)  # summation order only (module doc)

    decoder = Decoder(model, batch_size=2, max_len=T)
    steps = np.stack([decoder.step(idx[:, t]) for t in range(T)], axis=1)
    np.testing.assert_allclose(steps, full, **tol)

    decoder.reset()  # prefill 5, then step: the cache written by the batched path
    np.testing.assert_allclose(decoder.prefill(idx[:, :5]), full[:, 4], **tol)
    for t in range(5, T):
        np.testing.assert_allclose(decoder.step(idx[:, t]), full[:, t], **tol)
    decoder.reset()
    np.testing.assert_allclose(decoder.prefill(idx, all_logits=True), full, **tol)

    # generate: the cached path is taken (Decoder.step runs) and gives the uncached tokens,
    # with the context sliding past block_size
    calls = {"n": 0}
    step = Decoder.step

    def counting(self, tokens):
        calls["n"] += 1
        return step(self, tokens)

    monkeypatch.setattr(Decoder, "step", counting)
    prompt = tinyllm.tensor(idx[:, :3])
    a = model.generate(prompt, 12, temperature=0)
    assert calls["n"] > 0
    b = model.generate(prompt, 12, temperature=0, use_cache=False)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    c = model.generate(prompt, 12, temperature=1.0, generator=np.random.default_rng(5))
    d = model.generate(prompt, 12, temperature=1.0, generator=np.random.default_rng(5),
                       use_cache=False)  # fmt: skip
    np.testing.assert_array_equal(c.numpy(), d.numpy())


def test_hash_routing_reads_the_token_ids():
    """Without the ids the layer refuses; the ids decide the experts (other ids, other logits)."""
    model = moe_llama(router="hash", vocab_size=V)
    idx = np.random.default_rng(3).integers(0, V, (1, T))
    with pytest.raises(ValueError, match="token_ids are required"):
        with tinyllm.no_grad():
            model(tinyllm.tensor(idx))
    a = full_logits(model, idx)
    table = model.blocks[0].mlp.gate.table.data
    table[...] = (table + 1) % 4  # every token to another expert
    assert np.abs(full_logits(model, idx) - a).max() > 1e-3


def _soft(model):
    for block in model.blocks:
        block.mlp = SoftMoE(8, 2, 2, 12, dtype=np.float64)
    return model


REFUSED = {
    "expert-choice": (lambda: moe_llama(router="expert_choice"), "expert-choice routing"),
    "capacity": (lambda: moe_llama(capacity_factor=1.25), "capacity_factor=1.25"),
    "soft-moe": (lambda: _soft(moe_llama()), "Soft MoE"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_token_mixing_moe_is_refused_by_the_decoder_and_generates_uncached(name):
    make, reason = REFUSED[name]
    model = make()
    with pytest.raises(ValueError, match=f"layer 0: {reason}"):
        Decoder(model, batch_size=1, max_len=T)
    assert reason in Decoder.unsupported(model)
    idx = np.random.default_rng(4).integers(0, V, (1, 3))
    out = model.generate(tinyllm.tensor(idx), 4, temperature=0)  # use_cache=True: falls back
    tokens = idx[0].tolist()
    for _ in range(4):  # greedy by hand with the full forward
        tokens.append(int(np.argmax(full_logits(model, np.array([tokens]))[0, -1])))
    assert out.numpy()[0].tolist() == tokens
