"""`tinyllm sample --device cuda` in-process on the stand-in: a float run and a quantized one."""

import json

import tinyllm
from tinyllm import backend
from tinyllm.cli.main import main
from tinyllm.io.checkpoint import save_checkpoint
from tinyllm.models import build_model
from tinyllm.train.config import TrainConfig
from tinyllm.train.loop import model_config_for

FLAGS = ["--prompt", "ab", "--max-new-tokens", "8", "--temperature", "0"]


def _tiny_run(path):
    config = TrainConfig(d_model=32, n_layer=1, n_head=2, seq_len=16, device="cpu")
    tinyllm.manual_seed(0)
    model = build_model(model_config_for(config, 256))
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config.to_dict()))
    arrays = {f"model.{k}": v.numpy() for k, v in model.state_dict().items()}
    save_checkpoint(path / "checkpoint.safetensors", arrays, {"step": 0})
    return path


def test_sample_on_cuda_equals_cpu_for_a_float_and_a_quantized_run(tmp_path, capsys, counters):
    run = _tiny_run(tmp_path / "run")
    qrun = tmp_path / "run-rtn"
    assert main(["quantize", str(run), "--method", "rtn", "--group-size", "16",
                 "--out", str(qrun)]) == 0  # fmt: skip
    capsys.readouterr()
    assert backend.cuda_status().ok  # the (cached) device check, before counting syncs
    for folder in (run, qrun):
        assert main(["sample", str(folder), *FLAGS]) == 0  # the run's device: cpu
        cpu = capsys.readouterr().out
        counters.reset()
        assert main(["sample", str(folder), *FLAGS, "--device", "cuda"]) == 0
        assert capsys.readouterr().out == cpu
        assert counters.launches, "no CUDA kernel ran: sample did not use the device"
        assert counters.n_syncs <= 8, counters.report()  # one read of logits per token
