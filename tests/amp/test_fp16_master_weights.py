"""The loss scaler in the float16 workflow it exists for: a float16 copy computes the loss and
its gradients, float32 master weights take the unscaled gradients and the step. Without
scaling, these gradients underflow to zero in float16; with S = 2^16 they survive to within
float16's rounding, checked against the float64 analytic gradient."""

import numpy as np
import pytest

import tinyllm
from tinyllm.amp import GradScaler
from tinyllm.optim import SGD


def _fp16_grads(master, x, loss_weight, scaler=None):
    """Gradient of loss_weight * sum(w * x) computed through a float16 copy of ``master``: the
    product in float16, the reduction and the loss in float32 (as autocast does; S = 2^16 is
    above float16's max 65504, so a float16 loss could not even be scaled)."""
    w16 = tinyllm.nn.Parameter(master.data.astype(np.float16))
    loss = (w16 * tinyllm.tensor(x.astype(np.float16))).float().sum() * loss_weight
    (scaler.scale(loss) if scaler else loss).backward()
    master.grad = tinyllm.tensor(w16.grad.data.astype(np.float32))  # fp16 -> fp32 master grad


def test_unscaled_fp16_gradients_underflow_and_scaled_ones_survive():
    rng = np.random.default_rng(0)
    x = rng.uniform(1e-4, 1e-3, 256)  # normal float16 numbers (smallest normal: 6.1e-5)
    loss_weight = 1e-4
    master = tinyllm.nn.Parameter(rng.standard_normal(256).astype(np.float32))
    want = loss_weight * x  # d loss / d w in float64: 1e-8..1e-7, float16 subnormals or zero

    _fp16_grads(master, x, loss_weight)
    rel = np.abs(master.grad.data - want) / want
    assert (master.grad.data == 0).mean() > 0.1  # below half of 2^-24: flushed to zero
    assert np.median(rel) > 0.1  # the rest keeps at most a few bits

    scaler = GradScaler("cpu")
    opt = SGD([master], lr=1.0)
    w0 = master.data.copy()
    _fp16_grads(master, x, loss_weight, scaler)
    scaler.step(opt)  # unscales into the float32 master grads, then steps
    scaler.update()
    assert scaler.get_scale() == 2.0**16  # no overflow, 1 of 2000 clean steps
    # float16 rounds x and the gradient S * loss_weight * x: 2 roundings of 2^-11 each
    np.testing.assert_allclose(master.grad.data, want, rtol=2 * 2.0**-11)
    np.testing.assert_allclose(master.data, w0 - master.grad.data, rtol=0, atol=1e-6)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_overflowing_fp16_loss_skips_the_step_and_backs_off():
    """S * loss_weight = 32768 is a float16 number, but the gradient 32768 * x = 131072 is
    above float16's max (65504): inf gradients, the step is skipped and S halves."""
    master = tinyllm.nn.Parameter(np.ones(4, dtype=np.float32))
    opt = SGD([master], lr=1.0)
    scaler = GradScaler("cpu")
    _fp16_grads(master, np.full(4, 4.0), 0.5, scaler)
    assert np.isinf(master.grad.data).all()
    scaler.step(opt)
    scaler.update()
    np.testing.assert_array_equal(master.data, np.ones(4, dtype=np.float32))
    assert scaler.get_scale() == 2.0**15
