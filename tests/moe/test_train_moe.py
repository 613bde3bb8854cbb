"""An MoE Llama through ``tinyllm train`` / ``tinyllm sample``: flags, the aux losses in the
objective, expert load per evaluation, checkpoints, generation, and the band key."""

import json

import numpy as np
import pytest

import tinyllm
from tinyllm.nn.moe import MoE
from tinyllm.train import TrainConfig, train
from tinyllm.train.loop import model_config_for


def _cfg(tmp_path, **kw):
    values = dict(
        d_model=32, n_layer=2, n_head=2, seq_len=32, batch_size=8, steps=30, lr=3e-3,
        warmup=5, eval_interval=15, eval_batches=2, log_interval=5, checkpoint_interval=15,
        out_dir=str(tmp_path), name="moe", sample_tokens=8, moe_experts=4, moe_top_k=2,
        moe_expert_hidden=32,
    )  # fmt: skip
    values.update(kw)
    return TrainConfig(**values)


def _log(run_dir):
    return [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]


def test_moe_llama_trains_logs_expert_load_and_is_not_checked_against_the_dense_band(tmp_path):
    lines = []
    result = train(_cfg(tmp_path), progress=False, echo=lines.append)
    log = _log(result.run_dir)
    losses = [r["loss"] for r in log if "loss" in r]
    # byte-level: ln 256 = 5.55 nats at the start; 30 steps must clearly learn
    assert losses[0] > 4.5 and losses[-1] < losses[0] - 1.0, losses
    evals = [r for r in log if "val_bits_per_byte" in r]
    assert [r["step"] for r in evals] == [15, 30]
    for r in evals:
        load = np.array(r["expert_load"])  # [layers, experts]: routed rows since the last eval
        # every training token (15 steps x 8 x 32) sends top_k = 2 rows in every layer
        assert load.shape == (2, 4) and (load.sum(axis=1) == 15 * 8 * 32 * 2).all()
        assert "band" not in r
    # looked up under 'llama-moe' (the MoE default run's band), which a tiny run does not match
    assert any("no reference band for this configuration" in x and "d_model=32 (band: 256)" in x
               for x in lines), lines  # fmt: skip
    model = tinyllm.models.build_model(model_config_for(result_config(result), 256))
    assert sum(isinstance(m, MoE) for _, m in model.named_modules()) == 2


def result_config(result):
    return TrainConfig.from_dict(json.loads((result.run_dir / "config.json").read_text()))


def test_cli_trains_an_moe_llama_resumes_and_samples(tmp_path, capsys):
    from tinyllm.cli.main import main
    from tinyllm.cli.sample_cmd import load_run

    args = ["train", "--arch", "llama", "--d-model", "16", "--n-layer", "1", "--n-head", "2",
            "--seq-len", "16", "--batch-size", "2", "--steps", "4", "--eval-interval", "4",
            "--eval-batches", "1", "--out-dir", str(tmp_path), "--name", "m", "--no-progress",
            "--sample-tokens", "4", "--moe-experts", "4", "--moe-top-k", "2",
            "--moe-router", "aux_free", "--moe-capacity-factor", "1.5",
            "--moe-shared-experts", "1", "--moe-z-coef", "0.01"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "sample:" in out and "bits/byte" in out
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert (saved["moe_experts"], saved["moe_router"], saved["moe_capacity_factor"]) == (
        4,
        "aux_free",
        1.5,
    )
    model, config, _, _ = load_run(tmp_path / "m")
    moe = model.blocks[0].mlp
    assert isinstance(moe, MoE) and moe.shared_experts is not None
    # the aux-free bias is state: it trained away from zero and came back from the checkpoint
    assert np.abs(moe.gate.e_score_correction_bias.data).max() > 0
    assert main(["sample", str(tmp_path / "m"), "--prompt", "def ", "--max-new-tokens", "5",
                 "--temperature", "0"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert text.startswith("def ")


def test_generate_with_and_without_the_cache_for_moe(tmp_path):
    """The trained configuration decodes by the cached Decoder (tests/moe/test_moe_decode.py
    checks its logits); the tokens equal the uncached ones and greedy decoding by hand."""
    cfg = model_config_for(_cfg(tmp_path), 256)
    tinyllm.manual_seed(0)
    model = tinyllm.models.build_model(cfg)
    assert model.uses_moe()
    idx = tinyllm.tensor(np.array([[1, 2, 3]]))
    a = model.generate(idx, 5, temperature=0)
    b = model.generate(idx, 5, temperature=0, use_cache=False)
    np.testing.assert_array_equal(a.data, b.data)
    # greedy by hand: argmax of the full forward, one token at a time
    tokens = [1, 2, 3]
    with tinyllm.no_grad():
        model.eval()
        for _ in range(5):
            logits = model(tinyllm.tensor(np.array([tokens])))
            tokens.append(int(np.argmax(logits.data[0, -1])))
    assert a.data[0].tolist() == tokens


def test_moe_flags_are_checked():
    with pytest.raises(ValueError, match="moe_top_k applies to a mixture of experts only"):
        TrainConfig(moe_top_k=1).validate()
    with pytest.raises(ValueError, match="moe_experts applies to arch 'llama' only"):
        TrainConfig(arch="gpt", moe_experts=4).validate()
    with pytest.raises(ValueError, match="moe_router must be one of"):
        TrainConfig(moe_experts=4, moe_router="expert_choice").validate()
    with pytest.raises(ValueError, match=r"moe_top_k in \[1, moe_experts\]"):
        TrainConfig(moe_experts=2, moe_top_k=3).validate()
    TrainConfig().validate()  # the dense default is untouched
    assert TrainConfig().moe_kwargs() is None


def test_moe_resume_equals_uninterrupted(tmp_path):
    """The aux-free selection bias is a buffer: it travels in the checkpoint, so a run stopped
    at step 6 and resumed logs the same losses as the run that never stopped."""
    import tinyllm.train.loop as loop

    kw = dict(steps=12, checkpoint_interval=6, eval_interval=6, moe_router="aux_free",
              d_model=16, n_layer=1, seq_len=16, batch_size=4)  # fmt: skip
    full = train(_cfg(tmp_path / "full", **kw), progress=False, echo=lambda *a: None)
    part = _cfg(tmp_path / "part", **kw)
    calls, original = {"n": 0}, loop.random_windows

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 6:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    loop.random_windows = interrupting
    try:
        stopped = train(part, progress=False, echo=lambda *a: None)
    finally:
        loop.random_windows = original
    assert stopped.interrupted and stopped.step == 6
    resumed = train(part, resume=True, progress=False, echo=lambda *a: None)

    def losses(run):
        return [(r["step"], r["loss"]) for r in _log(run.run_dir) if "loss" in r]

    assert resumed.step == 12 and losses(resumed) == losses(full)
