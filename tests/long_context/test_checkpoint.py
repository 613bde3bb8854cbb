"""tinyllm.utils.checkpoint: gradients bit-identical with and without recomputation (a deep
stack with dropout inside each block: the replayed RNG state gives the same masks), the
replay is what makes them equal (without it they differ), the forward keeps no intermediate
activation (tracemalloc), parameters-only segments still get gradients, checkpoint_sequential,
multiple outputs, torch as an optional oracle of the semantics."""

import tracemalloc

import numpy as np
import pytest

import tinyllm
import tinyllm.utils
from tinyllm import nn
from tinyllm.nn.transformer import TransformerBlock
from tinyllm.utils.checkpoint import checkpoint, checkpoint_sequential


def _stack(n=4, C=16, dropout=0.2):
    tinyllm.manual_seed(0)
    return [
        TransformerBlock(
            C,
            2,
            d_ff=32,
            norm="rmsnorm",
            ffn="swiglu",
            dropout=dropout,
            attn_dropout=dropout,
            positional="rope",
        )  # fmt: skip
        for _ in range(n)
    ]


def _loss_and_grads(blocks, x0, use_checkpoint, preserve=True, seed=1):
    tinyllm.manual_seed(seed)
    x = tinyllm.tensor(x0, requires_grad=True)
    h = x
    for block in blocks:
        h = checkpoint(block, h, preserve_rng_state=preserve) if use_checkpoint else block(h)
    loss = (h * h).mean()
    loss.backward()
    grads = [x.grad.data.copy()] + [p.grad.data.copy() for b in blocks for p in b.parameters()]
    for b in blocks:
        b.zero_grad()
    return loss.item(), grads


def test_gradients_bit_identical_with_dropout_inside():
    blocks = _stack()
    x0 = np.random.default_rng(0).standard_normal((2, 7, 16)).astype(np.float32)
    loss, grads = _loss_and_grads(blocks, x0, False)
    loss_ck, grads_ck = _loss_and_grads(blocks, x0, True)
    assert loss == loss_ck
    assert len(grads) == len(grads_ck) > 10
    for g, g_ck in zip(grads, grads_ck):
        np.testing.assert_array_equal(g, g_ck)  # bitwise: the same ops on the same arrays
    # without replaying the RNG state the recomputation draws other masks: other gradients
    _, grads_free = _loss_and_grads(blocks, x0, True, preserve=False)
    assert any(not np.array_equal(g, g_f) for g, g_f in zip(grads, grads_free))


def test_rng_state_after_backward_is_the_uncheckpointed_one():
    blocks = _stack(n=2)
    x0 = np.random.default_rng(1).standard_normal((1, 5, 16)).astype(np.float32)
    draws = []
    for use in (False, True):
        _loss_and_grads(blocks, x0, use)
        draws.append(tinyllm.backend.generator("cpu").random(4))
    np.testing.assert_array_equal(draws[0], draws[1])


def test_checkpointed_forward_keeps_no_intermediate_activation():
    C, T = 64, 256
    blocks = [nn.Sequential(nn.Linear(C, 4 * C), nn.ReLU(), nn.Linear(4 * C, C)) for _ in range(4)]
    x = tinyllm.tensor(np.ones((T, C), np.float32), requires_grad=True)

    def peak(use):
        tracemalloc.start()
        h = x
        for b in blocks:
            h = checkpoint(b, h) if use else b(h)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del h
        return top

    plain, ck = peak(False), peak(True)
    hidden = T * 4 * C * 4  # one [T, 4C] float32 activation, the ReLU's input or output
    # plain keeps 2 hidden activations per block (8 in all); checkpointed keeps none of them
    assert plain - ck > 6 * hidden, (plain, ck)


def test_parameters_get_gradients_when_no_input_requires_grad():
    lin = nn.Linear(3, 2)
    x = tinyllm.randn(4, 3)  # no grad: only the parameters need one
    checkpoint(lin, x).sum().backward()
    ref = nn.Linear(3, 2)
    ref.load_state_dict(lin.state_dict())
    ref(x).sum().backward()
    np.testing.assert_array_equal(lin.weight.grad.data, ref.weight.grad.data)
    np.testing.assert_array_equal(lin.bias.grad.data, ref.bias.grad.data)


def test_multiple_outputs_and_kwargs():
    x = tinyllm.randn(3, 4, requires_grad=True)
    y = tinyllm.randn(3, 4, requires_grad=True)

    def fn(a, b, scale=1.0):
        return a * b * scale, (a + b).tanh()

    u, v = checkpoint(fn, x, y, scale=2.0)
    (u.sum() + (v * v).sum()).backward()
    gx, gy = x.grad.data.copy(), y.grad.data.copy()
    x.grad = y.grad = None
    u, v = fn(x, y, scale=2.0)
    (u.sum() + (v * v).sum()).backward()
    np.testing.assert_array_equal(gx, x.grad.data)
    np.testing.assert_array_equal(gy, y.grad.data)


def test_checkpoint_sequential_and_no_grad_and_errors():
    layers = nn.Sequential(*[nn.Linear(5, 5) for _ in range(5)])
    x = tinyllm.randn(2, 5, requires_grad=True)
    out = checkpoint_sequential(layers, 2, x)
    np.testing.assert_array_equal(out.data, layers(x).data)
    out.sum().backward()
    g = x.grad.data.copy()
    x.grad = None
    layers(x).sum().backward()
    np.testing.assert_array_equal(g, x.grad.data)
    with tinyllm.no_grad():
        assert checkpoint(layers, x).grad_fn is None
    assert tinyllm.utils.checkpoint is checkpoint
    with pytest.raises(TypeError, match="checkpoint: function must be callable"):
        checkpoint(3, x)
    with pytest.raises(TypeError, match="keyword argument 'b' is a Tensor"):
        checkpoint(lambda a, b: a * b, x, b=x)
    with pytest.raises(ValueError, match="checkpoint_sequential: segments"):
        checkpoint_sequential(layers, 9, x)


def test_matches_torch_checkpoint_semantics():
    torch = pytest.importorskip("torch")
    from torch.utils.checkpoint import checkpoint as torch_checkpoint

    w0 = np.random.default_rng(2).standard_normal((4, 4))
    x0 = np.random.default_rng(3).standard_normal((3, 4))
    tw, tx = torch.tensor(w0, requires_grad=True), torch.tensor(x0, requires_grad=True)
    torch_checkpoint(lambda a: (a @ tw).tanh(), tx, use_reentrant=False).pow(2).sum().backward()
    w, x = tinyllm.tensor(w0, requires_grad=True), tinyllm.tensor(x0, requires_grad=True)
    (checkpoint(lambda a: (a @ w).tanh(), x) ** 2).sum().backward()
    # float64, the same math in two engines: 1e-12
    np.testing.assert_allclose(x.grad.data, tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(w.grad.data, tw.grad.numpy(), rtol=1e-12, atol=1e-12)
