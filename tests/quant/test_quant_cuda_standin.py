"""Quantized layers and LKD on device="cuda" (the CuPy stand-in, tests/cupy_standin; no GPU
needed): ``Module.to`` moves a QuantLinear's packed operands, the layer then computes on the
device what it computes on the CPU, and LKD distills a model that lives on the device."""

import copy
import sys
from pathlib import Path

import numpy as np
import pytest

import tinyllm
from tinyllm import nn
from tinyllm.models import build_model
from tinyllm.models.config import ModelConfig
from tinyllm.quant import QuantLinear
from tinyllm.quant.lkd import lkd_quantize
from tinyllm.quant.model import quantize_linear

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: cupy_standin

import cupy_standin  # noqa: E402

pytestmark = cupy_standin.needs_compiler()
standin = cupy_standin.fixture()

OPERANDS = ("packed", "scales", "zeros", "table", "inv_input_scale")


def _forward_backward(q, x, device):
    xt = tinyllm.tensor(x, device=device, requires_grad=True)
    y = q(xt)
    y.backward(tinyllm.ones(*y.shape, dtype=y.dtype, device=device))
    return y.detach().cpu().numpy(), xt.grad.cpu().numpy()


@pytest.mark.parametrize("method", ["rtn", "awq", "nf4", "zeroquant"])
def test_to_cuda_moves_the_packed_operands_and_the_layer_computes_the_same(method):
    tinyllm.manual_seed(0)
    lin = nn.Linear(64, 12)
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((32, 64)) * np.exp(rng.standard_normal(64))
    q = quantize_linear(lin, method, bits=4, group_size=16, inputs=inputs)
    x = rng.standard_normal((3, 64))
    want, want_dx = _forward_backward(q, x, "cpu")
    q.to("cuda")
    moved = [getattr(q, n) for n in OPERANDS if getattr(q, n) is not None]
    assert len(moved) >= 3 and all(t.device == "cuda" for t in moved)
    got, got_dx = _forward_backward(q, x, "cuda")
    # float64 x on both: the CUDA kernel (emulated) against the CPU tier, summation order apart
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got_dx, want_dx, rtol=1e-10, atol=1e-10)
    q.to("cpu")
    assert all(isinstance(getattr(q, n).data, np.ndarray) for n in OPERANDS
               if getattr(q, n) is not None)  # fmt: skip
    np.testing.assert_array_equal(_forward_backward(q, x, "cpu")[0], want)


def test_token_activation_quantization_stays_on_the_device():
    """act_quant="token" (ZeroQuant, LKD's student) runs on the device: no copy to the host."""
    tinyllm.manual_seed(0)
    q = quantize_linear(nn.Linear(32, 8), "zeroquant", bits=4, group_size=16).to("cuda")
    x = tinyllm.tensor(np.random.default_rng(1).standard_normal((4, 32)), device="cuda")
    cupy_standin.COUNTERS.reset()
    y = q(x)
    assert y.device == "cuda"
    assert cupy_standin.COUNTERS.n_d2h == 0, cupy_standin.COUNTERS.d2h


def test_lkd_student_forward_stays_on_the_device():
    """The student's fake quantization takes its scales from the latent weight on the
    device: a training step's forward and backward copy nothing to the host."""
    from tinyllm.quant.lkd import StudentLinear

    tinyllm.manual_seed(0)
    student = StudentLinear(nn.Linear(32, 8), bits=4, group_size=16, act_quant=True).to("cuda")
    x = tinyllm.tensor(np.random.default_rng(1).standard_normal((4, 32), dtype=np.float32),
                       device="cuda")  # fmt: skip
    cupy_standin.COUNTERS.reset()
    y = student(x)
    y.sum().backward()
    assert y.device == "cuda" and student.weight.grad.device == "cuda"
    assert cupy_standin.COUNTERS.n_d2h == 0, cupy_standin.COUNTERS.d2h
    assert cupy_standin.COUNTERS.n_syncs == 0, cupy_standin.COUNTERS.report()


def _llama_and_batches():
    """A 1-layer float64 Llama, two calibration batches [2, 8] and a test batch [1, 8]."""
    cfg = ModelConfig(arch="llama", vocab_size=32, d_model=32, n_layer=1, n_head=2,
                      block_size=8)  # fmt: skip
    tinyllm.manual_seed(0)
    calib = [np.random.default_rng(i).integers(0, 32, (2, 8)) for i in range(2)]
    return build_model(cfg).double(), calib, np.random.default_rng(9).integers(0, 32, (1, 8))


def test_lkd_distills_a_model_on_the_device_like_on_the_cpu():
    teacher, calib, idx = _llama_and_batches()
    results = {}
    for device in ("cpu", "cuda"):
        model = copy.deepcopy(teacher).to(device)
        lkd_quantize(model, list(model.blocks), calib,
                     lambda m, b, d=device: m(tinyllm.tensor(b, device=d)), bits=4,
                     group_size=16, steps=3, lr=1e-3)  # fmt: skip
        layers = [m for m in model.modules() if isinstance(m, QuantLinear)]
        assert len(layers) == 6 and all(m.packed.device == device for m in layers)
        with tinyllm.no_grad():
            logits = model(tinyllm.tensor(idx, device=device)).cpu().numpy()
        results[device] = (logits, [m.qweight.qweight for m in layers])
    (cpu, cpu_codes), (gpu, gpu_codes) = results["cpu"], results["cuda"]
    for a, b in zip(cpu_codes, gpu_codes):  # float64: the same training, the same codes
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(gpu, cpu, rtol=1e-8, atol=1e-8)


def test_quantize_model_puts_the_packed_layers_on_the_models_device():
    from tinyllm.quant import quantize_model

    teacher, calib, idx = _llama_and_batches()
    logits = {}
    for device in ("cpu", "cuda"):
        model = copy.deepcopy(teacher).to(device)
        quantize_model(model, "gptq", 4, 16, calibration=calib,
                       forward=lambda m, b, d=device: m(tinyllm.tensor(b, device=d)))  # fmt: skip
        layers = [m for m in model.modules() if isinstance(m, QuantLinear)]
        assert len(layers) == 6 and all(m.packed.device == device for m in layers)
        with tinyllm.no_grad():
            logits[device] = model(tinyllm.tensor(idx, device=device)).cpu().numpy()
    np.testing.assert_allclose(logits["cuda"], logits["cpu"], rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("method", ["gptq", "zeroquant"])
def test_cached_decoding_on_the_device_runs_the_quantized_layers(method):
    """On the device the lean decoder calls each QuantLinear's own forward (its packed
    operands moved there; ZeroQuant's activation quantization included), as on the CPU: the
    logits of prefill equal the module forward's on the device, and the CPU decoder's."""
    from tinyllm.models.decoder import Decoder
    from tinyllm.quant import quantize_model

    model, calib, idx = _llama_and_batches()
    quantize_model(model, method, 4, 16, calibration=calib,
                   forward=lambda m, b: m(tinyllm.tensor(b)))  # fmt: skip
    cpu = Decoder(model, 1, 8).prefill(idx)
    model.to("cuda")
    decoder = Decoder(model, 1, 8)
    assert all(type(layer["qkv"]).__name__ == "_Quantized" for layer in decoder.layers)
    got = decoder.prefill(tinyllm.tensor(idx, device="cuda").data).get()
    with tinyllm.no_grad():
        module = model(tinyllm.tensor(idx, device="cuda")).cpu().numpy()[0, -1]
    # float64: the same layers on the same rows; the attention's summation order differs
    np.testing.assert_allclose(got[0], module, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got, cpu, rtol=1e-10, atol=1e-10)
