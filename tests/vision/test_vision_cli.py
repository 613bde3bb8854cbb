"""``tinyllm vision train``: a tiny run writes its folder (metrics.json, model.npz, PNG)."""

import json

import pytest

from tinyllm.cli.main import main

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")


@pytest.mark.slow  # ~5-20 s: trains, imports matplotlib, writes a PNG
def test_vision_train_vit_writes_a_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["vision", "train", "vit", "--steps", "3", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "vit" and metrics["steps"] == 3
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert (out / "model.safetensors").stat().st_size > 0
    assert (out / "attention_rollout.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # ~5-20 s: trains a ViT and a captioner for 2 steps each, writes a PNG
def test_vision_train_caption_prints_the_band_verdict(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["vision", "train", "caption", "--steps", "2", "--vit-steps", "2", "--out", str(out)]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["vit_steps"] == 2 and metrics["vit_lr_mult"] == 0.0
    assert (out / "captions.png").read_bytes()[:4] == b"\x89PNG"
    text = capsys.readouterr().out
    # 2 steps is not the default run: the band does not apply, and the run says so
    assert "no reference band" in text and "steps=2 (band: 600)" in text
