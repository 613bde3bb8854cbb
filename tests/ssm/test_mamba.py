"""The Mamba block and language model: step-mode decoding (conv state + SSM state) equals
the full forward at every position; generation with and without the state gives the same
tokens; the block's final state equals the step-mode state; the initialization is
mamba_ssm's; the whole block's gradient passes a float64 gradcheck; a few training steps
lower the loss."""

import math

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
from tinyllm.models.mamba import MambaConfig, MambaLM
from tinyllm.nn.mamba import Mamba


def small_lm(dtype="float64"):
    tinyllm.manual_seed(0)
    model = MambaLM(MambaConfig(vocab_size=40, d_model=16, n_layer=2, d_state=4, d_conv=3))
    return model.to(dtype=dtype)


def test_step_decoding_equals_full_forward_at_every_position():
    model = small_lm()
    idx = np.random.default_rng(0).integers(0, 40, (3, 13))
    full = model(tinyllm.tensor(idx)).data  # [3, 13, V]
    states = model.new_states(3)
    steps = np.stack([model.step(idx[:, t], states) for t in range(13)], axis=1)
    np.testing.assert_allclose(steps, full, rtol=1e-12, atol=1e-12)


def test_block_final_state_equals_step_state():
    tinyllm.manual_seed(1)
    block = Mamba(8, d_state=3, d_conv=4).to(dtype="float64")
    for L in (2, 9):  # shorter and longer than the conv window
        h = np.random.default_rng(L).standard_normal((2, L, 8))
        out, state = block(tinyllm.tensor(h), return_state=True)
        stepped = block.new_state(2, np.float64)
        outs = np.stack([block.step(h[:, t], stepped) for t in range(L)], axis=1)
        np.testing.assert_allclose(outs, out.data, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(stepped.ssm, state.ssm, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(stepped.conv, state.conv, rtol=1e-12, atol=1e-12)


def test_generate_with_and_without_state_gives_the_same_tokens():
    model = small_lm()
    prompt = tinyllm.tensor(np.array([[1, 2, 3], [4, 5, 6]]))
    streamed = []
    a = model.generate(prompt, 12, temperature=0, callback=streamed.append)
    b = model.generate(prompt, 12, temperature=0, use_cache=False)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert streamed == a.numpy()[0, 3:].tolist()
    c = model.generate(prompt, 5, temperature=1.0, top_k=5, generator=np.random.default_rng(0))
    assert c.shape == (2, 8)


def test_initialization_follows_mamba_ssm():
    tinyllm.manual_seed(0)
    block = Mamba(32, d_state=16)
    assert block.d_inner == 64 and block.dt_rank == 2
    np.testing.assert_allclose(np.exp(block.A_log.data), np.tile(np.arange(1, 17), (64, 1)), 1e-6)
    np.testing.assert_array_equal(block.D.data, 1)
    dt = np.log1p(np.exp(block.dt_proj.bias.data.astype(np.float64)))  # softplus(bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
    assert np.abs(block.dt_proj.weight.data).max() <= 2**-0.5
    assert block.conv1d.weight.shape == (64, 1, 4) and block.x_proj.weight.shape == (2 + 32, 64)
    names = {n for n, _ in MambaLM(MambaConfig(d_model=16, n_layer=2)).named_parameters()}
    assert "backbone.layers.1.mixer.A_log" in names and "backbone.norm_f.weight" in names
    lm = MambaLM(MambaConfig(d_model=16, n_layer=2))
    assert lm.no_weight_decay() <= names and len(lm.no_weight_decay()) == 4


def test_block_gradcheck_float64():
    """Through every op of the block (parameters: by the ops' own gradchecks)."""
    tinyllm.manual_seed(2)
    block = Mamba(4, d_state=2, d_conv=3, expand=1).to(dtype="float64")
    x = tinyllm.tensor(np.random.default_rng(0).standard_normal((2, 5, 4)), requires_grad=True)
    params = [p for _, p in block.named_parameters()]
    assert tinyllm.gradcheck(lambda x: block(x), [x])
    out = block(x)
    out.backward(np.random.default_rng(1).standard_normal(out.shape))
    assert all(p.grad is not None and np.isfinite(p.grad.data).all() for p in params)


def test_a_few_training_steps_lower_the_loss():
    model = small_lm("float32")
    opt = tinyllm.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    seq = np.tile(np.arange(10), 4)  # a repeating pattern is learnable
    idx = np.stack([np.roll(seq, -int(s)) for s in rng.integers(0, 10, 4)])
    losses = []
    for _ in range(30):
        logits = model(tinyllm.tensor(idx[:, :-1]))
        loss = F.cross_entropy(logits.reshape(-1, 40), tinyllm.tensor(idx[:, 1:].reshape(-1)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    assert math.isfinite(losses[-1])


def test_errors_name_the_op_and_the_shapes():
    from tinyllm.functional.ssm import causal_conv1d, selective_scan

    u = tinyllm.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"selective_scan: A must be \[dim, N\]"):
        selective_scan(u, u, tinyllm.randn(2, 5), tinyllm.randn(2, 5, 4), tinyllm.randn(2, 5, 4))
    with pytest.raises(ValueError, match="selective_scan: B must be"):
        selective_scan(u, u, tinyllm.randn(3, 5), tinyllm.randn(2, 4, 4), tinyllm.randn(2, 5, 4))
    with pytest.raises(ValueError, match="causal_conv1d: weight must be"):
        causal_conv1d(u, tinyllm.randn(2, 4))
    with pytest.raises(ValueError, match="causal_conv1d: activation"):
        causal_conv1d(u, tinyllm.randn(3, 4), activation="relu")
