"""``tinyllm train --objective``: clm unchanged, the other objectives learn, resume exactly,
and their runs are refused where a causal LM is needed."""

import json

import numpy as np
import pytest

from tinyllm.cli.main import main
from tinyllm.io.checkpoint import CheckpointError
from tinyllm.train import TrainConfig, train

FLAGS = ["--d-model", "16", "--n-layer", "1", "--n-head", "2", "--seq-len", "16",
         "--batch-size", "4", "--steps", "4", "--eval-interval", "4", "--eval-batches", "1",
         "--log-interval", "1", "--no-progress", "--sample-tokens", "4"]  # fmt: skip


def _records(run_dir, key):
    lines = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r[key]) for r in lines if key in r]


def test_objective_clm_is_the_default_run_bit_for_bit(tmp_path, capsys):
    """The flag absent and ``--objective clm`` give the same losses, gradient norms and
    validation losses, compared as exact floats."""
    assert main(["train", *FLAGS, "--out-dir", str(tmp_path), "--name", "plain"]) == 0
    assert main(["train", *FLAGS, "--out-dir", str(tmp_path), "--name", "clm",
                 "--objective", "clm"]) == 0  # fmt: skip
    for key in ("loss", "grad_norm", "val_bits_per_byte"):
        a, b = _records(tmp_path / "plain", key), _records(tmp_path / "clm", key)
        assert a == b and len(a) > 0, key
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["objective"] == "clm"
    # a clm run still samples
    assert main(["sample", str(tmp_path / "clm"), "--max-new-tokens", "3"]) == 0


def _config(tmp_path, objective, **overrides):
    values = dict(objective=objective, d_model=32, n_layer=1, n_head=2, seq_len=32, batch_size=8,
                  steps=30, lr=3e-3, warmup=3, eval_interval=30, eval_batches=2, log_interval=5,
                  checkpoint_interval=15, out_dir=str(tmp_path), name=objective)  # fmt: skip
    values.update(overrides)
    return TrainConfig(**values)


