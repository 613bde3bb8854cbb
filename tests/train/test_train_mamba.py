"""Mamba as an architecture of the training pipeline: configuration, model, optimizer groups,
checkpoint + resume, evaluation, the reference band's lookup by arch, and ``tinyllm train
--arch mamba`` followed by ``tinyllm sample``.

(Step-mode generation equals the greedy argmax of the full forward: tests/ssm/test_mamba.py,
``test_generate_with_and_without_state_gives_the_same_tokens``.)"""

import dataclasses
import json
import math

import numpy as np
import pytest

from tinyllm.io.checkpoint import load_checkpoint
from tinyllm.models import (
    Llama,
    MambaConfig,
    MambaLM,
    ModelConfig,
    build_model,
    from_config,
)
from tinyllm.train import TrainConfig, train
from tinyllm.train import band as reference_band
from tinyllm.train.loop import make_optimizer, model_config_for

QUIET = dict(progress=False, echo=lambda *a: None)


def mamba_config(tmp_path, **overrides):
    values = dict(
        arch="mamba", d_model=16, n_layer=2, d_state=4, d_conv=3, expand=2, seq_len=16,
        batch_size=4, steps=6, lr=3e-3, warmup=2, eval_interval=3, eval_batches=2,
        log_interval=1, checkpoint_interval=3, out_dir=str(tmp_path), name="run",
        sample_tokens=0,
    )  # fmt: skip
    values.update(overrides)
    return TrainConfig(**values)


def _log(run_dir):
    return [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]


def _numbers(run_dir):
    """A run's log without its timings: losses, gradient norms, learning rates, validation."""
    timing = ("tokens_per_s", "elapsed_s")
    return [{k: v for k, v in r.items() if k not in timing} for r in _log(run_dir)]


# ---------------------------------------------------------------- configuration and model


def test_config_accepts_mamba_and_names_every_arch():
    TrainConfig(arch="mamba").validate()
    with pytest.raises(ValueError, match=r"one of \('llama', 'gpt', 'mamba', 'rwkv'\)"):
        TrainConfig(arch="transformer").validate()
    for bad, match in [
        (dict(arch="mamba", d_state=0), "d_state must be positive"),
        (dict(arch="mamba", n_kv_head=2), "n_kv_head does not apply to arch 'mamba'"),
        (dict(arch="mamba", ffn_hidden=64), "ffn_hidden does not apply"),
        (dict(arch="mamba", dropout=0.1), "dropout does not apply"),
        (dict(arch="llama", d_state=8), "d_state applies to arch 'mamba' only"),
        (dict(arch="gpt", expand=4), "expand applies to arch 'mamba' only"),
    ]:
        with pytest.raises(ValueError, match=match):
            TrainConfig(**bad).validate()
    # n_head plays no part in a Mamba: d_model need not be divisible by it
    TrainConfig(arch="mamba", d_model=30).validate()
    # the defaults of the other architectures are untouched, and an old config.json (without
    # the Mamba fields) still loads, meaning the defaults
    old = TrainConfig().to_dict()
    for key in ("d_state", "d_conv", "expand"):
        del old[key]
    assert TrainConfig.from_dict(old) == TrainConfig()
    assert (TrainConfig().d_state, TrainConfig().d_conv, TrainConfig().expand) == (16, 4, 2)


def test_model_config_for_mamba_maps_every_field():
    config = TrainConfig(arch="mamba", d_model=48, n_layer=3, d_state=8, d_conv=2, expand=3)
    mc = model_config_for(config, 300)
    assert isinstance(mc, MambaConfig)
    assert (mc.vocab_size, mc.d_model, mc.n_layer) == (300, 48, 3)
    assert (mc.d_state, mc.d_conv, mc.expand, mc.tie_embeddings) == (8, 2, 3, True)
    untied = model_config_for(dataclasses.replace(config, tie_embeddings=False), 300)
    assert untied.tie_embeddings is False
    assert isinstance(model_config_for(TrainConfig(), 256), ModelConfig)

    model = build_model(mc)
    assert isinstance(model, MambaLM) and model.blocks[0].mixer.d_inner == 144
    assert isinstance(from_config(mc.to_dict()), MambaLM)
    assert isinstance(from_config({"arch": "llama", "d_model": 32, "n_head": 2}), Llama)
    with pytest.raises(ValueError, match="MambaConfig: unknown keys"):
        from_config({"arch": "mamba", "n_head": 4})


def test_optimizer_groups_skip_mamba_no_weight_decay_and_keep_llama_bit_identical():
    config = TrainConfig(arch="mamba", d_model=16, n_layer=2)
    model = build_model(model_config_for(config, 64))
    opt = make_optimizer(model, config)
    ids = [{id(p) for p in g["params"]} for g in opt.param_groups]
    by_name = dict(model.named_parameters())
    no_decay = {n for n, p in by_name.items() if id(p) in ids[1]}
    assert {n for n in by_name if n.endswith(("A_log", ".D"))} <= no_decay
    assert all(by_name[n].ndim < 2 or n in model.no_weight_decay() for n in no_decay)
    decayed = {n for n, p in by_name.items() if id(p) in ids[0]}
    assert decayed == {n for n, p in by_name.items() if p.ndim >= 2} - model.no_weight_decay()
    assert [g["weight_decay"] for g in opt.param_groups] == [config.weight_decay, 0.0]

    # llama and gpt: matrices decayed, everything else not, in named_parameters order
    for arch in ("llama", "gpt"):
        config = TrainConfig(arch=arch, d_model=16, n_head=2)
        model = build_model(model_config_for(config, 64))
        groups = make_optimizer(model, config).param_groups
        params = [p for _, p in model.named_parameters()]
        assert [id(p) for p in groups[0]["params"]] == [id(p) for p in params if p.ndim >= 2]
        assert [id(p) for p in groups[1]["params"]] == [id(p) for p in params if p.ndim < 2]


