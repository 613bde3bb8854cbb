"""quantize_model's options: true-sequential order, AWQ scales before GPTQ, mixed bits."""

import numpy as np

import tinyllm
from tinyllm import nn
from tinyllm.quant import QuantLinear, awq_scale_search, gptq_quantize, quantize_model
from tinyllm.quant.gptq import HessianAccumulator
from tinyllm.quant.model import _execution_order, _linears, quantize_linear


class Backwards(nn.Module):
    """Registers ``late`` before ``early`` but computes early, then late (as BERT's layer
    registers its FFN before its attention)."""

    def __init__(self):
        super().__init__()
        self.late = nn.Linear(8, 4)
        self.early = nn.Linear(6, 8)

    def forward(self, x):
        return self.late(tinyllm.functional.relu(self.early(x)))


def test_sequential_order_is_the_compute_order_not_registration():
    tinyllm.manual_seed(0)
    model = Backwards()
    targets = _linears(model, ())
    assert [n for n, _, _ in targets] == ["late", "early"]
    batch = tinyllm.randn(3, 6)
    ordered = _execution_order(model, targets, batch, lambda m, b: m(b))
    assert [n for n, _, _ in ordered] == ["early", "late"]
    # and sequential GPTQ quantizes both, the forward still runs
    calib = [tinyllm.randn(16, 6) for _ in range(2)]
    quantize_model(model, "gptq", 4, None, calibration=calib, sequential=True)
    assert isinstance(model.early, QuantLinear) and isinstance(model.late, QuantLinear)


def test_gptq_with_awq_scales_is_gptq_on_the_scaled_layer():
    rng = np.random.default_rng(0)
    K, N = 32, 12
    X = rng.standard_normal((400, K)) * np.exp(rng.standard_normal(K))  # uneven channels
    W = rng.standard_normal((N, K)) * 0.1
    lin = nn.Linear(K, N, bias=False)
    lin.weight.data = W.astype(np.float32)
    acc = HessianAccumulator(K)
    acc.add_batch(X)
    layer = quantize_linear(lin, "gptq", 4, 8, inputs=X, hessian=acc.H, awq_scales=True)
    s, _, _ = awq_scale_search(lin.weight.data.astype(np.float64), X, 4, 8, False)
    np.testing.assert_allclose(layer.input_scale, s, rtol=1e-6)
    # independent: the Hessian of the scaled inputs X / s accumulated directly
    scaled = HessianAccumulator(K)
    scaled.add_batch(X / s)
    want, _ = gptq_quantize(lin.weight.data.astype(np.float64) * s, scaled.H, 4, 8, False)
    np.testing.assert_array_equal(layer.qweight.codes, want.codes)
    # the layer computes (x / s) W_hat^T: close to x W^T on the calibration inputs
    y = layer(tinyllm.tensor(X.astype(np.float32))).numpy()
    rel = np.linalg.norm(y - X @ W.T) / np.linalg.norm(X @ W.T)
    assert rel < 0.1  # 4-bit g8 on a random layer: measured 0.040


def test_layer_bits_patterns_give_mixed_widths():
    tinyllm.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16))
    quantize_model(model, "rtn", 4, 8, layer_bits={"2": 8})
    widths = {
        name: m.qweight.bits for name, m in model.named_modules() if isinstance(m, QuantLinear)
    }
    assert widths == {"0": 4, "2": 8}
