"""End to end on a tiny base run: every method writes its run folder; the CLI parses and runs."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from tinyllm.alignment.runner import CONFIGS, align
from tinyllm.alignment.tasks import SentenceEndTask
from tinyllm.cli import align_cmd


class LowByteTask(SentenceEndTask):
    """Reward 1 when the first sampled byte is ASCII: a random tiny model gets about half."""

    name = "low-byte"

    def reward(self, completion) -> float:
        return 1.0 if completion and completion[0] < 128 else 0.0


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A randomly initialized run folder, as `tinyllm train` writes it (no training needed)."""
    import tinyllm
    from tinyllm.io.checkpoint import save_checkpoint
    from tinyllm.models import build_model
    from tinyllm.train.config import TrainConfig
    from tinyllm.train.loop import model_config_for

    out = tmp_path_factory.mktemp("align")
    config = TrainConfig(
        d_model=32, n_layer=1, n_head=2, seq_len=48, eval_batches=1, out_dir=str(out), name="base"
    )
    tinyllm.manual_seed(0)
    model = build_model(model_config_for(config, 256))
    (out / "base").mkdir()
    (out / "base" / "config.json").write_text(json.dumps(config.to_dict()))
    arrays = {f"model.{k}": v.numpy() for k, v in model.state_dict().items()}
    save_checkpoint(out / "base" / "checkpoint.safetensors", arrays, {"step": 0})
    return out


COMMON = dict(
    steps=2, eval_interval=1, eval_prompts=6, tax_batches=1, prompt_bytes=16, max_new_tokens=8
)
EXTRA = {
    "ppo": dict(batch_size=6, mini_batch_size=3, num_ppo_epochs=2, ent_coef=0.01, adaptive_kl=True),
    "grpo": dict(prompts_per_step=2, num_generations=3),
    "dpo": dict(batch_size=4, num_pair_prompts=12, samples_per_prompt=3),
    "reward": dict(batch_size=4, num_pair_prompts=12, eval_pair_prompts=8, samples_per_prompt=3),
}


@pytest.mark.parametrize(
    "method",
    [
        "ppo",
        "dpo",
        pytest.param("grpo", marks=pytest.mark.slow),
        pytest.param("reward", marks=pytest.mark.slow),
    ],
)
def test_method_writes_its_run_folder(base_run, method):
    config = CONFIGS[method](
        base_run=str(base_run / "base"), out_dir=str(base_run), **COMMON, **EXTRA[method]
    )
    task = LowByteTask.from_corpus(16, 8)
    summary = align(config, progress=False, echo=lambda *a: None, task=task)
    run_dir = base_run / f"align-{method}-s0"
    assert summary["run_dir"] == str(run_dir)
    records = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r or "score" in r] == [1, 2]
    if method == "reward":
        assert (run_dir / "reward_model.safetensors").is_file()
        assert 0 <= summary["heldout_accuracy_after"] <= 1
        return
    evals = [r for r in records if r.get("kind") == "eval"]
    assert [r["step"] for r in evals] == [0, 1, 2]
    assert evals[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # the policy starts as the reference
    assert (run_dir / "reward_kl.png").stat().st_size > 1000
    assert np.isfinite(summary["alignment_tax_bits_per_byte"])
    # the folder is a run `tinyllm sample` reads
    from tinyllm.cli.sample_cmd import load_run

    model, _, _, _ = load_run(run_dir)
    assert model.num_parameters() > 0


@pytest.mark.slow
def test_ppo_with_a_reward_model(base_run):
    rm_config = CONFIGS["reward"](
        base_run=str(base_run / "base"),
        out_dir=str(base_run),
        name="rm",
        **COMMON,
        **EXTRA["reward"],
    )
    task = LowByteTask.from_corpus(16, 8)
    align(rm_config, progress=False, echo=lambda *a: None, task=task)
    config = CONFIGS["ppo"](
        base_run=str(base_run / "base"),
        out_dir=str(base_run),
        name="ppo-rm",
        reward_model=str(base_run / "rm"),
        **COMMON,
        **EXTRA["ppo"],
    )
    summary = align(config, progress=False, echo=lambda *a: None, task=task)
    assert summary["steps"] == 2


def _parser():
    parser = argparse.ArgumentParser(prog="tinyllm")
    align_cmd.register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_parses_every_method_and_runs(base_run, capsys):
    p = _parser()
    args = p.parse_args(
        ["align", "dpo", "r", "--beta", "0.2", "--loss-type", "ipo", "--steps", "3"]
    )
    config = align_cmd.config_from_args(args)
    assert (config.beta, config.loss_type, config.steps, config.base_run) == (0.2, "ipo", 3, "r")
    args = p.parse_args(["align", "ppo", "--adaptive-kl", "--target-kl", "2"])
    config = align_cmd.config_from_args(args)
    assert (
        config.adaptive_kl and config.target_kl == 2.0 and config.base_run == "runs/alignment_base"
    )
    args = p.parse_args(["align", "grpo", "--num-generations", "1"])
    with pytest.raises(ValueError, match="num_generations"):
        align_cmd.config_from_args(args)
    args = p.parse_args(
        [
            "align",
            "grpo",
            str(base_run / "base"),
            "--out-dir",
            str(base_run),
            "--name",
            "cli-grpo",
            "--no-progress",
            "--steps",
            "1",
            "--eval-prompts",
            "4",
            "--tax-batches",
            "1",
            "--prompts-per-step",
            "2",
            "--num-generations",
            "2",
            "--max-new-tokens",
            "6",
            "--prompt-bytes",
            "12",
        ]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "done: reward" in out and "alignment tax" in out
    assert (base_run / "cli-grpo" / "summary.json").is_file()
    args = p.parse_args(["align", "ppo", str(base_run / "missing")])
    assert args.func(args) == 2


def test_cli_defaults_are_the_config_defaults_that_hold_the_kl():
    """One source of truth: `tinyllm align METHOD` with no flags builds METHOD's config defaults,
    which are the settings measured to hold the KL near 3 nats (README, experiments/rlhf.py)."""
    p = _parser()
    for method, cls in CONFIGS.items():
        config = align_cmd.config_from_args(p.parse_args(["align", method]))
        assert config == cls(), method
    ppo, dpo, grpo = CONFIGS["ppo"](), CONFIGS["dpo"](), CONFIGS["grpo"]()
    assert (ppo.learning_rate, ppo.kl_coef, ppo.adaptive_kl) == (1e-4, 0.2, False)
    assert (ppo.target_kl, ppo.kl_horizon) == (3.0, 200.0)
    assert (dpo.beta, grpo.beta) == (0.5, 0.3)


@pytest.mark.parametrize("method", ["ppo", "dpo", "grpo"])
def test_shipped_band_applies_to_the_defaults_only(method):
    from tinyllm.alignment.common import band_applies, band_keys, load_band

    band = load_band(method)
    assert band is not None and len(band["seeds"]) == 3
    assert set(band["keys"]) == set(band_keys(method))
    config = CONFIGS[method]().to_dict()
    assert band_applies(band, config)
    kl_knob = "kl_coef" if method == "ppo" else "beta"
    assert not band_applies(band, {**config, kl_knob: config[kl_knob] / 4})
    assert not band_applies(band, {**config, "learning_rate": 3 * config["learning_rate"]})
