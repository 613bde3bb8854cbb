"""The RWKV-4 LM (models/rwkv.py): step-mode decoding equals the full forward at every
position, generation with and without the recurrent state gives the same tokens, the
time-mixing block equals RWKV-4's formulas written out in NumPy, gradients reach every
parameter, the init follows RWKV-4, and ``tinyllm train --arch rwkv`` + ``tinyllm sample``
run end to end."""

import numpy as np
import pytest

import tinyllm
from tinyllm.models import RWKVLM, RWKVConfig, build_model, from_config
from tinyllm.registry.long_context import _wkv_ref
from tinyllm.train import TrainConfig
from tinyllm.train.loop import make_optimizer, model_config_for


def _model(seed=0, **kw):
    """A small RWKV with every weight perturbed (several start at zero: the step-mode check
    would otherwise compare zeros)."""
    model = RWKVLM(RWKVConfig(vocab_size=40, d_model=12, n_layer=3, **kw))
    rng = np.random.default_rng(seed)
    for _, p in model.named_parameters():
        p.data[...] = p.data + 0.2 * rng.standard_normal(p.shape).astype(p.dtype)
    return model


def test_step_mode_equals_full_forward_at_every_position():
    model = _model()
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 40, (2, 13))
    full = model(tinyllm.tensor(idx)).data
    states = model.new_states(2)
    steps = np.stack([model.step(idx[:, t], states) for t in range(13)], axis=1)
    # float32, the same math in another order (array code vs ops), logits of O(1): 1e-5
    np.testing.assert_allclose(steps, full, rtol=1e-5, atol=1e-5)


def test_generate_with_and_without_state_gives_the_same_tokens():
    model = _model(2)
    idx = tinyllm.tensor(np.array([[1, 2, 3, 4]]))
    a = model.generate(idx, 8, temperature=0.7, generator=np.random.default_rng(0))
    b = model.generate(idx, 8, temperature=0.7, generator=np.random.default_rng(0),
                       use_cache=False)  # fmt: skip
    np.testing.assert_array_equal(a.data, b.data)
    assert a.shape == (1, 12)


def test_time_mixing_equals_the_rwkv4_formulas():
    model = _model(3)
    att = model.blocks[1].att
    x = np.random.default_rng(4).standard_normal((2, 6, 12)).astype(np.float32)
    got = att(tinyllm.tensor(x)).data.astype(np.float64)
    p = {n: t.data.astype(np.float64) for n, t in att.named_parameters()}
    xx = np.concatenate([np.zeros((2, 1, 12)), x[:, :-1]], axis=1)  # token shift

    def mix(mu):
        return x * mu + xx * (1 - mu)

    k = mix(p["time_mix_k"]) @ p["key.weight"].T
    v = mix(p["time_mix_v"]) @ p["value.weight"].T
    r = mix(p["time_mix_r"]) @ p["receptance.weight"].T
    wkv = _wkv_ref(p["time_decay"], p["time_first"], k, v)
    want = (wkv / (1 + np.exp(-r))) @ p["output.weight"].T
    # float32 forward against a float64 reference: 1e-4 on O(1) outputs
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_every_parameter_gets_a_gradient_and_time_vectors_are_not_decayed():
    model = _model(5)
    idx = np.random.default_rng(6).integers(0, 40, (2, 7))
    logits = model(tinyllm.tensor(idx))
    tinyllm.functional.cross_entropy(
        logits.reshape(14, 40), tinyllm.tensor(idx.reshape(-1))
    ).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and np.abs(p.grad.data).max() > 0, name
    skip = model.no_weight_decay()
    assert "blocks.0.att.time_decay" in skip and "blocks.2.ffn.time_mix_r" in skip
    assert not any("weight" in name for name in skip)


def test_init_follows_rwkv4():
    model = RWKVLM(RWKVConfig(vocab_size=40, d_model=8, n_layer=2))
    td = model.blocks[0].att.time_decay.data
    assert td[0] == pytest.approx(-5.0) and td[-1] == pytest.approx(3.0)  # -5 + 8 (c/(C-1))^.
    assert np.all(np.diff(td) > 0)
    for block in model.blocks:
        assert not np.any(block.att.output.weight.data) and not np.any(block.ffn.value.weight.data)
    assert hasattr(model.blocks[0], "ln0") and not hasattr(model.blocks[1], "ln0")
    assert model.head.weight is not model.emb.weight


def test_config_wiring():
    config = TrainConfig(arch="rwkv", d_model=16, n_layer=2, ffn_hidden=24)
    config.validate()
    mc = model_config_for(config, 256)
    assert isinstance(mc, RWKVConfig) and mc.hidden == 24 and not mc.tie_embeddings
    model = build_model(mc)
    assert isinstance(model, RWKVLM) and model.blocks[0].ffn.key.weight.shape == (24, 16)
    assert isinstance(from_config(mc.to_dict()), RWKVLM)
    make_optimizer(model, config)
    with pytest.raises(ValueError, match="do not apply to arch 'rwkv'"):
        TrainConfig(arch="rwkv", n_kv_head=2).validate()
    with pytest.raises(ValueError, match="RWKVConfig: unknown keys"):
        from_config({"arch": "rwkv", "n_head": 4})


def test_cli_trains_an_rwkv_and_samples_from_it(tmp_path, capsys):
    from tinyllm.cli.main import main
    from tinyllm.cli.sample_cmd import load_run

    assert main(["train", "--arch", "rwkv", "--d-model", "16", "--n-layer", "2",
                 "--seq-len", "16", "--batch-size", "2", "--steps", "2", "--eval-interval", "2",
                 "--eval-batches", "1", "--sample-tokens", "0", "--out-dir", str(tmp_path),
                 "--name", "r", "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["sample", str(tmp_path / "r"), "--prompt", "def ", "--max-new-tokens", "5",
                 "--seed", "0"]) == 0  # fmt: skip
    assert capsys.readouterr().out.startswith("def ")
    model, config, _, _ = load_run(tmp_path / "r")
    assert isinstance(model, RWKVLM) and config.arch == "rwkv"