# ---------------------------------------------------------------- training and resume


def test_mamba_resume_from_step_3_equals_the_uninterrupted_run(tmp_path):
    """6 steps with a checkpoint at 3: stopped at step 3 and resumed, every train loss,
    gradient norm and validation loss and the final weights equal the uninterrupted run's,
    bit for bit."""
    import tinyllm.train.loop as loop

    full = train(mamba_config(tmp_path / "full"), **QUIET)
    part = mamba_config(tmp_path / "part")
    calls = {"n": 0}
    original = loop.random_windows

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    loop.random_windows = interrupting
    try:
        stopped = train(part, **QUIET)
    finally:
        loop.random_windows = original
    assert stopped.interrupted and stopped.step == 3
    resumed = train(part, resume=True, **QUIET)
    assert resumed.step == 6 and not resumed.interrupted
    assert _numbers(resumed.run_dir) == _numbers(full.run_dir)
    assert [r["step"] for r in _log(full.run_dir) if "val_bits_per_byte" in r] == [3, 6]
    a, _ = load_checkpoint(full.run_dir / "checkpoint.safetensors")
    b, _ = load_checkpoint(resumed.run_dir / "checkpoint.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # bits per byte = nats per byte / ln 2, from the whole pipeline's evaluation
    assert math.isfinite(full.val_bits_per_byte) and 0 < full.val_bits_per_byte < 8.5
    assert abs(full.val_bits_per_byte - full.val_nats_per_byte / math.log(2)) < 1e-12


def test_a_mamba_checkpoint_does_not_resume_another_shape(tmp_path):
    from tinyllm.io.checkpoint import CheckpointError
    from tinyllm.train.loop import load_state

    result = train(mamba_config(tmp_path, steps=1, eval_interval=1), **QUIET)
    other = mamba_config(tmp_path, d_state=8)
    model = build_model(model_config_for(other, 256))
    with pytest.raises(CheckpointError, match="d_state=4, this run has d_state=8"):
        load_state(result.run_dir / "checkpoint.safetensors", model, make_optimizer(model, other),
                   other)  # fmt: skip


# ---------------------------------------------------------------- the reference band


def test_band_lookup_by_arch_and_missing_keys_mean_defaults():
    llama = reference_band.load_band()
    assert llama is not None and reference_band.load_band("llama") == llama
    assert llama["config"]["arch"] == "llama"
    # the stored band predates the Mamba fields: missing means the default, so it applies
    assert reference_band.band_applies(llama, TrainConfig(seed=3).to_dict())
    mamba = reference_band.load_band("mamba")
    assert mamba is None or mamba["config"]["arch"] == "mamba"
    assert not reference_band.band_applies(llama, TrainConfig(arch="mamba").to_dict())
    # both file formats: one band (the first format), or {"bands": {arch: band}}
    fake = {"config": {**TrainConfig(arch="mamba").to_dict()}, "steps": [1], "min": [1.0],
            "max": [2.0], "seeds": [0, 1, 2]}  # fmt: skip
    assert reference_band.bands_of(llama) == {"llama": llama}
    both = reference_band.bands_of({"bands": {"llama": llama, "mamba": fake}})
    assert both["mamba"] is fake and both["llama"] is llama
    assert reference_band.band_applies(fake, TrainConfig(arch="mamba", seed=5).to_dict())
    assert reference_band.band_mismatches(fake, TrainConfig(arch="mamba", d_state=8).to_dict()) == [
        "d_state=8 (band: 16)"
    ]


# ---------------------------------------------------------------- the CLI


def test_cli_trains_a_mamba_and_samples_from_it(tmp_path, capsys):
    from tinyllm.cli.main import main
    from tinyllm.cli.sample_cmd import load_run

    args = ["train", "--arch", "mamba", "--d-model", "16", "--n-layer", "1", "--d-state", "4",
            "--seq-len", "16", "--batch-size", "2", "--steps", "3", "--eval-interval", "3",
            "--eval-batches", "1", "--out-dir", str(tmp_path), "--name", "m", "--no-progress",
            "--sample-tokens", "4"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "mamba:" in out and "bits/byte" in out and "sample:" in out
    # the stored Mamba band is of the default run: this tiny one is told why it does not apply
    assert "no reference band for this configuration" in out and "d_model=16 (band: 256)" in out
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert (saved["arch"], saved["d_state"], saved["d_conv"], saved["expand"]) == ("mamba", 4, 4, 2)
    assert main(["sample", str(tmp_path / "m"), "--prompt", "def ", "--max-new-tokens", "6",
                 "--top-k", "5", "--top-p", "0.9"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert text.startswith("def ") and len(text.rstrip("\n")) > len("def ")
    model, config, _, _ = load_run(tmp_path / "m")
    assert isinstance(model, MambaLM) and config.arch == "mamba"
    assert main(["train", "--arch", "mamba", "--n-kv-head", "2", "--no-progress"]) == 2
    assert "n_kv_head does not apply to arch 'mamba'" in capsys.readouterr().err
    assert main(["train", "--arch", "transformer", "--no-progress"]) == 2
    assert "one of ('llama', 'gpt', 'mamba', 'rwkv')" in capsys.readouterr().err
