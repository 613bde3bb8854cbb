"""``tinyllm train --precision``: fp32 equals a plain reference loop bit for bit; fp16's loss
scaler through the real loop, replayed with injected overflows (the scale halves, the step is
skipped and the parameters do not move); the scale is checkpointed and resume is exact."""

import json

import numpy as np
import pytest

import tinyllm
import tinyllm.train.loop as loop
from tinyllm.data.batches import random_windows
from tinyllm.grad_mode import is_grad_enabled
from tinyllm.io.checkpoint import load_checkpoint
from tinyllm.optim.lr_scheduler import warmup_cosine
from tinyllm.train import TrainConfig, train
from tinyllm.train.loop import lm_loss, make_optimizer, model_config_for
from tinyllm.train.tokens import load_tokens

QUIET = {"progress": False, "echo": lambda *a: None}


def tiny(tmp_path, **overrides):
    values = dict(
        d_model=16, n_layer=1, n_head=2, seq_len=16, batch_size=4, steps=8, lr=3e-3, warmup=2,
        eval_interval=4, eval_batches=1, log_interval=1, checkpoint_interval=4,
        out_dir=str(tmp_path), name="run", sample_tokens=0,
    )  # fmt: skip
    values.update(overrides)
    return TrainConfig(**values)


def _log(run_dir):
    return [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]


def _weights(run_dir):
    arrays, meta = load_checkpoint(run_dir / "checkpoint.safetensors")
    return {k: v for k, v in arrays.items() if k.startswith("model.")}, meta


def test_fp32_is_the_plain_loop_bit_for_bit(tmp_path):
    """The float32 default goes through the scaler (disabled), the process group (one
    process) and a null autocast: it must compute exactly the loop written out by hand."""
    config = tiny(tmp_path, steps=6)
    result = train(config, **QUIET)

    tinyllm.manual_seed(config.seed)
    data = load_tokens(None, None)
    from tinyllm.models import build_model

    model = build_model(model_config_for(config, data.vocab_size))
    opt = make_optimizer(model, config)
    schedule = warmup_cosine(config.warmup, config.steps, config.min_lr_ratio)
    rng = np.random.default_rng(config.seed)
    losses = []
    for step in range(config.steps):
        for group in opt.param_groups:
            group["lr"] = config.lr * schedule(step)
        x, y = random_windows(data.train, config.batch_size, config.seq_len, rng)
        loss = lm_loss(model, x, y, "cpu")
        loss.backward()
        losses.append(float(loss.data.astype(np.float64)))
        tinyllm.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        opt.zero_grad()
    got, meta = _weights(result.run_dir)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(got[f"model.{name}"], value.data, err_msg=name)
    assert [r["loss"] for r in _log(result.run_dir) if "loss" in r] == losses
    assert "grad_scaler" not in meta  # fp32 checkpoints carry no scaler
    assert all("loss_scale" not in r for r in _log(result.run_dir))


# 1-based steps whose loss is multiplied by 1e10: S * 1e10 * dL/dlogits exceeds float16's
# 65504 in the first float16 GEMM backward, so real inf gradients appear (not a patched flag)
OVERFLOW_STEPS = {3, 7}
# growth_interval 3, by torch.amp's rule: x0.5 on an overflow, x2 on the 3rd clean step in a row
SCALES_USED = [65536, 65536, 65536, 32768, 32768, 32768, 65536, 32768]
SKIPPED = [False, False, True, False, False, False, True, False]


