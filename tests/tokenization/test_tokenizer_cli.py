"""The ``tinyllm tokenizer`` subcommand, driven through its own argparse registration."""

import argparse

import pytest

from tinyllm.cli import tokenizer_cmd
from tinyllm.tokenizers import BPETokenizer


def run(argv):
    parser = argparse.ArgumentParser(prog="tinyllm")
    subparsers = parser.add_subparsers(dest="command")
    tokenizer_cmd.register(subparsers)
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def trained(tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("the cat sat on the mat. the cat ate. " * 30, encoding="utf-8")
    out = tmp_path / "tok.json"
    argv = ["tokenizer", "train", "--vocab-size", "300", "--out", str(out), "--data", str(data)]
    assert run([*argv, "--special", "<|endoftext|>"]) == 0
    return out


def test_train_encode_decode(trained, capsys):
    capsys.readouterr()
    assert run(["tokenizer", "encode", "--tokenizer", str(trained), "the cat sat"]) == 0
    ids = [int(x) for x in capsys.readouterr().out.split()]
    assert ids == BPETokenizer.load(trained).encode("the cat sat")
    assert run(["tokenizer", "decode", "--tokenizer", str(trained), *map(str, ids)]) == 0
    assert capsys.readouterr().out == "the cat sat\n"


def test_encode_special_tokens(trained, capsys):
    capsys.readouterr()
    argv = ["tokenizer", "encode", "--tokenizer", str(trained), "a<|endoftext|>"]
    assert run(argv) == 1
    assert "special token" in capsys.readouterr().err
    assert run([*argv, "--allowed-special", "all"]) == 0
    special_id = BPETokenizer.load(trained).special_tokens["<|endoftext|>"]
    assert capsys.readouterr().out.split()[-1] == str(special_id)


def test_errors_are_reported(tmp_path, trained, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{}", encoding="utf-8")
    assert run(["tokenizer", "encode", "--tokenizer", str(bad), "x"]) == 1
    assert "missing key" in capsys.readouterr().err
    assert run(["tokenizer", "decode", "--tokenizer", str(trained), "999999"]) == 1
    assert "not in the vocabulary" in capsys.readouterr().err
    out = tmp_path / "t.json"
    argv = ["tokenizer", "train", "--vocab-size", "10", "--out", str(out), "--data", str(bad)]
    assert run(argv) == 1
    assert "vocab_size" in capsys.readouterr().err
    missing = str(tmp_path / "missing.txt")
    argv = ["tokenizer", "train", "--vocab-size", "300", "--out", str(out), "--data", missing]
    assert run(argv) == 1


def test_bare_subcommand_prints_help(capsys):
    assert run(["tokenizer"]) == 0
    assert "train" in capsys.readouterr().out


def test_registered_in_main_parser(monkeypatch, trained, capsys):
    from tinyllm.cli import main as cli_main

    monkeypatch.setattr(cli_main, "SUBCOMMAND_MODULES", ["tokenizer_cmd"])
    capsys.readouterr()
    assert cli_main.main(["tokenizer", "encode", "--tokenizer", str(trained), "cat"]) == 0
    assert capsys.readouterr().out.strip()
