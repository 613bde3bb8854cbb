"""The `tinyllm` command line: one subcommand per module in `tinyllm/cli/`.

Each subcommand module defines `register(subparsers)`, which adds its parser and sets
`func=run` on it; `run(args) -> int` returns the exit status. Modules are imported only when
the command line is parsed, so `tinyllm --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name of the module in tinyllm.cli, in the order `tinyllm --help` lists them
SUBCOMMAND_MODULES = [
    "gradcheck_cmd",
    "demo_cmd",
    "tokenizer_cmd",
    "train_cmd",
    "sample_cmd",
    "ops_cmd",
    "graph_cmd",
    "rag_cmd",
    "embed_cmd",
    "align_cmd",
    "quantize_cmd",
    "bench_cmd",
    "serve_cmd",
    "vision_cmd",
    "agent_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinyllm",
        description="tinyllm: a from-scratch autograd engine and LLM algorithms on NumPy/CuPy.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        module = importlib.import_module(f"tinyllm.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    # the command line is a program of its own: it tunes its process (tinyllm.runtime);
    # `import tinyllm` alone never does
    from tinyllm import runtime

    runtime.tune_process()
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
