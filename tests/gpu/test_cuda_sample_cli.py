"""`tinyllm sample --device cuda` in-process on the stand-in: a float run and a quantized one."""

from tinyllm import backend
from tinyllm.cli.main import main

FLAGS = ["--prompt", "ab", "--max-new-tokens", "8", "--temperature", "0"]


def test_sample_on_cuda_equals_cpu_for_a_float_and_a_quantized_run(
    tmp_path, capsys, counters, tiny_run, rtn_quantized
):
    run = tiny_run(tmp_path / "run")
    qrun = rtn_quantized(run, tmp_path / "run-rtn")
    assert backend.cuda_status().ok  # the (cached) device check, before counting syncs
    for folder in (run, qrun):
        assert main(["sample", str(folder), *FLAGS]) == 0  # the run's device: cpu
        cpu = capsys.readouterr().out
        counters.reset()
        assert main(["sample", str(folder), *FLAGS, "--device", "cuda"]) == 0
        assert capsys.readouterr().out == cpu
        assert counters.launches, "no CUDA kernel ran: sample did not use the device"
        assert counters.n_syncs <= 8, counters.report()  # one read of logits per token
