"""``tinyllm bench kernels``: the sub-subcommand structure and its JSON lines (tiny shapes)."""

import argparse
import json

import pytest

from tinyllm.cli import bench_cmd

pytest.importorskip("numba")


def parser():
    p = argparse.ArgumentParser(prog="tinyllm")
    bench_cmd.register(p.add_subparsers(dest="command"))
    return p


def test_bench_lists_benchmarks_and_prints_help_without_one(capsys):
    p = parser()
    args = p.parse_args(["bench"])
    assert args.func(args) == 0
    assert "kernels" in capsys.readouterr().out
    for name, (help_text, add_arguments, run) in bench_cmd.BENCHMARKS.items():
        assert callable(add_arguments) and callable(run) and help_text


def test_bench_kernels_prints_one_json_line_per_op(capsys):
    args = parser().parse_args(
        ["bench", "kernels", "--quick", "--repeats", "1", "--rows", "48", "--cols", "40",
         "--seq", "24", "--batch", "1", "--heads", "2", "--head-dim", "8"]
    )  # fmt: skip
    assert args.func(args) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert records[0]["event"] == "config"
    ops = [r["op"] for r in records[1:]]
    assert ops == list(bench_cmd.KERNEL_OPS) + ["attention"]
    for r in records[1:-1]:
        assert r["reference_ms"] > 0 and r["numba_ms"] > 0 and "meets_target" in r
    attention = records[-1]
    assert attention["shape"] == [1, 2, 24, 8]
    for key in ("naive_ms", "flash_ms", "naive_peak_extra_mb", "flash_peak_extra_mb", "time_ratio"):
        assert attention[key] >= 0
    assert attention["meets_memory_target"] is None  # judged at T >= 2048 only


def test_bench_kernels_rejects_unknown_ops(capsys):
    args = parser().parse_args(["bench", "kernels", "--ops", "softmax,nope"])
    assert args.func(args) == 2
    assert "nope" in capsys.readouterr().err