def _inject(monkeypatch, overflow_steps, stop_at=None):
    """Patch the loop's loss: x 1e10 on ``overflow_steps``; Ctrl-C at the start of ``stop_at``;
    and snapshot the parameters after every step (opt.zero_grad follows every step)."""
    calls = {"n": 0}
    snapshots = []
    original_loss, original_opt = lm_loss, make_optimizer  # the unpatched functions

    def loss(model, x, y, device):
        if not is_grad_enabled():  # an evaluation batch, not a training step
            return original_loss(model, x, y, device)
        calls["n"] += 1
        if stop_at is not None and calls["n"] == stop_at:
            raise KeyboardInterrupt
        out = original_loss(model, x, y, device)
        return out * 1e10 if calls["n"] in overflow_steps else out

    def optimizer(model, config):
        opt = original_opt(model, config)
        zero = opt.zero_grad

        def zero_grad(*args, **kwargs):
            snapshots.append([p.data.copy() for p in model.parameters()])
            return zero(*args, **kwargs)

        opt.zero_grad = zero_grad
        return opt

    monkeypatch.setattr(loop, "lm_loss", loss)
    monkeypatch.setattr(loop, "make_optimizer", optimizer)
    return snapshots


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_replay_with_injected_overflows_through_the_train_loop(tmp_path, monkeypatch):
    snapshots = _inject(monkeypatch, OVERFLOW_STEPS)
    config = tiny(tmp_path, precision="fp16", loss_scale_growth_interval=3)
    result = train(config, **QUIET)
    records = [r for r in _log(result.run_dir) if "loss" in r]
    assert [r["loss_scale"] for r in records] == SCALES_USED
    assert [r["skipped"] for r in records] == SKIPPED
    assert [np.isfinite(r["grad_norm"]) for r in records] == [not s for s in SKIPPED]
    before = None
    for step, (params, skipped) in enumerate(zip(snapshots, SKIPPED), start=1):
        if before is not None:
            moved = any(not np.array_equal(a, b) for a, b in zip(params, before))
            assert moved != skipped, f"step {step}: skipped={skipped} but moved={moved}"
            assert all(np.isfinite(a).all() for a in params)
        before = params
    _, meta = _weights(result.run_dir)
    # final scale: 32768 after step 8's update (one clean step since the backoff)
    assert meta["grad_scaler"]["scale"] == 32768.0 and meta["grad_scaler"]["_growth_tracker"] == 1
    # AdamW counted only the steps taken
    opt_steps = {v for k, v in meta["optimizer_scalars"].items() if k.endswith(".step")}
    assert opt_steps == {len(SKIPPED) - sum(SKIPPED)}


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_fp16_resume_restores_the_scale_and_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    """Stopped at step 5 (after the overflow of step 3: scale 32768, tracker 1), resumed to 8:
    the losses, scales, weights and final scaler state equal the uninterrupted run's."""
    _inject(monkeypatch, OVERFLOW_STEPS)
    full = train(tiny(tmp_path / "full", precision="fp16", loss_scale_growth_interval=3), **QUIET)
    part_config = tiny(tmp_path / "part", precision="fp16", loss_scale_growth_interval=3)
    _inject(monkeypatch, OVERFLOW_STEPS, stop_at=6)  # Ctrl-C in step 6: 5 steps completed
    stopped = train(part_config, **QUIET)
    assert stopped.interrupted and stopped.step == 5
    _, meta = _weights(stopped.run_dir)
    assert meta["grad_scaler"]["scale"] == 32768.0 and meta["grad_scaler"]["_growth_tracker"] == 2
    # on resume the loss counter restarts: steps 6..8 are calls 1..3, step 7 is call 2
    _inject(monkeypatch, {7 - 5})
    resumed = train(part_config, resume=True, **QUIET)
    assert resumed.step == 8

    def key(run_dir):
        return [(r["step"], r["loss"], r["loss_scale"], r["skipped"])
                for r in _log(run_dir) if "loss" in r]  # fmt: skip

    assert key(resumed.run_dir) == key(full.run_dir)
    (wf, mf), (wr, mr) = _weights(full.run_dir), _weights(resumed.run_dir)
    for name in wf:
        np.testing.assert_array_equal(wf[name], wr[name], err_msg=name)
    assert mf["grad_scaler"] == mr["grad_scaler"]


def test_precision_is_validated():
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="fp8").validate()
    with pytest.raises(ValueError, match="loss_scale_growth_interval must be positive"):
        TrainConfig(precision="fp16", loss_scale_growth_interval=0).validate()
