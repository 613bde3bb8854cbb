"""`tinyllm agent` smoke tests (a tiny model: the commands run end to end, print transcripts)."""

from tinyllm.cli.main import main

TINY = ["--steps", "2", "--batch-size", "2", "--d-model", "32", "--n-layer", "1", "--no-progress"]


def test_agent_train_then_run_prints_a_transcript(tmp_path, capsys):
    out = tmp_path / "agent.safetensors"
    assert main(["agent", "train", *TINY, "--out", str(out)]) == 0
    assert out.is_file()
    code = main(
        ["agent", "run", "--load", str(out), "--constrained", "--question", "What is 12 * 34?"]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "=== react/constrained/greedy" in text
    assert "Question: What is 12 * 34?\nThought: " in text
    assert "of 1 right" in text


def test_agent_run_trains_when_nothing_is_loaded(capsys):
    assert main(["agent", "run", *TINY, "--n", "1", "--direct"]) == 0
    text = capsys.readouterr().out
    assert text.count("=== direct/greedy") == 2  # one arithmetic and one lookup question
    assert "Final Answer:" in text


def test_agent_run_rejects_a_missing_file_and_bad_k(tmp_path, capsys):
    assert main(["agent", "run", "--load", str(tmp_path / "none.safetensors")]) == 2
    assert main(["agent", "run", "--k", "0"]) == 2
    err = capsys.readouterr().err
    assert "none.safetensors" in err and "--k must be >= 1" in err
    assert main(["agent", "run", "--n", "0"]) == 2
    assert main(["agent", "run", "--batch-size", "0"]) == 2
    assert main(["agent", "run", "--n", "100000", "--steps", "1", "--batch-size", "1"]) == 2
    err = capsys.readouterr().err
    assert "--n must be >= 1, got 0" in err and "--batch-size must be >= 1, got 0" in err
    assert "--n 100000:" in err
