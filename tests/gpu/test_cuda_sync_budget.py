"""Host syncs per training step on the device (target: at most 2 outside logging steps)."""

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
from tinyllm import backend
from tinyllm.models import ModelConfig, build_model
from tinyllm.optim import AdamW

TINY = dict(vocab_size=11, d_model=8, n_layer=2, n_head=2, block_size=8)
BUDGET = 2


def _syncs_per_step(arch, counters):
    tinyllm.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, **TINY))
    for p in model.parameters():
        p.data = backend.to_device(p.data, "cuda")
    opt = AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    idx = tinyllm.tensor(np.random.default_rng(0).integers(0, 11, (2, 8)), device="cuda")
    x, y = idx[:, :-1], idx[:, 1:]

    def step():
        loss = F.cross_entropy(model(x).reshape(-1, 11), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        tinyllm.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    step()  # warm-up: compiles, creates optimizer state
    counters.reset()
    step()
    return counters.n_syncs, counters.report()


@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_syncs_are_counted_per_step(arch, counters):
    n, report = _syncs_per_step(arch, counters)
    print(f"\n{arch}: {n} host syncs per training step\n{report}")
    assert n >= 0


@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_training_step_stays_within_the_sync_budget(arch, counters):
    n, report = _syncs_per_step(arch, counters)
    assert n <= BUDGET, f"{n} host syncs per step (budget {BUDGET}):\n{report}"


@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_forward_loss_backward_make_no_host_sync(arch, counters):
    """The engine's part of a step (embedding, attention, loss, backward) reads nothing back:
    the range checks are skipped on device arrays and the mean's count stays on the device."""
    tinyllm.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, **TINY))
    for p in model.parameters():
        p.data = backend.to_device(p.data, "cuda")
    idx = tinyllm.tensor(np.random.default_rng(0).integers(0, 11, (2, 8)), device="cuda")
    F.cross_entropy(model(idx[:, :-1]).reshape(-1, 11), idx[:, 1:].reshape(-1)).backward()
    counters.reset()
    loss = F.cross_entropy(model(idx[:, :-1]).reshape(-1, 11), idx[:, 1:].reshape(-1))
    loss.backward()
    assert counters.n_syncs == 0, counters.report()


def _logits_and_target(device, target):
    rng = np.random.default_rng(0)
    x = tinyllm.tensor(rng.standard_normal((4, 5)), device=device, requires_grad=True)
    return x, tinyllm.tensor(np.array(target), device=device)


def test_cross_entropy_mean_over_rows_not_ignored_on_cuda_without_sync(counters):
    losses, grads = [], []
    for device in ("cpu", "cuda"):
        x, t = _logits_and_target(device, [1, -100, 4, -100])
        counters.reset()
        loss = F.cross_entropy(x, t, ignore_index=-100, label_smoothing=0.1)
        loss.backward()
        if device == "cuda":
            assert counters.n_syncs == 0, counters.report()
        losses.append(loss.item())
        grads.append(x.grad.cpu().numpy())
    assert losses[0] == pytest.approx(losses[1], rel=1e-12)
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-12, atol=1e-15)
    x, t = _logits_and_target("cuda", [-100] * 4)  # no row counts: loss 0, as on the CPU
    assert F.cross_entropy(x, t).item() == 0.0


def test_out_of_range_target_on_cuda_is_nan_unchecked_and_an_error_under_anomaly(counters):
    x, t = _logits_and_target("cuda", [1, 7, 0, 2])
    counters.reset()
    loss = F.cross_entropy(x, t, reduction="none")
    loss.sum().backward()
    assert counters.n_syncs == 0, counters.report()
    got = loss.detach().cpu().numpy()
    assert np.isnan(got[1]) and np.isfinite(got[[0, 2, 3]]).all()
    g = x.grad.cpu().numpy()
    assert np.isnan(g[1]).all() and np.isfinite(g[[0, 2, 3]]).all()
    with tinyllm.detect_anomaly():
        with pytest.raises(IndexError, match="cross_entropy: target value 7 is out of range"):
            F.cross_entropy(x, t)


def test_out_of_range_embedding_index_on_cuda_is_an_error_under_anomaly():
    w = tinyllm.tensor(np.ones((5, 3)), device="cuda")
    idx = tinyllm.tensor(np.array([0, 5]), device="cuda")
    with tinyllm.detect_anomaly():
        with pytest.raises(IndexError, match=r"embedding: index 5 is out of range .*\(5, 3\)"):
            F.embedding(idx, w)


def test_cross_entropy_names_both_devices_when_the_target_is_elsewhere():
    x, _ = _logits_and_target("cuda", [0])
    with pytest.raises(RuntimeError, match=r"target is on cpu but input is on cuda .*\(4,\)"):
        F.cross_entropy(x, np.array([0, 1, 2, 3]))
    with pytest.raises(RuntimeError, match="target is on cpu but input is on cuda"):
        F.cross_entropy(x, tinyllm.tensor(np.array([0, 1, 2, 3])))
    with pytest.raises(RuntimeError, match="cross_entropy_forward: target is on cpu but logits"):
        tinyllm.kernels.cross_entropy_forward(x.data, np.array([0, 1, 2, 3]))
