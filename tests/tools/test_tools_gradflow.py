"""tinyllm.gradflow: one record per parameter per logged step, the ratio checked
independently, JSON lines, and the plot."""

import json

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
from tinyllm import nn
from tinyllm.gradflow import GradFlowRecorder, plot_gradflow, read_gradflow

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def setup(seed=0):
    tinyllm.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    rng = np.random.default_rng(seed)
    x = tinyllm.tensor(rng.standard_normal((16, 4)).astype(np.float32))
    y = tinyllm.tensor(rng.integers(0, 3, 16))
    return model, x, y


def backward(model, x, y):
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()


def test_one_record_per_parameter_per_logged_step_and_ratio_is_measured():
    model, x, y = setup()
    opt = tinyllm.optim.AdamW(model.parameters(), lr=1e-2)
    recorder = GradFlowRecorder(model)
    names = [n for n, _ in model.named_parameters()]
    records, logged = [], [0, 3, 6]
    for step in range(8):
        backward(model, x, y)
        if step in logged:
            before = {n: p.data.astype(np.float64).copy() for n, p in model.named_parameters()}
            grads = {n: p.grad.data.astype(np.float64) for n, p in model.named_parameters()}
            recorder.before_step()
        opt.step()
        if step in logged:
            new = recorder.record(step, lr=1e-2)
            assert [r["param"] for r in new] == names
            for r, (name, p) in zip(new, model.named_parameters()):
                after = p.data.astype(np.float64)
                delta = np.linalg.norm(after - before[name])
                assert r["update_ratio"] == pytest.approx(delta / np.linalg.norm(after), rel=1e-9)
                assert r["update_norm"] == pytest.approx(delta, rel=1e-9)
                assert r["grad_norm"] == pytest.approx(np.linalg.norm(grads[name]), rel=1e-9)
                assert r["param_norm"] == pytest.approx(np.linalg.norm(after), rel=1e-9)
                assert r["shape"] == list(p.shape) and r["update_source"] == "step"
            records += new
    assert len(records) == len(names) * len(logged)
    assert sorted({(r["step"], r["param"]) for r in records}) == sorted(
        (s, n) for s in logged for n in names
    )
    assert json.loads(json.dumps(records)) == records  # JSON-serializable as is


def test_sgd_update_equals_lr_times_grad_and_fallbacks_are_labeled():
    model, x, y = setup(1)
    opt = tinyllm.optim.SGD(model.parameters(), lr=0.1)
    recorder = GradFlowRecorder(model)
    backward(model, x, y)
    first = recorder.record(0, lr=0.1)  # no snapshot, no previous record: the estimate
    assert {r["update_source"] for r in first} == {"lr_times_grad"}
    recorder.before_step()
    opt.step()
    for r in recorder.after_step(1, lr=0.1):
        assert r["update_norm"] == pytest.approx(0.1 * r["grad_norm"], rel=1e-5)
    backward(model, x, y)
    opt.step()
    since = recorder.record(2)
    assert {r["update_source"] for r in since} == {"since_previous_record"}
    model2, *_ = setup(2)
    assert {r["update_norm"] for r in GradFlowRecorder(model2).record(0)} == {None}


def test_recorder_rejects_models_without_trainable_parameters():
    with pytest.raises(ValueError, match="no parameter that requires grad"):
        GradFlowRecorder(nn.Tanh())
    with pytest.raises(TypeError, match="GradFlowRecorder"):
        GradFlowRecorder(3)


def test_plot_from_jsonl_log_with_other_lines(tmp_path):
    model, x, y = setup()
    opt = tinyllm.optim.SGD(model.parameters(), lr=0.1)
    recorder = GradFlowRecorder(model)
    log = tmp_path / "train.jsonl"
    with log.open("w") as f:
        for step in range(5):
            backward(model, x, y)
            recorder.before_step()
            opt.step()
            f.write(json.dumps({"step": step, "loss": 1.0}) + "\n")
            for entry in recorder.record(step, lr=0.1):
                f.write(json.dumps(entry) + "\n")
    assert len(read_gradflow(log)) == 5 * 4
    out = plot_gradflow(log, tmp_path / "plots" / "gradflow.png")
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    out = plot_gradflow(read_gradflow(log), tmp_path / "again.png", title="demo")
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    with pytest.raises(ValueError, match="no gradient-flow records"):
        plot_gradflow([{"step": 0, "loss": 1.0}], tmp_path / "none.png")
    with pytest.raises(FileNotFoundError):
        plot_gradflow(tmp_path / "missing.jsonl", tmp_path / "x.png")
