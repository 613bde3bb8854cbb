"""`tinyllm ops` and `tinyllm graph`, run through their own argument parsers."""

import argparse
import json
import shutil

import pytest

from tinyllm.cli import graph_cmd, ops_cmd
from tinyllm.registry import all_ops


def run_cli(module, argv):
    """Parse ``argv`` with a parser that has only ``module``'s subcommand, then run it."""
    parser = argparse.ArgumentParser(prog="tinyllm")
    module.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_ops_lists_every_registered_op(capsys):
    assert run_cli(ops_cmd, ["ops", "--no-check", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    ops = all_ops()
    assert [r["op"] for r in rows] == sorted(ops)
    for r in rows:
        assert r["family"] == ops[r["op"]].family
        assert r["kernels"] == list(ops[r["op"]].kernels)
    assert run_cli(ops_cmd, ["ops", "--no-check"]) == 0
    table = capsys.readouterr().out
    for name in ops:
        assert f"\n{name} " in table
    assert f"{len(ops)} ops" in table


def test_ops_gradchecks_a_family(capsys):
    assert run_cli(ops_cmd, ["ops", "--family", "softmax"]) == 0
    out = capsys.readouterr().out
    assert "softmax" in out and "log_softmax" in out and "pass" in out
    assert "all gradchecks pass" in out
    with pytest.raises(SystemExit, match="unknown family"):
        run_cli(ops_cmd, ["ops", "--family", "nope"])


def test_ops_reports_a_wrong_backward(monkeypatch, capsys):
    info = all_ops()["tanh"]
    monkeypatch.setattr(info, "op", lambda x: x.tanh() * 1.01 - 0.01 * x.detach().tanh())
    assert run_cli(ops_cmd, ["ops", "--family", "pointwise", "--json"]) == 1
    rows = {r["op"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["tanh"]["gradcheck"] == "fail" and rows["exp"]["gradcheck"] == "pass"


def test_graph_writes_dot_of_the_mlp(tmp_path, capsys):
    out = tmp_path / "mlp.dot"
    assert run_cli(graph_cmd, ["graph", "--model", "mlp", "--out", str(out), "--no-render"]) == 0
    text = out.read_text()
    for name in ("Embedding", "Linear", "Tanh", "CrossEntropy", "fc1.weight", "wte.weight"):
        assert name in text
    assert "mlp model" in capsys.readouterr().out


def test_graph_of_the_attention_block(tmp_path, capsys):
    out = tmp_path / "attn.dot"
    args = ["graph", "--model", "attention", "--out", str(out), "--format", "svg"]
    assert run_cli(graph_cmd, args) == 0
    text = out.read_text()
    for name in ("ScaledDotProductAttention", "LayerNorm", "attn.c_attn.weight", "lm_head.weight"):
        assert name in text
    printed = capsys.readouterr().out
    if shutil.which("dot") is None:
        assert "not installed" in printed
    else:
        assert "<svg" in out.with_suffix(".svg").read_text()


def test_graph_without_dot_writes_dot_and_says_why(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    out = tmp_path / "g.dot"
    assert run_cli(graph_cmd, ["graph", "--model", "mlp", "--out", str(out)]) == 0
    assert out.exists() and not out.with_suffix(".svg").exists()
    assert "Graphviz's `dot` program is not installed" in capsys.readouterr().out


def test_graph_auto_falls_back_to_the_mlp(monkeypatch, tmp_path, capsys):
    def broken(*args):
        raise AttributeError("no attention here")

    monkeypatch.setattr(graph_cmd, "build_attention", broken)
    out = tmp_path / "g.dot"
    assert run_cli(graph_cmd, ["graph", "--out", str(out), "--no-render"]) == 0
    captured = capsys.readouterr()
    assert "drawing the MLP instead" in captured.err and "mlp model" in captured.out
    assert "fc1.weight" in out.read_text()
    with pytest.raises(AttributeError, match="no attention here"):
        run_cli(graph_cmd, ["graph", "--model", "attention", "--out", str(out)])
