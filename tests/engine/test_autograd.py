"""The backward engine: traversal, accumulation, freeing, errors, modes."""

import threading

import numpy as np
import pytest

import tinyllm
from tinyllm import Function, GradcheckError
from tinyllm.function import live_graph_nodes


def t64(*shape, seed=0, requires_grad=True):
    rng = np.random.default_rng(seed)
    return tinyllm.tensor(rng.standard_normal(shape), requires_grad=requires_grad)


class WrongTanh(Function):
    """tanh with a backward that is off by 1%: gradcheck must reject it."""

    @staticmethod
    def forward(ctx, x):
        y = np.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return 1.01 * dy * (1 - y * y)


def test_gradcheck_rejects_backward_off_by_one_percent():
    x = t64(3, 4)
    with pytest.raises(GradcheckError, match=r"input 0 .*element .*analytic .* vs numeric"):
        tinyllm.gradcheck(WrongTanh.apply, [x])


def test_gradcheck_rejects_wrong_backward_along_random_directions():
    x = t64(70, 70)  # above max_elements: random directions
    with pytest.raises(GradcheckError, match="random direction"):
        tinyllm.gradcheck(WrongTanh.apply, [x], max_elements=100)


def test_gradcheck_accepts_correct_backward_and_requires_float64():
    assert tinyllm.gradcheck(lambda a: a.tanh(), [t64(3, 4)])
    with pytest.raises(ValueError, match="float64"):
        tinyllm.gradcheck(lambda a: a.tanh(), [tinyllm.randn(3, requires_grad=True)])


def test_graph_freed_after_backward_and_second_backward_raises():
    x = t64(3)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.backward()


def test_retain_graph_allows_second_backward_and_accumulates():
    x = t64(3)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    first = x.grad.numpy().copy()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * first)
    np.testing.assert_allclose(first, 2 * x.data)


def test_live_graph_nodes_stay_flat_over_training_steps():
    from tinyllm import nn

    tinyllm.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = tinyllm.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = tinyllm.randn(16, 4), tinyllm.randn(16, 1)
    counts = []
    for _ in range(50):
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        del loss
        counts.append(live_graph_nodes())
    assert counts[-1] == counts[5], f"graph nodes leak: {counts[5]} -> {counts[-1]}"


def test_deep_chain_of_100k_ops():
    x = tinyllm.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y * 1.0
    y.backward()
    assert x.grad.item() == 1.0


def test_diamond_and_reused_tensor_accumulate():
    x = t64(4)
    a = x * 2
    b = x.exp()
    y = (a * b + a).sum() + (x * x).sum()  # x reached by four paths
    y.backward()
    xv = x.data
    expected = 2 * np.exp(xv) + 2 * xv * np.exp(xv) + 2 + 2 * xv
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12)


def test_broadcast_gradients_are_reduced_to_input_shapes():
    a, b = t64(2, 3, 4), t64(3, 1, seed=1)
    (a * b).sum().backward()
    assert b.grad.shape == (3, 1)
    np.testing.assert_allclose(b.grad.numpy(), a.data.sum(axis=(0, 2))[:, None])


def test_logsumexp_gradient_is_the_softmax_and_zero_on_an_all_minus_inf_row():
    import scipy.special

    x = np.random.default_rng(0).normal(size=(3, 5))
    x[1] = -np.inf  # a fully masked row: y = -inf, and no NaN in the gradient
    leaf = tinyllm.Tensor(x, requires_grad=True)
    with np.errstate(divide="ignore"):
        y = leaf.logsumexp(dim=1)
    weights = np.array([1.0, 2.0, -0.5])
    (y * tinyllm.Tensor(weights)).sum().backward()
    expected = np.zeros_like(x)
    expected[[0, 2]] = weights[[0, 2], None] * scipy.special.softmax(x[[0, 2]], axis=1)
    np.testing.assert_allclose(leaf.grad.numpy(), expected, rtol=1e-13, atol=1e-16)
    assert y.detach().numpy()[1] == -np.inf
    with tinyllm.no_grad(), np.errstate(divide="ignore"):
        np.testing.assert_array_equal(leaf.logsumexp(dim=1).numpy(), y.detach().numpy())


def test_in_place_change_of_saved_tensor_raises_at_backward():
    x = t64(3)
    w = tinyllm.tensor(np.ones(3))
    y = (x * w).sum()
    w.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        y.backward()


