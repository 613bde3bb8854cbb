"""The training loop: learning, determinism, resume, checkpoints, the CLI."""

import json

import numpy as np
import pytest

from tinyllm.io.checkpoint import CheckpointError, save_checkpoint
from tinyllm.train import TrainConfig, train
from tinyllm.train.loop import load_state, make_optimizer, model_config_for


def tiny_config(tmp_path, **overrides):
    values = dict(
        d_model=32, n_layer=2, n_head=2, seq_len=32, batch_size=8, steps=40, lr=3e-3,
        warmup=5, eval_interval=20, eval_batches=2, log_interval=5, checkpoint_interval=20,
        out_dir=str(tmp_path), name="run", sample_tokens=8,
    )  # fmt: skip
    values.update(overrides)
    return TrainConfig(**values)


def _losses(run_dir):
    lines = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in lines if "loss" in r]


@pytest.mark.parametrize("arch", ["llama", "gpt"])
def test_tiny_model_learns_the_corpus(tmp_path, arch):
    """Byte-level loss starts near ln 256 = 5.55 nats and, within 80 steps, falls below the
    corpus's unigram byte entropy (3.26 nats = 4.70 bits): the model must be using context."""
    config = tiny_config(tmp_path, arch=arch, steps=80, eval_interval=40)
    result = train(config, progress=False, echo=lambda *a: None)
    losses = _losses(result.run_dir)
    assert losses[0][1] > 4.5 and np.mean([x for _, x in losses[-2:]]) < 3.26, losses
    # validation (2 batches of 8 x 32 bytes): far below the 8 bits/byte of the start, within
    # 0.3 bits of the unigram entropy at this early point
    assert result.val_bits_per_byte < 5.0
    assert (result.run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert isinstance(result.sample, str) and len(result.sample) > 0


def test_identical_seeds_identical_losses(tmp_path):
    a = train(tiny_config(tmp_path / "a", steps=10), progress=False, echo=lambda *a: None)
    b = train(tiny_config(tmp_path / "b", steps=10), progress=False, echo=lambda *a: None)
    assert _losses(a.run_dir) == _losses(b.run_dir)


def test_resume_equals_uninterrupted(tmp_path):
    full = train(tiny_config(tmp_path / "full", steps=30, checkpoint_interval=15),
                 progress=False, echo=lambda *a: None)  # fmt: skip
    part = tiny_config(tmp_path / "part", steps=30, checkpoint_interval=15)
    # run the first 15 steps only: same config (same schedule), stopped by a KeyboardInterrupt
    import tinyllm.train.loop as loop

    calls = {"n": 0}
    original = loop.random_windows

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 15:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    loop.random_windows = interrupting
    try:
        stopped = train(part, progress=False, echo=lambda *a: None)
    finally:
        loop.random_windows = original
    assert stopped.interrupted and stopped.step == 15
    resumed = train(part, resume=True, progress=False, echo=lambda *a: None)
    assert resumed.step == 30
    assert _losses(resumed.run_dir) == _losses(full.run_dir)


def _curves(run_dir):
    """Every (step, train loss) and (step, validation bits/byte) of a run's log."""
    lines = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    return (
        [(r["step"], r["loss"]) for r in lines if "loss" in r],
        [(r["step"], r["val_bits_per_byte"]) for r in lines if "val_bits_per_byte" in r],
    )


@pytest.mark.parametrize(
    "where,stopped_at",
    [
        ("between micro-batches", 12),  # step 13's second draw: the step is rolled back
        ("right after the update", 13),  # a real SIGINT during step 13's optimizer.step()
        ("during an evaluation", 10),  # after step 10's update, inside its evaluation
    ],
)
def test_ctrl_c_anywhere_resumes_bit_exactly(tmp_path, monkeypatch, where, stopped_at):
    """Ctrl-C at steps that are not checkpoint steps (checkpoint_interval 20): the checkpoint
    holds the number of completed updates and the random states that go with it, so the
    resumed run's every train loss and validation loss equal the uninterrupted run's, bit
    for bit (grad_accum 2, so a step is interrupted between its two batches)."""
    import os
    import signal

    import tinyllm.train.loop as loop
    from tinyllm.optim import AdamW

    overrides = dict(steps=30, checkpoint_interval=20, eval_interval=10, log_interval=1,
                     grad_accum=2, sample_tokens=0)  # fmt: skip
    quiet = dict(progress=False, echo=lambda *a: None)
    full = train(tiny_config(tmp_path / "full", **overrides), **quiet)
    part = tiny_config(tmp_path / "part", **overrides)
    calls = {"draws": 0, "updates": 0, "evals": 0}
    draw, update, evaluate = loop.random_windows, AdamW.step, loop.evaluate

    def interrupting_draw(*args, **kwargs):
        calls["draws"] += 1
        if where == "between micro-batches" and calls["draws"] == 2 * 12 + 2:
            raise KeyboardInterrupt
        return draw(*args, **kwargs)

    def interrupting_update(self):
        update(self)
        calls["updates"] += 1
        if where == "right after the update" and calls["updates"] == 13:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, delivered inside step()

    def interrupting_evaluate(*args, **kwargs):
        calls["evals"] += 1
        if where == "during an evaluation" and calls["evals"] == 1:
            raise KeyboardInterrupt
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(loop, "random_windows", interrupting_draw)
    monkeypatch.setattr(AdamW, "step", interrupting_update)
    monkeypatch.setattr(loop, "evaluate", interrupting_evaluate)
    stopped = train(part, **quiet)
    monkeypatch.undo()
    assert stopped.interrupted and stopped.step == stopped_at
    resumed = train(part, resume=True, **quiet)
    assert resumed.step == 30 and not resumed.interrupted
    assert _curves(resumed.run_dir) == _curves(full.run_dir)
    assert resumed.val_bits_per_byte == full.val_bits_per_byte


def test_mismatched_and_corrupt_checkpoints_are_refused(tmp_path):
    from tinyllm.models import build_model

    cfg = tiny_config(tmp_path, steps=5, checkpoint_interval=5)
    result = train(cfg, progress=False, echo=lambda *a: None)
    ckpt = result.run_dir / "checkpoint.safetensors"

    other = tiny_config(tmp_path, d_model=16, n_head=2)
    model = build_model(model_config_for(other, 256))
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="d_model=32"):
        load_state(ckpt, model, make_optimizer(model, other), other)

    model = build_model(model_config_for(cfg, 256))
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    truncated = tmp_path / "bad.safetensors"
    truncated.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_state(truncated, model, make_optimizer(model, cfg), cfg)
    # keys that do not fit: the model must be unchanged afterwards
    from tinyllm.io.checkpoint import load_checkpoint

    arrays, meta = load_checkpoint(ckpt)
    arrays["model.lm_head.weight"] = np.zeros((3, 3), dtype=np.float32)
    wrong = tmp_path / "wrong.safetensors"
    save_checkpoint(wrong, arrays, meta)
    with pytest.raises(CheckpointError, match="size mismatch for lm_head.weight"):
        load_state(wrong, model, make_optimizer(model, cfg), cfg)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k])


