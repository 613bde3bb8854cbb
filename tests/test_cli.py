"""The command line: subcommands listed, gradcheck's table and exit status."""

import subprocess
import sys

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