@pytest.mark.parametrize("objective", ["mlm", "prefixlm", "span"])
def test_objectives_learn_and_log_per_token_losses(tmp_path, objective):
    """From a uniform guess (ln 259 / ln 256 / ln 359 nats: N(0, 0.02) weights give
    near-uniform logits) to within ~0.25 nats of the corpus's unigram byte entropy (3.26
    nats, tests/train) in 80 steps: the models learn at least the byte frequencies (measured
    here: mean of the last 5 logged losses 3.2-3.3 for mlm/prefixlm, 2.8 for span, whose
    sentinels and </s> are easy; training losses of ~40 masked tokens per batch are noisy)."""
    result = train(_config(tmp_path, objective, steps=80, eval_interval=80, log_interval=1),
                   progress=False, echo=lambda *a: None)  # fmt: skip
    losses = [x for _, x in _records(result.run_dir, "loss")]
    uniform = {"mlm": np.log(259), "prefixlm": np.log(256), "span": np.log(359)}[objective]
    assert abs(losses[0] - uniform) < 0.1, losses
    assert np.mean(losses[-5:]) < 3.5, losses
    ((step, val),) = _records(result.run_dir, "val_loss")
    assert step == 80 and val < 3.5
    assert result.val_bits_per_byte is None
    assert (result.run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_span_run_resumes_bit_exactly(tmp_path):
    """The masks come from the checkpointed batch generator: stopping at step 7 and resuming
    reproduces the uninterrupted run's losses exactly."""
    import tinyllm.objectives.trainer as trainer

    full = train(_config(tmp_path / "a", "span", steps=12, checkpoint_interval=6),
                 progress=False, echo=lambda *a: None)  # fmt: skip
    part = _config(tmp_path / "b", "span", steps=12, checkpoint_interval=6)
    calls, original = {"n": 0}, trainer.random_windows

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 7:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    trainer.random_windows = interrupting
    try:
        stopped = train(part, progress=False, echo=lambda *a: None)
    finally:
        trainer.random_windows = original
    assert stopped.interrupted and stopped.step == 7
    resumed = train(part, resume=True, progress=False, echo=lambda *a: None)
    assert _records(resumed.run_dir, "loss") == _records(full.run_dir, "loss")
    assert _records(resumed.run_dir, "val_loss") == _records(full.run_dir, "val_loss")
    # resuming the finished run trains nothing and reports the final evaluation from the log
    again = train(part, resume=True, progress=False, echo=lambda *a: None)
    assert again.step == 12 and [r["val_loss"] for r in again.history] == [
        val for step, val in _records(full.run_dir, "val_loss") if step == 12
    ]


def test_non_clm_runs_are_refused_where_a_causal_lm_is_needed(tmp_path, capsys):
    assert main(["train", *FLAGS, "--out-dir", str(tmp_path), "--name", "m",
                 "--objective", "mlm", "--grad-accum", "2"]) == 0  # fmt: skip
    assert "nats per labelled token (mlm)" in capsys.readouterr().out
    assert main(["sample", str(tmp_path / "m")]) == 2
    assert "objective 'mlm'" in capsys.readouterr().err
    # resuming the mlm checkpoint as another objective is refused
    with pytest.raises(CheckpointError, match="objective='mlm'"):
        config = TrainConfig(**{**json.loads((tmp_path / "m" / "config.json").read_text()),
                                "objective": "prefixlm"})  # fmt: skip
        train(config, resume=True, progress=False, echo=lambda *a: None)


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--objective", "bert"], "objective must be one of"),
        (["--objective", "mlm", "--arch", "gpt"], "arch must be the default 'llama'"),
        (["--objective", "span", "--n-kv-head", "1"], "n_kv_head applies to objective 'clm'"),
        (["--objective", "prefixlm", "--moe-experts", "2"], "moe_experts applies to objective"),
    ],
)
def test_bad_objective_flags_are_refused(flags, message, capsys):
    assert main(["train", *flags]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_objectives_train_in_mixed_precision(tmp_path, precision, capsys):
    """``--precision`` goes through the shared loop: from the uniform guess (ln 259) the mlm
    run learns as the fp32 run does (mean of the last 5 of 40 losses more than 1 nat below
    the first; measured: fp32 and bf16 both end near 4.0), its losses differ from the fp32
    run's (so the autocast region was really entered: bf16 GEMM inputs keep 8 mantissa bits,
    fp16 11) yet stay within 0.1 nat of them (rounding, not a different run), and an fp16
    run logs its loss scale (2^16 at the start, torch.amp's default)."""
    args = ["train", "--d-model", "32", "--n-layer", "1", "--n-head", "2", "--seq-len", "32",
            "--batch-size", "8", "--steps", "40", "--warmup", "3", "--lr", "3e-3",
            "--eval-interval", "40", "--eval-batches", "1", "--log-interval", "1",
            "--no-progress", "--out-dir", str(tmp_path), "--objective", "mlm"]  # fmt: skip
    assert main([*args, "--name", "fp32"]) == 0
    assert main([*args, "--name", precision, "--precision", precision]) == 0
    assert "nats per labelled token (mlm)" in capsys.readouterr().out
    fp32 = np.array([x for _, x in _records(tmp_path / "fp32", "loss")])
    low = np.array([x for _, x in _records(tmp_path / precision, "loss")])
    assert len(low) == 40 and np.isfinite(low).all()
    assert abs(low[0] - np.log(259)) < 0.1 and low[-5:].mean() < low[0] - 1.0, low
    assert not np.array_equal(low, fp32)  # the same seed and batches: only precision differs
    assert abs(low[-5:].mean() - fp32[-5:].mean()) < 0.1, (low[-5:], fp32[-5:])
    ((_, val),) = _records(tmp_path / precision, "val_loss")
    assert np.isfinite(val)
    if precision == "fp16":
        assert _records(tmp_path / precision, "loss_scale")[0] == (1, 2.0**16)


def test_two_rank_objective_run_equals_one_process_with_twice_the_batch(tmp_path, mpiexec_run):
    """``mpiexec -n 2`` with batch 2 per rank = one process with batch 4: both draw the same
    4 rows and masks from the batch generator; each rank's loss is its summed loss x 2 / N
    (N masked tokens in the 4 rows), so the ranks' average is the 4-row mean even though the
    ranks hold different numbers of masked tokens. float32: summation order differs
    (~1e-7 relative in the gradients), carried through 4 AdamW steps of lr 3e-3: weights
    within 1e-5, losses within 1e-5 relative (the tolerances of tests/distributed). The
    control: a one-process run with batch 2 (other rows) ends > 1e-3 away. (Measured: had
    each rank taken the plain mean over its own masked tokens, the weights would end up to
    1e-2 away, which this test catches.)"""
    from tinyllm.io.checkpoint import load_checkpoint

    common = ["-m", "tinyllm", "train", "--objective", "mlm", "--d-model", "16", "--n-layer",
              "1", "--n-head", "2", "--seq-len", "16", "--lr", "3e-3", "--warmup", "0",
              "--steps", "4", "--eval-interval", "4", "--eval-batches", "1", "--log-interval",
              "1", "--no-progress", "--out-dir", str(tmp_path)]  # fmt: skip
    proc = mpiexec_run([*common, "--name", "dp", "--batch-size", "2"], timeout=240)
    assert proc.stdout.count("done: 4 steps") == 1  # rank 0 reports
    assert main(["train", *common[3:], "--name", "one", "--batch-size", "4"]) == 0
    assert main(["train", *common[3:], "--name", "half", "--batch-size", "2"]) == 0
    weights = {}
    for name in ("dp", "one", "half"):
        arrays, meta = load_checkpoint(tmp_path / name / "checkpoint.safetensors")
        weights[name] = {k: v for k, v in arrays.items() if k.startswith("model.")}
        assert meta["world_size"] == (2 if name == "dp" else 1)
    for key, value in weights["one"].items():
        np.testing.assert_allclose(weights["dp"][key], value, rtol=0, atol=1e-5, err_msg=key)
    dp_losses = [x for _, x in _records(tmp_path / "dp", "loss")]
    assert [s for s, _ in _records(tmp_path / "dp", "loss")] == [1, 2, 3, 4]  # rank 0 alone
    np.testing.assert_allclose(dp_losses, [x for _, x in _records(tmp_path / "one", "loss")],
                               rtol=1e-5)  # fmt: skip
    gap = max(np.abs(weights["half"][k] - v).max() for k, v in weights["one"].items())
    assert gap > 1e-3, gap  # the comparison can fail
