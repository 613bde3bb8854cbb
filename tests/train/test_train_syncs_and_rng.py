"""The train loop's host syncs and random states: the micro-batch losses are summed on the
device and read back once per step with the gradient norm (the logged numbers unchanged);
checkpoints hold ``backend.get_rng_state()``, so a run that draws device random numbers
(dropout on ``cuda``, here the CuPy stand-in of tests/cupy_standin) resumes bit for bit
after Ctrl-C anywhere; checkpoints written before that still resume."""

import json
import sys
from pathlib import Path

import pytest

import tinyllm
from tinyllm.io.checkpoint import load_checkpoint, save_checkpoint
from tinyllm.train import TrainConfig, train

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: cupy_standin

import cupy_standin  # noqa: E402

QUIET = dict(progress=False, echo=lambda *a: None)
needs_cxx = cupy_standin.needs_compiler()


def tiny(tmp_path, **overrides):
    values = dict(
        d_model=16, n_layer=1, n_head=2, seq_len=16, batch_size=2, steps=6, lr=3e-3, warmup=2,
        eval_interval=3, eval_batches=1, log_interval=1, checkpoint_interval=100,
        out_dir=str(tmp_path), name="run", sample_tokens=0,
    )  # fmt: skip
    values.update(overrides)
    return TrainConfig(**values)


def _numbers(run_dir):
    """A run's log without its timings."""
    lines = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("tokens_per_s", "elapsed_s")} for r in lines]


def _interrupt_at_draw(monkeypatch, n: int) -> None:
    """Ctrl-C (KeyboardInterrupt) at the n-th batch drawn by the loop."""
    import tinyllm.train.loop as loop

    calls, draw = {"n": 0}, loop.random_windows

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return draw(*args, **kwargs)

    monkeypatch.setattr(loop, "random_windows", interrupting)


standin = cupy_standin.fixture(scope="function", autouse=False)  # per test


def test_logged_loss_and_grad_norm_equal_the_per_micro_batch_item_values(tmp_path, monkeypatch):
    """What the loop did before: loss += loss.item() / k per micro-batch, grad_norm =
    clip_grad_norm_(...).item(). The device-side sum gives the same floats, bit for bit."""
    import tinyllm.train.loop as loop

    items, norms = [], []
    lm_loss, clip = loop.lm_loss, tinyllm.nn.utils.clip_grad_norm_

    def recording_loss(*args, **kwargs):
        loss = lm_loss(*args, **kwargs)
        if tinyllm.is_grad_enabled():  # training, not evaluation
            items.append(loss.item())
        return loss

    def recording_clip(*args, **kwargs):
        norm = clip(*args, **kwargs)
        norms.append(norm.item())
        return norm

    monkeypatch.setattr(loop, "lm_loss", recording_loss)
    monkeypatch.setattr(tinyllm.nn.utils, "clip_grad_norm_", recording_clip)
    k = 3
    result = train(tiny(tmp_path, grad_accum=k, steps=4, eval_interval=4), **QUIET)
    logged = [r for r in _numbers(result.run_dir) if "loss" in r]
    expected = []
    for s in range(4):
        value = 0.0
        for item in items[s * k : (s + 1) * k]:
            value += item / k
        expected.append(value)
    assert [r["loss"] for r in logged] == expected
    assert [r["grad_norm"] for r in logged] == norms


@needs_cxx
@pytest.mark.parametrize("grad_accum", [1, 3])
def test_one_host_sync_per_step_whatever_grad_accum(tmp_path, monkeypatch, standin, grad_accum):
    """On the device, the syncs between the first batches of consecutive steps: the loop's
    one read of (loss, gradient norm), plus what the engine's step needs (none at present),
    the same for every grad_accum (before: one ``loss.item()`` per micro-batch and one
    ``.item()`` of the norm)."""
    import tinyllm.train.loop as loop

    counters, marks, draws = cupy_standin.COUNTERS, [], {"n": 0}
    draw = loop.random_windows

    def marking(*args, **kwargs):
        if draws["n"] % grad_accum == 0:
            marks.append(counters.n_syncs)  # the first batch of a step
        draws["n"] += 1
        return draw(*args, **kwargs)

    monkeypatch.setattr(loop, "random_windows", marking)
    config = tiny(tmp_path, device="cuda", grad_accum=grad_accum, steps=5, eval_interval=5)
    train(config, **QUIET)
    per_step = [b - a for a, b in zip(marks, marks[1:])]  # steps 1-4 (step 5 evaluates)
    assert len(per_step) == 4 and len(set(per_step)) == 1, per_step
    assert per_step[0] <= 2, f"{per_step[0]} syncs per step:\n{counters.report()}"


@needs_cxx
@pytest.mark.parametrize("where", ["between micro-batches", "at a checkpoint"])
def test_dropout_on_the_device_resumes_bit_exactly(tmp_path, monkeypatch, standin, where):
    """Dropout draws from the device generator, whose state a host cannot read: the loop
    starts a device epoch per step (get_rng_state) and a checkpoint stores (seed, epoch), so
    the resumed run's masks, losses and validation equal the uninterrupted run's. (Before,
    a resumed run redrew the device stream from manual_seed's start.)"""
    overrides = dict(device="cuda", dropout=0.2, grad_accum=2)
    if where == "at a checkpoint":
        overrides["checkpoint_interval"] = 3
    full = train(tiny(tmp_path / "full", **overrides), **QUIET)
    part = tiny(tmp_path / "part", **overrides)
    # step 5's second batch (between micro-batches: rolled back to step 4), or step 4's first
    _interrupt_at_draw(monkeypatch, 2 * 4 + 2 if where == "between micro-batches" else 2 * 3 + 1)
    stopped = train(part, **QUIET)
    monkeypatch.undo()
    assert stopped.interrupted and stopped.step == (4 if where == "between micro-batches" else 3)
    resumed = train(part, resume=True, **QUIET)
    assert resumed.step == 6 and _numbers(resumed.run_dir) == _numbers(full.run_dir)
    # the same run without the device state in the checkpoint would not be exact: dropout
    # changes the losses, so the comparison above sees the masks
    plain = train(tiny(tmp_path / "plain", device="cuda", grad_accum=2), **QUIET)
    assert _numbers(plain.run_dir) != _numbers(full.run_dir)


def test_a_checkpoint_from_before_the_mamba_fields_and_the_device_state_resumes(
    tmp_path, monkeypatch
):
    """Old checkpoints: no d_state/d_conv/expand in the saved configuration (missing means
    the default) and NumPy's state alone (``global_rng``): resuming one on the CPU is exact,
    as it was."""
    overrides = dict(dropout=0.2, grad_accum=2)
    full = train(tiny(tmp_path / "full", **overrides), **QUIET)
    part = tiny(tmp_path / "part", **overrides)
    _interrupt_at_draw(monkeypatch, 2 * 4 + 2)
    assert train(part, **QUIET).step == 4
    monkeypatch.undo()
    ckpt = Path(part.out_dir) / "run" / "checkpoint.safetensors"
    arrays, meta = load_checkpoint(ckpt)
    for key in ("d_state", "d_conv", "expand"):
        del meta["config"][key]
    assert meta.pop("rng_state")["cpu"] == meta["global_rng"]
    save_checkpoint(ckpt, arrays, meta)
    resumed = train(part, resume=True, **QUIET)
    assert _numbers(resumed.run_dir) == _numbers(full.run_dir)
