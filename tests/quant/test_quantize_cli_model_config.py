"""`tinyllm quantize` writes ``model_config`` into the quantized checkpoint, as `tinyllm train`
does, so the quantized run loads back as the model that was quantized (a remembered RoPE
scaling and its context included) and generates what that model generates."""

import numpy as np
import pytest

import tinyllm
from tinyllm.cli.main import main
from tinyllm.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tinyllm.quant import load_quantized, quantize_model

YARN = {"type": "yarn", "factor": 4.0, "original_max_position": 16}


def test_quantized_checkpoint_carries_model_config_and_loads_back(
    tmp_path, capsys, tiny_run, rtn_quantized
):
    from tinyllm.cli.sample_cmd import load_run

    run = tiny_run(tmp_path / "run", rope_scaling=YARN)  # the checkpoint remembers the scaling
    qrun = rtn_quantized(run, tmp_path / "run-rtn")
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


def test_a_quantized_checkpoint_without_model_config_still_loads(tmp_path, tiny_run,
                                                                  rtn_quantized):  # fmt: skip
    """Files written before model_config was saved: the model comes from config.json."""
    qrun = rtn_quantized(tiny_run(tmp_path / "run"), tmp_path / "q")
    arrays, meta = load_checkpoint(qrun / "checkpoint.safetensors")
    expected = load_quantized(qrun).config
    bad = {**meta, "model_config": {**meta["model_config"], "colour": "red"}}
    save_checkpoint(qrun / "checkpoint.safetensors", arrays, bad)
    with pytest.raises(CheckpointError, match=r"load_quantized: .* bad model_config.*colour"):
        load_quantized(qrun)
    del meta["model_config"]
    save_checkpoint(qrun / "checkpoint.safetensors", arrays, meta)
    assert load_quantized(qrun).config == expected
