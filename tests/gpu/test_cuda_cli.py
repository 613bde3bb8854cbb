"""`tinyllm train --device cuda`, `--resume` and `tinyllm sample` in-process on the stand-in."""

from tinyllm.cli.main import main

ARGS = ["--d-model", "16", "--n-layer", "1", "--n-head", "2", "--seq-len", "16",
        "--batch-size", "2", "--eval-interval", "2", "--eval-batches", "1", "--no-progress",
        "--sample-tokens", "4", "--device", "cuda", "--checkpoint-interval", "2"]  # fmt: skip


def test_train_resume_and_sample_on_cuda(tmp_path, capsys, counters):
    run = ["--out-dir", str(tmp_path), "--name", "gpu"]
    assert main(["train", *ARGS, *run, "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "bits/byte" in out
    assert counters.launches, "no CUDA kernel ran: the run did not use the device"
    assert main(["train", *ARGS, *run, "--steps", "4", "--resume"]) == 0
    capsys.readouterr()
    assert main(["sample", str(tmp_path / "gpu"), "--prompt", "def ", "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.strip()
