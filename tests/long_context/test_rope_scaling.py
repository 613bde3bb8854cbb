"""Context extension of RoPE (tinyllm/functional/positional.py, tinyllm/nn/positional.py,
ModelConfig.rope_scaling): at scale 1 linear interpolation, NTK-aware scaling and YaRN each
equal plain RoPE; PI's angles at position s p equal plain ones at p; NTK keeps the highest
frequency and divides the lowest by s; YaRN's ramp keeps the pairs that turn more than
beta_fast times over the original context, interpolates those that turn less than beta_slow
times, and its temperature is 0.1 ln s + 1; every table is bit-identical to a closed form
restated here; the scaling is model state (ModelConfig, checkpoints, the cached Decoder,
``tinyllm sample --rope-scaling``); set_rope_scaling on a Llama; the default path is
unchanged."""

import json
import math
import os

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
from tinyllm.models import Llama, ModelConfig, build_model, from_config
from tinyllm.nn.positional import RotaryEmbedding, set_rope_scaling, yarn_frequencies

D, BASE = 16, 10000.0
X = np.zeros((1, 1), np.float64)  # the dtype/device template of cos_sin


def _tables(scaling, T=64, offset=0):
    cos, sin = RotaryEmbedding(D, BASE, scaling=scaling).cos_sin(T, offset, X)
    return cos, sin


def _yarn(s, L=32):
    return {"type": "yarn", "factor": s, "original_max_position": L}


