"""The command line: subcommands listed, gradcheck's table and exit status."""

import subprocess
import sys

import pytest

from tinyllm.cli.main import SUBCOMMAND_MODULES, build_parser, main


def test_help_lists_every_subcommand(capsys):
    parser = build_parser()
    text = parser.format_help()
    for action in parser._subparsers._group_actions[0].choices:
        assert action in text
    assert len(parser._subparsers._group_actions[0].choices) >= len(SUBCOMMAND_MODULES)


def test_gradcheck_prints_table_and_passes(capsys):
    assert main(["gradcheck", "softmax", "matmul"]) == 0
    out = capsys.readouterr().out
    assert "max abs err" in out and "softmax" in out and "FAIL" not in out
    assert " passed, 0 failed" in out


def test_gradcheck_exit_status_is_1_on_failure(monkeypatch, capsys):
    import numpy as np

    from tinyllm.registry import all_ops

    info = all_ops()["tanh"]
    monkeypatch.setattr(info, "op", lambda x: x.tanh() * 1.01 - 0.01 * x.detach().tanh())
    assert main(["gradcheck", "tanh"]) == 1
    assert "FAIL" in capsys.readouterr().out
    del np


def test_console_entry_point_runs():
    out = subprocess.run(
        [sys.executable, "-m", "tinyllm", "--help"], capture_output=True, text=True, check=True
    )
    assert "gradcheck" in out.stdout


def test_train_errors_are_one_line_without_traceback(tmp_path, capsys):
    """A missing --data file and a corrupt --resume checkpoint: exit status 2 and one line
    on stderr naming the problem, not a traceback."""
    assert main(["train", "--data", str(tmp_path / "missing.txt"), "--no-progress",
                 "--out-dir", str(tmp_path)]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert err.startswith("tinyllm train: ") and "missing.txt" in err and "\n" not in err
    run = tmp_path / "bad"
    run.mkdir()
    (run / "checkpoint.safetensors").write_bytes(b"\x10\x00\x00\x00not a checkpoint")
    assert main(["train", "--resume", "--name", "bad", "--out-dir", str(tmp_path),
                 "--no-progress"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert err.startswith("tinyllm train: ") and "not a readable checkpoint" in err
    assert "\n" not in err


def test_sample_error_names_the_command_once(tmp_path, capsys):
    assert main(["sample", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("tinyllm sample:") == 1 and "config.json does not exist" in err


def test_gradflow_demo_default_output_does_not_depend_on_the_working_directory(tmp_path):
    """The default plot path is the repository's experiments/results/, from any cwd."""
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "experiments" / "gradflow_demo.py"
    out = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    want = script.parent / "results" / "gradflow.png"
    assert str(want) in " ".join(out.split())


def _greedy_text(model, prompt, n):
    import numpy as np

    import tinyllm

    ids = list(prompt.encode())
    out = model.generate(tinyllm.tensor(np.array([ids])), n, temperature=0)
    return bytes(out.numpy()[0].tolist()).decode("utf-8", errors="replace")


def _no_cuda(monkeypatch):
    from tinyllm import backend

    check = backend.CudaCheck(False, "import", "CUDA check failed (import): CuPy is not installed")
    monkeypatch.setattr(backend, "cuda_status", lambda: check)


def test_sample_device_defaults_to_the_run_and_cuda_errors_in_one_line(
    tmp_path, monkeypatch, capsys, tiny_run
):
    """--device cpu|cuda; the default is the run's config.json device. Asking for (or
    defaulting to) cuda where CUDA is unusable: exit status 2, one line naming the cause."""
    from tinyllm.cli.sample_cmd import load_run

    _no_cuda(monkeypatch)
    cpu_run = tiny_run(tmp_path / "cpu")
    want = _greedy_text(load_run(cpu_run)[0], "ab", 6)
    flags = ["--prompt", "ab", "--max-new-tokens", "6", "--temperature", "0"]
    for device in ([], ["--device", "cpu"]):
        assert main(["sample", str(cpu_run), *flags, *device]) == 0
        assert capsys.readouterr().out == want + "\n"
    assert main(["sample", str(cpu_run), *flags, "--device", "cuda"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and "\n" not in err
    assert err.startswith("tinyllm sample: --device cuda, but CUDA check failed (import)")
    gpu_run = tiny_run(tmp_path / "gpu", device="cuda")  # trained on a GPU, sampled here
    assert main(["sample", str(gpu_run), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert "the run's device is cuda" in err and "pass --device cpu" in err and "\n" not in err
    assert main(["sample", str(gpu_run), *flags, "--device", "cpu"]) == 0
    assert capsys.readouterr().out == want + "\n"
    with pytest.raises(SystemExit):  # argparse refuses any other device
        main(["sample", str(cpu_run), "--device", "tpu"])
    assert "invalid choice: 'tpu'" in capsys.readouterr().err


def test_sample_a_quantized_run(tmp_path, capsys, tiny_run, rtn_quantized):
    """`tinyllm quantize` writes quant.json beside the checkpoint; `tinyllm sample` then
    loads the quantized layers (tinyllm.quant.load_quantized) and samples from them."""
    from tinyllm.cli.sample_cmd import load_run
    from tinyllm.quant import QuantLinear, load_quantized

    qrun = rtn_quantized(tiny_run(tmp_path / "run"), tmp_path / "run-rtn")
    model = load_run(qrun)[0]
    assert sum(isinstance(m, QuantLinear) for m in model.modules()) == 6  # q k v o, gate_up, down
    want = _greedy_text(load_quantized(qrun), "ab", 8)
    assert main(["sample", str(qrun), "--prompt", "ab", "--max-new-tokens", "8",
                 "--temperature", "0", "--device", "cpu"]) == 0  # fmt: skip
    assert capsys.readouterr().out == want + "\n"