def test_train_cli_runs_and_rejects_bad_flags(tmp_path, capsys):
    from tinyllm.cli.main import main

    args = ["train", "--d-model", "16", "--n-layer", "1", "--n-head", "2", "--seq-len", "16",
            "--batch-size", "2", "--steps", "3", "--eval-interval", "3", "--eval-batches", "1",
            "--out-dir", str(tmp_path), "--name", "cli", "--no-progress", "--sample-tokens", "4"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "bits/byte" in out and "sample:" in out
    assert main(["sample", str(tmp_path / "cli"), "--prompt", "def ", "--max-new-tokens", "5"]) == 0
    assert main(["train", "--d-model", "10", "--n-head", "3"]) == 2
    assert "not divisible" in capsys.readouterr().err


def test_training_on_bpe_tokens_reports_loss_per_byte(tmp_path):
    """With a BPE tokenizer the validation loss is still per byte, so runs compare."""
    from tinyllm.data.corpus import default_corpus_text
    from tinyllm.tokenizers import BPETokenizer
    from tinyllm.train.tokens import load_tokens

    tok = BPETokenizer.train(default_corpus_text()[:50_000], vocab_size=320)
    path = tmp_path / "tok.json"
    tok.save(path)
    data = load_tokens(None, str(path))
    assert data.vocab_size == 320 and data.val_bytes_per_token > 1.2
    config = tiny_config(tmp_path, tokenizer=str(path), steps=10, eval_interval=10)
    result = train(config, progress=False, echo=lambda *a: None)
    # nats/byte = nats/token / bytes-per-token: consistent with the logged per-token loss
    assert result.val_nats_per_byte < np.log(320) / data.val_bytes_per_token + 0.5
    assert abs(result.val_bits_per_byte - result.val_nats_per_byte / np.log(2)) < 1e-9


def test_log_grads_writes_one_record_per_parameter_per_step_and_a_plot(tmp_path):
    config = tiny_config(tmp_path, steps=4, eval_interval=4, log_grads=True, sample_tokens=0)
    result = train(config, progress=False, echo=lambda *a: None)
    lines = [json.loads(x) for x in (result.run_dir / "log.jsonl").read_text().splitlines()]
    grads = [r for r in lines if r.get("kind") == "gradflow"]
    from tinyllm.models import build_model

    n_params = len(list(build_model(model_config_for(config, 256)).parameters()))
    assert len(grads) == 4 * n_params
    assert (result.run_dir / "gradflow.png").read_bytes()[:4] == b"\x89PNG"


def test_reference_band_covers_its_own_seeds_and_says_so():
    from tinyllm.train import band as reference_band

    band = reference_band.load_band()
    assert band is not None and len(band["seeds"]) >= 3
    for values in band["per_seed"].values():
        for step, v in zip(band["steps"], values):
            assert "inside" in reference_band.check(band, step, v)
    assert "ABOVE" in reference_band.check(band, band["steps"][-1], band["max"][-1] + 0.5)
    assert reference_band.band_applies(band, TrainConfig(seed=7).to_dict())
    assert not reference_band.band_applies(band, TrainConfig(lr=3e-3).to_dict())


def test_default_evaluation_measures_the_whole_validation_split(tmp_path):
    """eval_batches=None (the default): every validation token after the first is a target
    once (the old default, 8 batches, covered 16 kB of the 46 kB split); the run says what
    it evaluated, and a run resumed from a checkpoint with another setting is told so."""
    from tinyllm.train.loop import evaluation_plan
    from tinyllm.train.tokens import load_tokens

    assert TrainConfig().eval_batches is None
    data = load_tokens(None, None)
    plan = evaluation_plan(data, TrainConfig())
    assert plan["whole_split"] and plan["tokens"] == len(data.val) - 1 == 46_627
    assert plan["batches"] == 24 and plan["windows"] == 365  # 364 of 128 and a tail of 35
    sliced = evaluation_plan(data, TrainConfig(eval_batches=8))
    assert sliced["tokens"] == 8 * 16 * 128 and not sliced["whole_split"]

    said = []
    old = tiny_config(tmp_path, steps=4, eval_interval=4, checkpoint_interval=2, eval_batches=2)
    train(old, progress=False, echo=said.append)
    assert any("first 2 batches" in s and "512 of 46,628 tokens" in s for s in said), said
    said.clear()
    whole = tiny_config(tmp_path, steps=4, eval_interval=4, checkpoint_interval=2,
                        eval_batches=None)  # fmt: skip
    result = train(whole, resume=True, progress=False, echo=said.append)
    assert any("the whole validation split, 46,627 of 46,628 tokens" in s for s in said), said
    assert any("eval_batches=2" in s and "not comparable" in s for s in said), said
    lines = [json.loads(x) for x in (result.run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "val_bits_per_byte" in r] == [4]


def test_band_says_which_setting_keeps_it_from_applying():
    from tinyllm.train import band as reference_band

    band = reference_band.load_band()
    assert band["config"]["eval_batches"] is None  # measured on the whole split
    assert reference_band.band_mismatches(band, TrainConfig(eval_batches=8).to_dict()) == [
        "eval_batches=8 (band: None)"
    ]
