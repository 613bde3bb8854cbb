"""GradScaler: a replay with injected overflows against a hand-derived trace (scale halves and
the step is skipped on inf/NaN, doubles after growth_interval clean steps), exact unscaling,
the call-order errors, state dicts, and torch.amp.GradScaler step by step where installed."""

import numpy as np
import pytest

import tinyllm
from tinyllm.amp import GradScaler
from tinyllm.optim import SGD

# per iteration: None = clean; otherwise the value injected into one gradient entry
EVENTS = [None, None, None, np.inf, None, None, None, None, np.nan, None, -np.inf, None]
# growth_interval = 3, by the rule: x2 on the 3rd consecutive clean step, x0.5 on an overflow
SCALES = [65536, 65536, 131072, 65536, 65536, 65536, 131072, 131072, 65536, 65536, 32768, 32768]
TRACKER = [1, 2, 0, 0, 1, 2, 0, 1, 0, 1, 0, 1]


def _replay(events, growth_interval=3, unscale_first=False, dtype=np.float32):
    """Train x . w on a fixed x with SGD; the loss is scaled, so grads are S * x, with one
    entry overwritten by the injected value on an overflow iteration."""
    x = np.array([0.5, -1.25, 2.0, 0.75])
    w = tinyllm.nn.Parameter(np.array([1.0, 2.0, -1.0, 0.5], dtype=dtype))
    opt = SGD([w], lr=0.1)
    scaler = GradScaler("cpu", growth_interval=growth_interval)
    trace = []
    for bad in events:
        opt.zero_grad()
        loss = (w * tinyllm.tensor(x.astype(dtype))).sum()
        scaler.scale(loss).backward()
        if bad is not None:
            w.grad.data[1] = bad
        before = w.data.copy()
        if unscale_first:
            scaler.unscale_(opt)
        scaler.step(opt)
        scaler.update()
        trace.append((scaler.get_scale(), scaler.state_dict()["_growth_tracker"], before,
                      w.data.copy(), w.grad.data.copy()))  # fmt: skip
    return x, trace


@pytest.mark.parametrize("unscale_first", [False, True])
def test_replay_with_injected_overflows(unscale_first):
    x, trace = _replay(EVENTS, unscale_first=unscale_first)
    assert [t[0] for t in trace] == SCALES
    assert [t[1] for t in trace] == TRACKER
    for bad, (_, _, before, after, grad) in zip(EVENTS, trace):
        if bad is None:
            # powers-of-two scale: S x / S == x exactly, so the step is exactly SGD's
            np.testing.assert_array_equal(grad, x.astype(np.float32))
            np.testing.assert_array_equal(after, before - np.float32(0.1) * x.astype(np.float32))
        else:
            np.testing.assert_array_equal(after, before)  # the step was skipped


def test_scale_multiplies_tensors_and_sequences():
    scaler = GradScaler("cpu", init_scale=8.0)
    assert scaler.get_scale() == 8.0  # before the first scale(), as in PyTorch
    a, b = tinyllm.tensor(np.array([1.5])), tinyllm.tensor(np.array([-2.0]))
    assert scaler.scale(a).item() == 12.0
    out = scaler.scale([a, (b,)])
    assert isinstance(out, list) and out[0].item() == 12.0 and out[1][0].item() == -16.0
    with pytest.raises(ValueError, match="outputs must be a Tensor"):
        scaler.scale(3.0)


def test_growth_stops_before_overflowing_float32():
    scaler = GradScaler("cpu", init_scale=2.0**127, growth_interval=1)
    w = tinyllm.nn.Parameter(np.ones(1, dtype=np.float32))
    opt = SGD([w], lr=0.1)
    scaler.scale(w.sum()).backward()  # grad 2^127: finite
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 2.0**127  # 2^128 is inf in float32: kept


def test_call_order_errors():
    w = tinyllm.nn.Parameter(np.ones(2, dtype=np.float32))
    opt = SGD([w], lr=0.1)
    scaler = GradScaler("cpu")
    with pytest.raises(RuntimeError, match="did not use scaler.scale"):
        scaler.step(opt)
    scaler.scale(w.sum()).backward()
    scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="unscale_\\(\\) has already been called"):
        scaler.unscale_(opt)
    scaler.step(opt)
    with pytest.raises(RuntimeError, match="step\\(\\) has already been called"):
        scaler.step(opt)
    with pytest.raises(RuntimeError, match="after step"):
        scaler.unscale_(opt)
    scaler.update()
    with pytest.raises(RuntimeError, match="no inf checks were recorded"):
        scaler.update()
    h = tinyllm.nn.Parameter(np.ones(2, dtype=np.float16))
    h.grad = tinyllm.tensor(np.ones(2, dtype=np.float16))
    with pytest.raises(ValueError, match="FP16 gradients"):
        scaler.unscale_(SGD([h]))
    no_grads = SGD([tinyllm.nn.Parameter(np.ones(2))])
    with pytest.raises(RuntimeError, match="no inf checks were recorded for this optimizer"):
        scaler.step(no_grads)
    with pytest.raises(ValueError, match="growth_factor must be > 1.0"):
        GradScaler(growth_factor=1.0)


def test_update_with_new_scale_and_state_dict_round_trip():
    scaler = GradScaler("cpu", growth_interval=3)
    scaler.scale(tinyllm.tensor(np.ones(1)))
    scaler.update(new_scale=1024.0)
    assert scaler.get_scale() == 1024.0
    src = GradScaler("cpu", init_scale=4.0, growth_interval=7)
    src.scale(tinyllm.tensor(np.ones(1)))
    src._growth_tracker = 5
    dst = GradScaler("cpu")
    dst.load_state_dict(src.state_dict())
    assert dst.state_dict() == {"scale": 4.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                "growth_interval": 7, "_growth_tracker": 5}  # fmt: skip
    assert GradScaler(enabled=False).state_dict() == {}
    with pytest.raises(RuntimeError, match="state dict is empty"):
        dst.load_state_dict({})


def test_disabled_scaler_is_a_pass_through():
    w = tinyllm.nn.Parameter(np.ones(2))
    opt = SGD([w], lr=0.5)
    scaler = GradScaler(enabled=False)
    loss = w.sum()
    assert scaler.scale(loss) is loss and scaler.get_scale() == 1.0
    loss.backward()
    scaler.step(opt)
    scaler.update()
    np.testing.assert_array_equal(w.data, [0.5, 0.5])


def test_replay_matches_torch_grad_scaler():
    """Optional oracle: torch.amp.GradScaler("cpu", growth_interval=3) on the same replay."""
    torch = pytest.importorskip("torch")
    x, trace = _replay(EVENTS, dtype=np.float64)
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0, -1.0, 0.5], dtype=torch.float64))
    opt = torch.optim.SGD([w], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", growth_interval=3)
    for bad, (scale, tracker, _, after, _) in zip(EVENTS, trace):
        opt.zero_grad()
        scaler.scale((w * torch.tensor(x)).sum()).backward()
        if bad is not None:
            w.grad[1] = float(bad)
        scaler.step(opt)
        scaler.update()
        assert scaler.get_scale() == scale
        assert scaler.state_dict()["_growth_tracker"] == tracker
        # float64; torch's SGD may fuse p - lr g differently from ours: ulps only
        np.testing.assert_allclose(w.detach().numpy(), after, rtol=1e-15, atol=1e-16)
