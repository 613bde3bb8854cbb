"""F.scaled_dot_product_attention on the CPU: the fused path vs the flash kernels, by length.

    python experiments/attention_paths.py                     # T 128, 256, 512, 1024, 2048
    python experiments/attention_paths.py --T 128 512 --repeats 3

Causal attention, B 1, H 4, D 64, float32, forward + backward of the public function, both
paths forced through ``FLASH_MIN_SCORES`` (0: flash for every call; huge: the fused path of
batched GEMMs around the softmax kernels, which keeps P [B, H, T, T]). The runs alternate
path by path, so load on the machine affects both alike. One JSON line per length: median
ms of each path, their ratio, and the megabytes of probabilities the fused path keeps; the
lines are also written to experiments/results/attention_paths.jsonl. This is what sets
``FLASH_MIN_SCORES`` (see ``tinyllm/functional/attention.py``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import tinyllm
import tinyllm.functional as F
from tinyllm.functional import attention

RESULTS = Path(__file__).parent / "results" / "attention_paths.jsonl"
PATHS = {"fused": 1 << 62, "flash": 0}  # FLASH_MIN_SCORES that forces each path


def measure(T: int, B: int, H: int, D: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    q, k, v = (
        tinyllm.tensor(rng.standard_normal((B, H, T, D)).astype(np.float32), requires_grad=True)
        for _ in range(3)
    )
    dout = tinyllm.tensor(rng.standard_normal((B, H, T, D)).astype(np.float32))

    def step():
        F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(dout)
        q.grad = k.grad = v.grad = None

    times: dict[str, list[float]] = {name: [] for name in PATHS}
    saved = attention.FLASH_MIN_SCORES
    try:
        for i in range(repeats + 1):  # the first round warms up (compiles, faults pages in)
            for name, threshold in PATHS.items():
                attention.FLASH_MIN_SCORES = threshold
                t0 = time.perf_counter()
                step()
                if i:
                    times[name].append((time.perf_counter() - t0) * 1e3)
    finally:
        attention.FLASH_MIN_SCORES = saved
    fused, flash = (statistics.median(times[name]) for name in PATHS)
    return {
        "bench": "attention_paths",
        "shape": [B, H, T, D],
        "causal": True,
        "fused_ms": round(fused, 2),
        "flash_ms": round(flash, 2),
        "flash_over_fused": round(flash / fused, 2),
        "fused_saved_p_mb": round(B * H * T * T * 4 / 2**20, 1),
        "repeats": repeats,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, nargs="+", default=[128, 256, 512, 1024, 2048])
    parser.add_argument("--B", type=int, default=1)
    parser.add_argument("--H", type=int, default=4)
    parser.add_argument("--D", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    lines = []
    for T in args.T:
        lines.append(json.dumps(measure(T, args.B, args.H, args.D, args.repeats)))
        print(lines[-1], flush=True)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
