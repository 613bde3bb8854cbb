"""`tinyllm quantize --method zeroquant --lkd-steps N`: LKD from the command line."""

import json

import numpy as np

import tinyllm
from tinyllm.cli.main import main


def test_quantize_zeroquant_with_lkd_writes_a_loadable_checkpoint(tmp_path, capsys, tiny_run):
    from tinyllm.quant import QuantLinear, load_quantized

    run = tiny_run(tmp_path / "run", batch_size=4)
    outs = {}
    for name, extra in (("plain", []), ("lkd", ["--lkd-steps", "20", "--lkd-lr", "1e-3"])):
        out = tmp_path / name
        argv = ["quantize", str(run), "--method", "zeroquant", "--bits", "4", "--group-size",
                "16", "--calib-batches", "2", "--out", str(out), *extra]  # fmt: skip
        assert main(argv) == 0
        outs[name] = load_quantized(out)
        summary = json.loads((out / "quant.json").read_text())
        assert summary.get("lkd_steps") == (20 if extra else None)
    capsys.readouterr()
    layers = {n: [m for m in outs[n].modules() if isinstance(m, QuantLinear)] for n in outs}
    assert len(layers["lkd"]) == 6 and all(m.act_quant == "token" for m in layers["lkd"])
    # LKD trained the latent weights: some stored codes moved (same format and size)
    changed = sum(
        int(np.any(a.qweight.qweight != b.qweight.qweight))
        for a, b in zip(layers["plain"], layers["lkd"])
    )
    assert changed > 0
    idx = tinyllm.tensor(np.array([[1, 2, 3]]))
    assert outs["lkd"](idx).shape == (1, 3, 256)


def test_lkd_steps_only_for_zeroquant(tmp_path, capsys, tiny_run):
    run = tiny_run(tmp_path / "run", batch_size=4)
    assert main(["quantize", str(run), "--method", "rtn", "--lkd-steps", "5"]) == 2
    assert "--lkd-steps is ZeroQuant's distillation" in capsys.readouterr().err
