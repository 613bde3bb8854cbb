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
        (["--objective", "prefixlm", "--precision", "bf16"], "precision applies to objective"),
    ],
)
def test_bad_objective_flags_are_refused(flags, message, capsys):
    assert main(["train", *flags]) == 2
    assert message in capsys.readouterr().err


def test_objectives_refuse_data_parallel_launches(monkeypatch, capsys):
    """Under ``mpiexec -n 2`` (the launcher's environment) a non-clm run is refused before
    anything starts, instead of two processes training alone into the same run folder."""
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setenv("PMI_SIZE", "2")
    assert main(["train", "--objective", "span"]) == 2
    assert "implemented for objective 'clm' only" in capsys.readouterr().err