def test_in_place_change_through_a_view_is_detected():
    x = t64(2, 3)
    w = tinyllm.tensor(np.ones((2, 3)))
    view = w.reshape(6)
    y = (x * w).sum()
    view.add_(1.0)
    with pytest.raises(RuntimeError, match="in-place"):
        y.backward()


def test_in_place_on_tensor_requiring_grad_is_refused():
    x = t64(3)
    with pytest.raises(RuntimeError, match="in-place operations on a tensor that requires grad"):
        x.add_(1.0)
    with tinyllm.no_grad():
        x.add_(1.0)  # allowed, as optimizers do


def test_no_grad_and_enable_grad():
    x = t64(3)
    with tinyllm.no_grad():
        y = x * 2
        with tinyllm.enable_grad():
            z = x * 2
    assert not y.requires_grad and y.grad_fn is None
    assert z.requires_grad

    @tinyllm.no_grad()
    def f(a):
        return a * 2

    assert not f(x).requires_grad


def test_grad_and_anomaly_modes_are_thread_local():
    from tinyllm import anomaly

    seen = {}

    def worker():
        seen["grad"] = tinyllm.is_grad_enabled()
        seen["anomaly"] = anomaly.is_anomaly_enabled()
        with tinyllm.no_grad():  # a thread's own switch, undone on exit
            seen["inner"] = tinyllm.is_grad_enabled()
        seen["after"] = tinyllm.is_grad_enabled()

    with tinyllm.no_grad(), tinyllm.detect_anomaly():
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        assert not tinyllm.is_grad_enabled() and anomaly.is_anomaly_enabled()
    assert seen == {"grad": True, "anomaly": False, "inner": False, "after": True}
    assert tinyllm.is_grad_enabled() and not anomaly.is_anomaly_enabled()


def test_anomaly_mode_names_the_op_and_where_it_was_created():
    x = tinyllm.tensor([-1.0, 1.0], requires_grad=True)
    with tinyllm.detect_anomaly():
        with pytest.raises(FloatingPointError, match="Log.forward produced NaN"):
            x.log()
    x2 = tinyllm.tensor([0.0, 1.0], requires_grad=True)
    with tinyllm.detect_anomaly():
        y = x2.sqrt()  # sqrt(0) = 0 is finite; its backward 1/(2*0) is Inf
        with pytest.raises(
            FloatingPointError, match=r"Sqrt.backward produced Inf(.|\n)*test_autograd"
        ):
            y.sum().backward()


def test_hooks_and_retain_grad():
    x = t64(3)
    h = x * 3
    h.retain_grad()
    seen = []
    h.register_hook(lambda g: seen.append(g.numpy().copy()))
    x.register_hook(lambda g: g * 10)
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), 2 * h.data)
    np.testing.assert_allclose(seen[0], 2 * h.data)
    np.testing.assert_allclose(x.grad.numpy(), 10 * 3 * 2 * h.data)


class TwoGrads(Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, dy):
        return dy, dy


class WrongShape(Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, dy):
        return dy[:1]


class WrongDtype(Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, dy):
        return dy.astype(np.float64)


def test_engine_checks_what_backward_returns():
    x = tinyllm.randn(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="TwoGrads.backward returned 2 gradients, expected 1"):
        TwoGrads.apply(x).sum().backward()
    with pytest.raises(RuntimeError, match="WrongShape.backward returned a gradient of shape"):
        WrongShape.apply(x).sum().backward()
    with pytest.raises(RuntimeError, match="WrongDtype.backward returned a float64 gradient"):
        WrongDtype.apply(x).sum().backward()


def test_integer_inputs_get_no_gradient():
    x = t64(4, 3)
    idx = tinyllm.tensor([0, 2, 2])
    y = x.gather(0, idx.reshape(3, 1).expand(3, 3))
    y.sum().backward()
    assert idx.grad is None and not idx.requires_grad
    np.testing.assert_allclose(x.grad.numpy().sum(axis=1), [3, 0, 6, 0])


def test_backward_needs_gradient_for_non_scalar():
    y = t64(3) * 2
    with pytest.raises(RuntimeError, match="implicitly created only for one-element"):
        y.backward()
    with pytest.raises(RuntimeError, match="does not require grad"):
        tinyllm.tensor([1.0]).backward()


def test_leaf_grads_never_alias_each_other():
    a, b = t64(3), t64(3, seed=1)
    (a + b).sum().backward()
    a.grad.data[...] = 5.0
    np.testing.assert_array_equal(b.grad.numpy(), np.ones(3))
