"""Tensor attributes, constructors, conversions, errors."""

import numpy as np
import pytest

import tinyllm
from tinyllm import backend


def test_constructors_follow_pytorch_dtypes():
    assert tinyllm.tensor([1.0, 2.0]).dtype == np.float32
    assert tinyllm.tensor([1, 2]).dtype == np.int64
    assert tinyllm.tensor([True]).dtype == np.bool_
    assert tinyllm.tensor(np.zeros(2)).dtype == np.float64
    assert tinyllm.zeros(2, 3).shape == (2, 3) and tinyllm.zeros((2, 3)).dtype == np.float32
    assert tinyllm.arange(5).dtype == np.int64 and tinyllm.arange(0.0, 1.0, 0.25).shape == (4,)
    assert tinyllm.full((2,), 7).dtype == np.int64
    assert tinyllm.ones_like(tinyllm.zeros(2, dtype="float64")).dtype == np.float64


def test_manual_seed_makes_randn_repeatable():
    tinyllm.manual_seed(3)
    a = tinyllm.randn(4).numpy().copy()
    tinyllm.manual_seed(3)
    np.testing.assert_array_equal(a, tinyllm.randn(4).numpy())


def test_attributes_and_conversions():
    x = tinyllm.randn(2, 3, requires_grad=True)
    assert x.is_leaf and x.requires_grad and x.ndim == 2 and x.device == "cpu"
    y = x * 2
    assert not y.is_leaf and y.grad_fn is not None
    with pytest.raises(RuntimeError, match="detach"):
        x.numpy()
    assert x.detach().numpy().shape == (2, 3)
    assert x.double().dtype == np.float64
    assert tinyllm.tensor([3.5]).item() == 3.5
    with pytest.raises(ValueError, match="only one-element"):
        x.item()
    with pytest.raises(RuntimeError, match="only floating-point"):
        tinyllm.tensor([1, 2], requires_grad=True)


def test_cast_is_differentiable():
    x = tinyllm.tensor(np.arange(3.0), requires_grad=True)
    (x.float() * 2).sum().backward()
    assert x.grad.dtype == np.float64
    np.testing.assert_array_equal(x.grad.numpy(), [2, 2, 2])


def test_max_with_dim_returns_named_tuple():
    x = tinyllm.tensor([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]], requires_grad=True)
    out = x.max(dim=1)
    np.testing.assert_array_equal(out.values.detach().numpy(), [5, 7])
    np.testing.assert_array_equal(out.indices.numpy(), [1, 0])
    values, indices = x.min(1)
    values.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[1, 0, 0], [0, 1, 0]])


def test_shape_errors_name_the_op_and_shapes():
    a, b = tinyllm.randn(2, 3), tinyllm.randn(4, 5)
    with pytest.raises(RuntimeError, match=r"matmul: shapes \(2, 3\) and \(4, 5\)"):
        a @ b
    with pytest.raises(
        RuntimeError, match=r"reshape: shape \(4,\) is invalid for input of shape \(2, 3\)"
    ):
        a.reshape(4)
    with pytest.raises(RuntimeError, match=r"cat: tensor 1 has shape \(4, 5\)"):
        tinyllm.cat([a, b])
    with pytest.raises(IndexError, match="sum: dim=2 is out of range"):
        a.sum(2)


def test_cuda_request_without_gpu_is_a_clear_error():
    if backend.cuda_is_available():
        pytest.skip("a GPU is available here")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        tinyllm.zeros(2, device="cuda")


class _FakeGpuArray(np.ndarray):
    """Stands in for a CuPy array: a different array type that reports device 'cuda'."""


def test_mixing_devices_names_both(monkeypatch):
    """Tensors on two devices are refused by every op (a GPU array simulated on the CPU)."""
    real_device_of = backend.device_of
    monkeypatch.setattr(
        backend,
        "device_of",
        lambda a: "cuda" if isinstance(a, _FakeGpuArray) else real_device_of(a),
    )
    a = tinyllm.randn(2)
    b = tinyllm.Tensor(np.zeros(2, dtype=np.float32).view(_FakeGpuArray))
    assert b.device == "cuda"
    with pytest.raises(
        RuntimeError, match="Add: expected all tensors on the same device, got cpu and cuda"
    ):
        a + b


def test_numpy_scalar_on_the_left_defers_to_tensor():
    x = tinyllm.tensor([1.0, 2.0], requires_grad=True)
    y = np.float32(2.0) * x
    assert isinstance(y, tinyllm.Tensor) and y.requires_grad


def test_indexing_forms_and_setitem():
    x = tinyllm.tensor(np.arange(12.0).reshape(3, 4), requires_grad=True)
    y = x[x.detach() > 5]
    assert y.shape == (6,)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy().reshape(-1), (np.arange(12) > 5).astype(float))
    z = tinyllm.zeros(3)
    z[1] = 4.0
    np.testing.assert_array_equal(z.numpy(), [0, 4, 0])