# ---------------------------------------------------------------- a closed form, restated
def closed_form(D, base, scaling):
    """(theta' [D/2], mscale) of every scaling type, written out pair by pair in Python floats
    from the papers (PI: theta / s; NTK: base s^(D/(D-2)); YaRN: the ramp over rotation
    counts and 0.1 ln s + 1), not by calling the code under test. The arithmetic is the
    formulas' own (1 / base^(2i/D), theta (1 - gamma) + (theta / s) gamma), so the results
    must agree to the bit, which pins the tables the code produced before YaRN moved into
    the functional ops."""
    kind = None if scaling is None else (scaling.get("type") or scaling.get("rope_type"))
    s = 1.0 if scaling is None else float(scaling["factor"])
    if kind == "ntk":
        base = base * s ** (D / (D - 2))
    # base^(2i/D) by NumPy's vectorized pow, the primitive the tables use (Python's scalar
    # pow, libm's, differs from it by 1 ulp for some exponents); the rest is scalar IEEE math
    powers = base ** np.array([2 * i / D for i in range(D // 2)], dtype=np.float64)
    theta = [1.0 / float(p) for p in powers]
    if kind == "linear":
        return [t / s for t in theta], 1.0
    if kind != "yarn":
        return theta, 1.0
    L = scaling.get("original_max_position") or scaling["original_max_position_embeddings"]
    fast, slow = float(scaling.get("beta_fast", 32)), float(scaling.get("beta_slow", 1))

    def turning_index(r):  # pair i turns L theta_i / (2 pi) times; this i turns r times
        return D * math.log(L / (r * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(turning_index(fast)), 0)
    high = min(math.ceil(turning_index(slow)), D - 1)
    high = high + 0.001 if high == low else high
    out = []
    for i, t in enumerate(theta):
        gamma = min(max((i - low) / (high - low), 0.0), 1.0)
        out.append(t * (1.0 - gamma) + (t / s) * gamma)
    return out, (0.1 * math.log(s) + 1.0 if s > 1 else 1.0)


def closed_form_tables(T, D, base, scaling, offset=0):
    theta, mscale = closed_form(D, base, scaling)
    angles = np.multiply.outer(np.arange(T, dtype=np.float64) + offset, np.array(theta))
    cos, sin = np.cos(angles), np.sin(angles)
    return (cos, sin) if mscale == 1.0 else (cos * mscale, sin * mscale)


SCALINGS = [
    None,
    {"type": "linear", "factor": 3.0},
    {"type": "ntk", "factor": 4.0},
    {"rope_type": "ntk", "factor": 2.5},
    {"type": "yarn", "factor": 8.0, "original_max_position": 64},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256,
     "beta_fast": 16, "beta_slow": 2},
    {"type": "yarn", "factor": 1.0, "original_max_position": 32},
    {"type": "yarn", "factor": 2.0, "original_max_position": 4},  # zero-width ramp guard
]  # fmt: skip


@pytest.mark.parametrize("scaling", SCALINGS, ids=lambda s: "none" if s is None else str(s))
@pytest.mark.parametrize("Dh,base", [(4, 100.0), (16, 10000.0), (64, 500000.0)])
def test_every_table_is_bit_identical_to_the_closed_form(scaling, Dh, base):
    theta, mscale = closed_form(Dh, base, scaling)
    got = F.rope_frequencies(Dh, base, scaling, dtype="float64").numpy()
    np.testing.assert_array_equal(got, np.array(theta))
    cos, sin = closed_form_tables(9, Dh, base, scaling, offset=70000)
    c, s = F.rope_cos_sin(9, Dh, base, scaling, offset=70000, dtype="float64")
    np.testing.assert_array_equal(c.numpy(), cos)
    np.testing.assert_array_equal(s.numpy(), sin)
    cos, sin = closed_form_tables(100, Dh, base, scaling)
    for dtype in (np.float64, np.float32):  # the module's cached tables, cast once
        module = RotaryEmbedding(Dh, base, scaling=scaling, max_position=30)  # regrows
        c, s = module.cos_sin(37, 63, np.zeros(1, dtype))
        np.testing.assert_array_equal(c, cos[63:].astype(dtype))
        np.testing.assert_array_equal(s, sin[63:].astype(dtype))
    if scaling is not None and (scaling.get("type") or scaling.get("rope_type")) == "yarn":
        L = scaling.get("original_max_position") or scaling["original_max_position_embeddings"]
        betas = {k: scaling[k] for k in ("beta_fast", "beta_slow") if k in scaling}
        inv_freq, m = yarn_frequencies(Dh, base, scaling["factor"], L, **betas)
        np.testing.assert_array_equal(inv_freq, np.array(theta))
        assert m == mscale
    # the op rotates by those tables (the kernel tier may fuse a*c - b*s: 1 ulp of O(1))
    x = np.random.default_rng(0).standard_normal((2, 5, Dh))
    y = F.rotary_embedding(tinyllm.tensor(x), scaling=scaling, base=base, offset=3).numpy()
    a, b = x[..., : Dh // 2], x[..., Dh // 2 :]
    c, s = cos[3:8], sin[3:8]
    np.testing.assert_allclose(y, np.concatenate([a * c - b * s, b * c + a * s], -1), atol=1e-14)


@pytest.mark.parametrize("kind", ["linear", "ntk", "yarn"])
def test_scale_one_equals_plain_rope(kind):
    scaling = _yarn(1.0) if kind == "yarn" else {"type": kind, "factor": 1.0}
    cos, sin = _tables(scaling, T=300)
    cos0, sin0 = _tables(None, T=300)
    # linear and ntk: the same float64 angles; yarn mixes theta (1 - g) + theta g: 1 ulp of
    # theta, times positions up to 300: 1e-12
    np.testing.assert_allclose(cos, cos0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sin, sin0, rtol=0, atol=1e-12)
    q = tinyllm.tensor(np.random.default_rng(0).standard_normal((2, 5, D)))
    a = RotaryEmbedding(D, BASE, scaling=scaling).rotate(q, offset=7).data
    np.testing.assert_allclose(a, RotaryEmbedding(D, BASE).rotate(q, offset=7).data, atol=1e-12)


@pytest.mark.parametrize("s", [2.0, 4.0, 8.0])
def test_position_interpolation_at_s_p_equals_plain_at_p(s):
    P = 50
    cos, sin = _tables({"type": "linear", "factor": s}, T=int(s * P))
    cos0, sin0 = _tables(None, T=P)
    idx = (s * np.arange(P)).astype(int)
    # float64: (s p) (theta / s) vs p theta differ by rounding of O(100) radians: 1e-12
    np.testing.assert_allclose(cos[idx], cos0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sin[idx], sin0, rtol=0, atol=1e-12)


def test_ntk_keeps_the_highest_frequency_and_divides_the_lowest_by_s():
    s = 4.0
    theta = F.rope_frequencies(D, BASE, dtype="float64").data
    ntk = F.rope_frequencies(D, BASE, {"type": "ntk", "factor": s}, dtype="float64").data
    assert ntk[0] == theta[0] == 1.0
    assert ntk[-1] == pytest.approx(theta[-1] / s, rel=1e-12)
    cos, _ = _tables({"type": "ntk", "factor": s}, T=10)
    np.testing.assert_allclose(cos[:, -1], np.cos(np.arange(10) * ntk[-1]), atol=1e-15)


@pytest.mark.parametrize("s,L", [(4.0, 256), (8.0, 1024), (2.0, 4096)])
def test_yarn_ramp_by_rotation_counts(s, L):
    Dh = 64
    inv_freq, mscale = yarn_frequencies(Dh, BASE, s, L)
    theta = BASE ** (-np.arange(0, Dh, 2) / Dh)
    turns = L * theta / (2 * math.pi)  # how often pair i turns over the original context
    fast, slow = turns > 32, turns < 1  # beta_fast = 32, beta_slow = 1
    assert fast.any() and slow.any()
    # extrapolated: untouched (1 ulp: base^-x here vs 1 / base^x there)
    np.testing.assert_allclose(inv_freq[fast], theta[fast], rtol=1e-15)
    np.testing.assert_allclose(inv_freq[slow], theta[slow] / s, rtol=1e-15)  # interpolated
    mid = ~fast & ~slow
    gamma = (theta[mid] - inv_freq[mid]) / (theta[mid] - theta[mid] / s)
    assert np.all((gamma >= 0) & (gamma <= 1)) and np.all(np.diff(gamma) >= 0)  # a ramp
    assert mscale == pytest.approx(0.1 * math.log(s) + 1)
    cos, sin = RotaryEmbedding(Dh, BASE, scaling=_yarn(s, L)).cos_sin(20, 3, X)
    np.testing.assert_allclose(cos**2 + sin**2, mscale**2, rtol=1e-14)  # q.k scaled by mscale^2
    # the functional tables are the same ones, HF's spelling included
    hf = {"rope_type": "yarn", "factor": s, "original_max_position_embeddings": L}
    c, s_ = F.rope_cos_sin(20, Dh, BASE, hf, offset=3, dtype="float64")
    np.testing.assert_array_equal(c.numpy(), cos)
    np.testing.assert_array_equal(s_.numpy(), sin)


def test_yarn_functional_op_scales_scores_by_mscale_squared():
    """q.k after YaRN's rotation is mscale^2 times the plain score at the YaRN angles:
    rotation is orthogonal, the temperature is the only change of norm."""
    s, L = 4.0, 32
    rng = np.random.default_rng(2)
    q, k = rng.standard_normal((2, 6, D))
    yarn = _yarn(s, L)
    qr = F.rotary_embedding(tinyllm.tensor(q), scaling=yarn).numpy()
    kr = F.rotary_embedding(tinyllm.tensor(k), scaling=yarn).numpy()
    mscale = 0.1 * math.log(s) + 1
    # rotation preserves each row's norm; float64: 1e-13
    np.testing.assert_allclose(np.linalg.norm(qr, axis=-1), mscale * np.linalg.norm(q, axis=-1),
                               rtol=1e-13)  # fmt: skip
    # relative: scores depend on i - j only (rotate both by 5 more positions)
    qs = F.rotary_embedding(tinyllm.tensor(q), scaling=yarn, offset=5).numpy()
    ks = F.rotary_embedding(tinyllm.tensor(k), scaling=yarn, offset=5).numpy()
    np.testing.assert_allclose(qs @ ks.T, qr @ kr.T, atol=1e-12)


def test_yarn_bad_arguments_are_named():
    with pytest.raises(ValueError, match="RotaryEmbedding: scaling factor"):
        RotaryEmbedding(D, scaling={"type": "yarn", "factor": -1, "original_max_position": 8})
    with pytest.raises(ValueError, match="beta_fast > beta_slow"):
        yarn_frequencies(D, factor=2.0, beta_fast=1.0, beta_slow=2.0)
    with pytest.raises(ValueError, match="rotary_embedding: yarn scaling needs original_max"):
        F.rotary_embedding(tinyllm.randn(3, 4), scaling={"type": "yarn", "factor": 2.0})
    with pytest.raises(
        ValueError, match=r"rope_cos_sin: scaling keys \['attention_factor'\] are not supported"
    ):
        F.rope_cos_sin(3, 4, scaling={**_yarn(2.0), "attention_factor": 1.5})
    with pytest.raises(ValueError, match="rope_frequencies: scaling type must be"):
        F.rope_frequencies(4, scaling={"type": "dynamic", "factor": 2.0})


def test_llama_with_scaling_and_default_path_unchanged():
    config = ModelConfig(arch="llama", vocab_size=30, d_model=16, n_layer=2, n_head=2,
                         block_size=16)  # fmt: skip
    tinyllm.manual_seed(0)
    model = Llama(config)
    idx = tinyllm.tensor(np.random.default_rng(1).integers(0, 30, (1, 40)))
    base = model(idx).data
    assert set_rope_scaling(model, {"type": "linear", "factor": 1.0}) == 2
    np.testing.assert_array_equal(model(idx).data, base)  # factor 1: theta / 1 is theta
    set_rope_scaling(model, _yarn(4.0, 16))
    yarn = model(idx).data
    assert not np.allclose(yarn, base)
    # generation through the lean decoder reads the same module tables
    out = model.generate(idx[:, :6], 3, temperature=0.0)
    full = model(out[:, :-1]).data
    assert np.array_equal(np.argmax(full[0, 5:], -1), out.data[0, 6:])
    set_rope_scaling(model, None)
    np.testing.assert_array_equal(model(idx).data, base)


# ---------------------------------------------------------------- the scaling as model state
def _config(**kw):
    values = {"arch": "llama", "vocab_size": 30, "d_model": 16, "n_layer": 2, "n_head": 2,
              "block_size": 16}  # fmt: skip
    return ModelConfig(**{**values, **kw})


YARN_CANONICAL = {"type": "yarn", "factor": 4.0, "original_max_position": 16, "beta_fast": 32.0,
                  "beta_slow": 1.0}  # fmt: skip


def test_model_config_validates_and_canonicalizes_rope_scaling():
    hf = {"rope_type": "yarn", "factor": 4, "original_max_position_embeddings": 16}
    assert _config(rope_scaling=hf).rope_scaling == YARN_CANONICAL
    assert _config(rope_scaling={"type": "ntk", "factor": 2}).rope_scaling == {
        "type": "ntk", "factor": 2.0}  # fmt: skip
    assert _config().rope_scaling is None
    cases = [
        ({"type": "dynamic", "factor": 2.0}, "scaling type must be 'linear', 'ntk' or 'yarn'"),
        ({"type": "linear", "factor": 0.5}, "factor must be >= 1"),
        ({"type": "yarn", "factor": 2.0}, "needs original_max_position"),
        ({"type": "linear"}, "factor must be a positive number"),
        ("yarn:2", "must be a dict"),
    ]
    for scaling, words in cases:
        with pytest.raises(ValueError, match="ModelConfig") as info:
            _config(rope_scaling=scaling)
        assert words in str(info.value)
    with pytest.raises(ValueError, match="ModelConfig: rope_scaling applies to llama only"):
        ModelConfig(arch="gpt", rope_scaling={"type": "linear", "factor": 2.0})


def test_config_dict_round_trip_and_old_dicts_load_as_none():
    config = _config(rope_scaling=_yarn(4.0, 16))
    values = json.loads(json.dumps(config.to_dict()))  # as a checkpoint stores it
    assert ModelConfig.from_dict(values) == config
    del values["rope_scaling"]  # a config saved before the field existed
    assert ModelConfig.from_dict(values).rope_scaling is None


def test_llama_built_with_the_scaling_equals_set_rope_scaling_and_updates_config():
    idx = tinyllm.tensor(np.random.default_rng(1).integers(0, 30, (1, 40)))  # > block_size
    tinyllm.manual_seed(0)
    built = Llama(_config(rope_scaling=_yarn(4.0, 16)))
    tinyllm.manual_seed(0)
    later = Llama(_config())
    plain = later(idx).data
    assert set_rope_scaling(later, _yarn(4.0, 16)) == 2
    assert later.config.rope_scaling == built.config.rope_scaling == YARN_CANONICAL
    np.testing.assert_array_equal(later(idx).data, built(idx).data)
    # a bad scaling is refused before anything changes (module tables and config)
    with pytest.raises(ValueError, match="factor must be >= 1"):
        set_rope_scaling(later, {"type": "linear", "factor": 0.5})
    assert later.config.rope_scaling == YARN_CANONICAL
    np.testing.assert_array_equal(later(idx).data, built(idx).data)
    set_rope_scaling(later, None)
    assert later.config.rope_scaling is None
    np.testing.assert_array_equal(later(idx).data, plain)


def test_gpt_refuses_a_scaling_and_accepts_none():
    gpt = build_model(ModelConfig(arch="gpt", vocab_size=11, d_model=8, n_layer=1, n_head=2,
                                  block_size=8))  # fmt: skip
    with pytest.raises(ValueError, match="learned absolute positions"):
        set_rope_scaling(gpt, {"type": "ntk", "factor": 2.0})
    assert gpt.config.rope_scaling is None
    assert set_rope_scaling(gpt, None) == 0


def test_a_checkpoint_saved_after_set_rope_scaling_rebuilds_it(tmp_path):
    from tinyllm.io import load_checkpoint, save_checkpoint

    tinyllm.manual_seed(0)
    model = Llama(_config())
    set_rope_scaling(model, {"rope_type": "yarn", "factor": 4.0,
                             "original_max_position_embeddings": 16})  # fmt: skip
    arrays = {k: v.numpy() for k, v in model.state_dict().items()}
    save_checkpoint(tmp_path / "m.safetensors", arrays, {"model_config": model.config.to_dict()})
    arrays, meta = load_checkpoint(tmp_path / "m.safetensors")
    loaded = from_config(meta["model_config"])
    loaded.load_state_dict(arrays)
    assert loaded.config.rope_scaling == YARN_CANONICAL
    idx = tinyllm.tensor(np.random.default_rng(1).integers(0, 30, (2, 48)))
    np.testing.assert_array_equal(loaded(idx).data, model(idx).data)


def test_cached_decoder_equals_forward_with_yarn_beyond_block_size():
    """The lean Decoder (``tinyllm sample``'s path) reads the attention modules' tables, so a
    YaRN-scaled Llama decodes what model(idx) computes at positions past block_size (16).
    float64: the two paths differ in summation order only (fused GEMMs), ~1e-15."""
    from tinyllm.models.decoder import Decoder

    tinyllm.manual_seed(0)
    model = Llama(_config(rope_scaling=_yarn(4.0, 16), n_kv_head=1)).double()
    rng = np.random.default_rng(11)
    for p in model.parameters():  # O(1) weights: a wrong table changes logits by O(0.1)
        p.data[...] = rng.normal(0.0, 0.5, p.shape)
    idx = np.random.default_rng(3).integers(0, 30, (2, 48))
    with tinyllm.no_grad():
        full = model(tinyllm.tensor(idx)).numpy()
        plain = Llama(_config(n_kv_head=1)).double()
        plain.load_state_dict(model.state_dict())
        unscaled = plain(tinyllm.tensor(idx)).numpy()
    assert np.abs(full - unscaled).max() > 1e-2  # the scaling matters at these positions
    decoder = Decoder(model, batch_size=2, max_len=48)
    first = decoder.prefill(idx[:, :20])  # one batched forward, then token by token
    np.testing.assert_allclose(first, full[:, 19], rtol=1e-10, atol=1e-10)
    steps = np.stack([decoder.step(idx[:, t]) for t in range(20, 48)], axis=1)
    np.testing.assert_allclose(steps, full[:, 20:], rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------- tinyllm sample
def _run(path, arch="llama", model_config=None):
    """A run folder as `tinyllm train` writes it; ``model_config`` goes in the checkpoint's
    metadata (what a checkpoint saved after ``set_rope_scaling`` carries)."""
    from tinyllm.io.checkpoint import save_checkpoint
    from tinyllm.train.config import TrainConfig
    from tinyllm.train.loop import model_config_for

    config = TrainConfig(arch=arch, d_model=32, n_layer=1, n_head=2, seq_len=16)
    tinyllm.manual_seed(0)
    model = build_model(model_config_for(config, 256))
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config.to_dict()))
    arrays = {f"model.{k}": v.numpy() for k, v in model.state_dict().items()}
    meta = {"step": 0} if model_config is None else {"step": 0, "model_config": model_config}
    save_checkpoint(path / "checkpoint.safetensors", arrays, meta)
    return path, model


def test_sample_rope_scaling_flag_and_remembered_scaling(tmp_path, capsys):
    from tinyllm.cli.main import main
    from tinyllm.cli.sample_cmd import load_run, parse_rope_scaling_flag

    assert parse_rope_scaling_flag("yarn:8", 64) == _yarn(8.0, 64)
    assert parse_rope_scaling_flag("ntk:4", 64) == {"type": "ntk", "factor": 4.0}
    assert parse_rope_scaling_flag("none", 64) is None
    run, trained = _run(tmp_path / "plain")
    model, *_ = load_run(run)
    assert model.config.rope_scaling is None and model.config.block_size == 16  # unchanged
    model, *_ = load_run(run, "yarn:4")
    assert model.config.rope_scaling == YARN_CANONICAL
    assert model.config.block_size == 64  # the extended context: 4 x 16
    set_rope_scaling(trained, _yarn(4.0, 16))
    idx = tinyllm.tensor(np.random.default_rng(0).integers(0, 256, (1, 50)))
    np.testing.assert_array_equal(model(idx).data, trained(idx).data)
    # a checkpoint that remembers its scaling; the flag wins; "none" drops it
    remembered, _ = _run(tmp_path / "remembered", model_config=trained.config.to_dict())
    assert load_run(remembered)[0].config.rope_scaling == YARN_CANONICAL
    assert load_run(remembered, "linear:2")[0].config.rope_scaling == {"type": "linear",
                                                                       "factor": 2.0}  # fmt: skip
    assert load_run(remembered, "none")[0].config.rope_scaling is None
    flags = ["--prompt", "ab", "--max-new-tokens", "40", "--temperature", "0"]
    assert main(["sample", str(remembered), *flags]) == 0
    text = capsys.readouterr().out
    ids = list(b"ab")
    want = model.generate(tinyllm.tensor(np.array([ids])), 40, temperature=0).numpy()[0]
    assert text.rstrip("\n") == bytes(want.tolist()).decode("utf-8", errors="replace")
    for bad, words in (("yarn", "TYPE:FACTOR"), ("cubic:2", "TYPE:FACTOR"),
                       ("linear:0.5", "factor must be >= 1")):  # fmt: skip
        assert main(["sample", str(run), *flags, "--rope-scaling", bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("tinyllm sample:") and words in err
    gpt_run, _ = _run(tmp_path / "gpt", arch="gpt")
    assert main(["sample", str(gpt_run), *flags, "--rope-scaling", "ntk:2"]) == 2
    assert "learned absolute positions" in capsys.readouterr().err


# ---------------------------------------------------------------- experiments/long_context.py
def test_long_context_experiment_model_setup_is_unchanged(load_experiment):
    """experiments/long_context.py extension: the trained Llama (d 128, 4 layers, 4 heads,
    context 64) with each method at each multiple has, in every layer, exactly the closed
    form's tables (which are the tables of before the scaling became model state)."""
    env = dict(os.environ)
    experiment = load_experiment("long_context")
    assert dict(os.environ) == env  # thread counts are pinned only when it runs as a script
    seq = 64
    config = ModelConfig(arch="llama", vocab_size=256, d_model=128, n_layer=4, n_head=4,
                         block_size=seq)  # fmt: skip
    model = Llama(config)
    like = np.zeros(1, np.float32)  # the model's dtype
    for method in ("plain", "pi", "ntk", "yarn"):
        for m in experiment.MULTIPLES:
            scaling = experiment.scaling_for(method, m, seq)
            set_rope_scaling(model, scaling)
            cos, sin = closed_form_tables(m * seq, 32, 10000.0, scaling)
            for block in model.blocks:
                c, s = block.attn.rotary.cos_sin(m * seq, 0, like)
                np.testing.assert_array_equal(c, cos.astype(np.float32))
                np.testing.assert_array_equal(s, sin.astype(np.float32))


def test_training_checkpoints_carry_the_model_config(tmp_path):
    """`tinyllm train` writes the model's config into its checkpoint metadata, the key the
    loader reads the scaling from (a run trained without scaling loads unscaled)."""
    from tinyllm.io.checkpoint import load_checkpoint
    from tinyllm.train import TrainConfig, train

    config = TrainConfig(d_model=16, n_layer=1, n_head=2, seq_len=16, batch_size=2, steps=2,
                         eval_interval=2, eval_batches=1, out_dir=str(tmp_path), name="r",
                         sample_tokens=2)  # fmt: skip
    result = train(config, progress=False, echo=lambda *a: None)
    _, meta = load_checkpoint(result.run_dir / "checkpoint.safetensors")
    from tinyllm.cli.sample_cmd import load_run

    model = load_run(result.run_dir)[0]
    assert meta["model_config"] == model.config.to_dict()
    assert meta["model_config"]["rope_scaling"] is None
