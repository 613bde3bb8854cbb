"""causal_linear_attention beyond the registry's checks (reference, composite, gradcheck):
the chunk size changes nothing, long sequences match the quadratic form, the output is
causal, memory stays linear in T, bad input is refused by name."""

import tracemalloc

import numpy as np
import pytest

import tinyllm
from tinyllm.functional import causal_linear_attention
from tinyllm.functional.linear_attention import causal_linear_attention_parallel


def _inputs(rng, *shape, dv=None):
    q, k = rng.standard_normal(shape), rng.standard_normal(shape)
    v = rng.standard_normal(shape[:-1] + (dv or shape[-1],))
    return q, k, v


def _run(fn, arrays, cot, **kw):
    ts = [tinyllm.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*ts, **kw)
    out.backward(tinyllm.tensor(cot))
    return out.data, [t.grad.data for t in ts]


def test_chunk_size_changes_nothing():
    rng = np.random.default_rng(0)
    arrays = _inputs(rng, 2, 2, 37, 3, dv=5)
    cot = rng.standard_normal((2, 2, 37, 5))
    base, gbase = _run(causal_linear_attention, arrays, cot, chunk_size=1)  # pure recurrence
    for c in (2, 7, 37, 64):
        out, grads = _run(causal_linear_attention, arrays, cot, chunk_size=c)
        # float64, the same sums grouped differently: 1e-12
        np.testing.assert_allclose(out, base, rtol=1e-12, atol=1e-12)
        for g, gb in zip(grads, gbase):
            np.testing.assert_allclose(g, gb, rtol=1e-12, atol=1e-12)


def test_long_sequence_equals_quadratic_form_with_gradients():
    rng = np.random.default_rng(1)
    arrays = _inputs(rng, 1, 300, 4)
    cot = rng.standard_normal((1, 300, 4))
    out, grads = _run(causal_linear_attention, arrays, cot)
    ref, gref = _run(causal_linear_attention_parallel, arrays, cot)
    # float64 sums of 300 positive terms in another order: 1e-10 relative
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)
    for g, gr in zip(grads, gref):
        np.testing.assert_allclose(g, gr, rtol=1e-10, atol=1e-10)


def test_output_is_causal():
    rng = np.random.default_rng(2)
    q, k, v = _inputs(rng, 2, 20, 3)
    out = causal_linear_attention(*(tinyllm.tensor(a) for a in (q, k, v)), chunk_size=8).data
    q2, k2, v2 = (a.copy() for a in (q, k, v))
    for a in (q2, k2, v2):
        a[:, 11:] = rng.standard_normal(a[:, 11:].shape)  # change the future of step 10
    out2 = causal_linear_attention(*(tinyllm.tensor(a) for a in (q2, k2, v2)), chunk_size=8).data
    np.testing.assert_array_equal(out[:, :11], out2[:, :11])
    assert not np.allclose(out[:, 11:], out2[:, 11:])


def test_memory_is_linear_in_T():
    """Forward + backward at T = 4096 allocate far less than one [T, T] float64 array."""
    T, D = 4096, 4
    rng = np.random.default_rng(3)
    ts = [tinyllm.tensor(a, requires_grad=True) for a in _inputs(rng, 1, T, D)]
    tracemalloc.start()
    causal_linear_attention(*ts).sum().backward()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    one_square = T * T * 8  # 134 MB
    assert peak < one_square / 20, f"peak {peak / 1e6:.1f} MB"


def test_float32_in_float32_out():
    rng = np.random.default_rng(4)
    ts = [tinyllm.tensor(a.astype(np.float32), requires_grad=True) for a in _inputs(rng, 9, 2)]
    out = causal_linear_attention(*ts)
    out.sum().backward()
    assert out.dtype == np.float32 and all(t.grad.dtype == np.float32 for t in ts)


def test_bad_input_is_named():
    x = tinyllm.zeros(2, 5, 3)
    with pytest.raises(ValueError, match="causal_linear_attention: k of shape"):
        causal_linear_attention(x, tinyllm.zeros(2, 5, 4), x)
    with pytest.raises(ValueError, match="causal_linear_attention: v of shape"):
        causal_linear_attention(x, x, tinyllm.zeros(2, 4, 3))
    with pytest.raises(ValueError, match="chunk_size"):
        causal_linear_attention(x, x, x, chunk_size=0)
    with pytest.raises(TypeError, match="causal_linear_attention: q"):
        causal_linear_attention(tinyllm.tensor(np.zeros((5, 3), np.int64)), x, x)


def test_gradients_match_torch_autograd_of_the_quadratic_form():
    """Optional peer oracle: PyTorch's autograd of the masked quadratic form."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    arrays = _inputs(rng, 2, 3, 19, 4, dv=3)
    cot = rng.standard_normal((2, 3, 19, 3))
    out, grads = _run(causal_linear_attention, arrays, cot, chunk_size=5)
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in arrays)
    phi = lambda x: torch.nn.functional.elu(x) + 1  # noqa: E731
    A = torch.tril(phi(tq) @ phi(tk).transpose(-1, -2))
    ref = (A @ tv) / (A.sum(-1, keepdim=True) + 1e-6)
    ref.backward(torch.tensor(cot))
    # float64, another library's kernels and summation order: 1e-10
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    for g, t in zip(grads, (tq, tk, tv)):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-10, atol=1e-10)
