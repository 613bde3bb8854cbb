"""Optional oracle: PyTorch (skipped when not installed; never a dependency)."""

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F

torch = pytest.importorskip("torch")


def _pair(rng, *shape):
    a = rng.standard_normal(shape)
    return tinyllm.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)


CASES = {
    "softmax": (lambda x: F.softmax(x, -1), lambda x: torch.softmax(x, -1)),
    "log_softmax": (lambda x: F.log_softmax(x, 0), lambda x: torch.log_softmax(x, 0)),
    "logsumexp": (lambda x: x.logsumexp(-1), lambda x: x.logsumexp(-1)),
    "var": (lambda x: x.var(1), lambda x: x.var(1)),
    "max_dim": (lambda x: x.max(1).values, lambda x: x.max(1).values),
    "tanh_matmul": (lambda x: (x @ x.T).tanh(), lambda x: (x @ x.T).tanh()),
    "index": (lambda x: x[[0, 0, 2], 1:], lambda x: x[[0, 0, 2], 1:]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_ops_match_torch(name):
    ours, theirs = CASES[name]
    rng = np.random.default_rng(0)
    a, b = _pair(rng, 3, 5)
    ya, yb = ours(a), theirs(b)
    np.testing.assert_allclose(ya.detach().numpy(), yb.detach().numpy(), rtol=1e-12, atol=1e-12)
    v = rng.standard_normal(ya.shape)
    ya.backward(v)
    yb.backward(torch.tensor(v))
    np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_cross_entropy_matches_torch():
    rng = np.random.default_rng(1)
    a, b = _pair(rng, 6, 4)
    target = np.array([0, 3, -100, 1, 2, 2])
    la = F.cross_entropy(a, tinyllm.tensor(target), label_smoothing=0.1)
    lb = torch.nn.functional.cross_entropy(b, torch.tensor(target), label_smoothing=0.1)
    assert la.item() == pytest.approx(lb.item(), rel=1e-12)
    la.backward()
    lb.backward()
    np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_adamw_matches_torch():
    rng = np.random.default_rng(2)
    p0 = rng.standard_normal((4, 3)).astype(np.float32)
    ours = tinyllm.nn.Parameter(p0.copy())
    theirs = torch.nn.Parameter(torch.tensor(p0.copy()))
    opt_a = tinyllm.optim.AdamW([ours], lr=0.05, betas=(0.9, 0.99), weight_decay=0.1)
    opt_b = torch.optim.AdamW([theirs], lr=0.05, betas=(0.9, 0.99), weight_decay=0.1)
    for _ in range(10):
        g = rng.standard_normal(p0.shape).astype(np.float32)
        ours.grad = tinyllm.tensor(g)
        theirs.grad = torch.tensor(g)
        opt_a.step()
        opt_b.step()
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_clip_grad_norm_matches_torch():
    rng = np.random.default_rng(3)
    grads = [rng.standard_normal(s) for s in [(3, 2), (5,)]]
    ps = [tinyllm.nn.Parameter(np.zeros(g.shape)) for g in grads]
    ts = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64)) for g in grads]
    for p, t, g in zip(ps, ts, grads):
        p.grad, t.grad = tinyllm.tensor(g.copy()), torch.tensor(g.copy())
    na = tinyllm.nn.utils.clip_grad_norm_(ps, 0.5)
    nb = torch.nn.utils.clip_grad_norm_(ts, 0.5)
    assert na.item() == pytest.approx(nb.item(), rel=1e-12)
    for p, t in zip(ps, ts):
        np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), rtol=1e-12)
