"""`tinyllm quantize` writes ``model_config`` into the quantized checkpoint, as `tinyllm train`
does, so the quantized run loads back as the model that was quantized (a remembered RoPE
scaling and its context included) and generates what that model generates."""

import json

import numpy as np
import pytest

import tinyllm
from tinyllm.cli.main import main
from tinyllm.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tinyllm.models import build_model
from tinyllm.nn.positional import set_rope_scaling
from tinyllm.quant import load_quantized, quantize_model
from tinyllm.train.config import TrainConfig
from tinyllm.train.loop import model_config_for

YARN = {"type": "yarn", "factor": 4.0, "original_max_position": 16}


def _scaled_run(path):
    """A run whose checkpoint remembers a YaRN scaling (``model_config``, as training writes)."""
    config = TrainConfig(d_model=32, n_layer=1, n_head=2, seq_len=16)
    tinyllm.manual_seed(0)
    model = build_model(model_config_for(config, 256))
    set_rope_scaling(model, YARN)
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config.to_dict()))
    arrays = {f"model.{k}": v.numpy() for k, v in model.state_dict().items()}
    save_checkpoint(path / "checkpoint.safetensors", arrays,
                    {"step": 0, "model_config": model.config.to_dict()})  # fmt: skip
    return path


def test_quantized_checkpoint_carries_model_config_and_loads_back(tmp_path, capsys):
    from tinyllm.cli.sample_cmd import load_run

    run = _scaled_run(tmp_path / "run")
    qrun = tmp_path / "run-rtn"
    assert main(["quantize", str(run), "--method", "rtn", "--bits", "4", "--group-size", "16",
                 "--out", str(qrun)]) == 0  # fmt: skip
    capsys.readouterr()
    # the model as `tinyllm quantize` saw it: loaded with its scaling (context 4 x 16), quantized
    want_model = load_run(run)[0]
    quantize_model(want_model, "rtn", 4, 16)
    _, meta = load_checkpoint(qrun / "checkpoint.safetensors")
    assert meta["model_config"] == want_model.config.to_dict()
    assert meta["model_config"]["rope_scaling"]["type"] == "yarn"
    assert meta["model_config"]["block_size"] == 64
    for model in (load_quantized(qrun), load_run(qrun)[0]):
        assert model.config == want_model.config
    assert load_run(qrun, "none")[0].config.rope_scaling is None  # the flag still wins
    # past the training context (16): the scaling matters there, and it came back
    idx = tinyllm.tensor(np.array([list(b"ab")]))
    want = want_model.generate(idx, 40, temperature=0).numpy()
    got = load_quantized(qrun).generate(idx, 40, temperature=0).numpy()
    np.testing.assert_array_equal(got, want)
    assert main(["sample", str(qrun), "--prompt", "ab", "--max-new-tokens", "40",
                 "--temperature", "0", "--device", "cpu"]) == 0  # fmt: skip
    text = bytes(want[0].tolist()).decode("utf-8", errors="replace")
    assert capsys.readouterr().out == text + "\n"
    # every file of the folder was written in place of a temporary (no leftovers)
    assert sorted(p.name for p in qrun.iterdir()) == ["checkpoint.safetensors", "config.json",
                                                      "quant.json"]  # fmt: skip


def test_a_quantized_checkpoint_without_model_config_still_loads(tmp_path, capsys, tiny_run):
    """Files written before model_config was saved: the model comes from config.json."""
    run = tiny_run(tmp_path / "run")
    qrun = tmp_path / "q"
    assert main(["quantize", str(run), "--method", "rtn", "--bits", "4", "--group-size", "16",
                 "--out", str(qrun)]) == 0  # fmt: skip
    capsys.readouterr()
    arrays, meta = load_checkpoint(qrun / "checkpoint.safetensors")
    expected = load_quantized(qrun).config
    bad = {**meta, "model_config": {**meta["model_config"], "colour": "red"}}
    save_checkpoint(qrun / "checkpoint.safetensors", arrays, bad)
    with pytest.raises(CheckpointError, match=r"load_quantized: .* bad model_config.*colour"):
        load_quantized(qrun)
    del meta["model_config"]
    save_checkpoint(qrun / "checkpoint.safetensors", arrays, meta)
    assert load_quantized(qrun).config == expected
