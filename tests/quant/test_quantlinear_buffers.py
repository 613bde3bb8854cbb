"""QuantLinear's packed operands are non-persistent buffers: ``Module.to`` reaches them (the
traversal that moves parameters and buffers), ``state_dict`` and the checkpoint format do not
change, and ``model_nbytes`` counts the stored weight once. The device move itself is tested on
the CuPy stand-in (test_quant_cuda_standin.py)."""

import numpy as np
import pytest

import tinyllm
from tinyllm import nn
from tinyllm.quant import QuantLinear, model_nbytes
from tinyllm.quant.model import quantize_linear

OPERANDS = {"packed", "scales", "zeros", "table", "inv_input_scale"}


def _layer(method: str, bits: int = 4) -> tuple[QuantLinear, nn.Linear]:
    tinyllm.manual_seed(0)
    lin = nn.Linear(64, 12)
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((32, 64)) * np.exp(rng.standard_normal(64))
    return quantize_linear(lin, method, bits=bits, group_size=16, inputs=inputs), lin


@pytest.mark.parametrize(
    "method,present",
    [
        ("rtn", {"packed", "scales", "zeros", "table"}),
        ("awq", {"packed", "scales", "zeros", "table", "inv_input_scale"}),
        ("nf4", {"packed", "scales", "table"}),
        ("fp8", {"packed", "scales", "table"}),
        ("llm_int8", set()),
    ],
)
def test_packed_operands_are_buffers_reached_by_to(method, present):
    q, _ = _layer(method, 8 if method == "llm_int8" else 4)
    buffers = dict(q.named_buffers())
    assert set(buffers) & OPERANDS == present
    assert set(q.state_dict()) == {"bias"}  # non-persistent: the checkpoint format is unchanged
    x = tinyllm.tensor(np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32))
    want = q(x).numpy()
    seen = {name: id(buffers[name].data) for name in present}
    q.to("cpu")
    np.testing.assert_array_equal(q(x).numpy(), want)
    q.double()  # a dtype cast converts the float operands (as every buffer), not the codes
    for name in present:  # new arrays: Module.to visited every operand
        t = getattr(q, name)
        assert t.dtype == (np.uint8 if name == "packed" else np.float64), name
        assert name == "packed" or id(t.data) != seen[name]
    x64 = tinyllm.tensor(x.numpy().astype(np.float64))
    # float32 operands upcast exactly: the float64 product is the same as before the cast
    np.testing.assert_allclose(q(x64).numpy(), want, rtol=1e-5, atol=1e-5)


def test_buffers_follow_to_while_the_stored_weight_stays_on_the_host():
    """quantized_state (the checkpoint) reads qweight and input_scale, not the buffers."""
    q, _ = _layer("awq")
    stored = q.qweight.qweight.copy()
    q.double()
    assert q.qweight.qweight.dtype == np.uint8 and q.input_scale.dtype == np.float32
    np.testing.assert_array_equal(q.qweight.qweight, stored)


def test_model_nbytes_counts_a_quantized_layer_once():
    q, _ = _layer("awq")
    model = nn.Sequential(q, nn.Linear(12, 3))
    params = sum(p.data.nbytes for p in model.parameters())
    assert model_nbytes(model) == params + q.nbytes  # q.nbytes: weight, bias, input scale
