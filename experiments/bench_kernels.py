"""Kernel benchmark: reference vs Numba kernels, naive vs flash attention (JSON lines).

The same as ``tinyllm bench kernels`` (``tinyllm/cli/bench_cmd.py``), runnable before the
subcommand is registered and with the same options:

    python experiments/bench_kernels.py [--quick] [--ops softmax,attention] [--seq 512]
"""

import argparse
import sys

from tinyllm.cli import bench_cmd


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench_kernels", description=__doc__.splitlines()[0])
    bench_cmd.BENCHMARKS["kernels"][1](parser)
    return bench_cmd.run_kernels(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
