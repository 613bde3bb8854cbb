"""Measure the reference band of the default ``tinyllm train`` run: validation bits per byte at
each evaluation step, min and max over seeds, stored in tinyllm/data/reference_band.json.

    python experiments/reference_band.py --seeds 0 1 2

Each seed is a full default run (about as long as ``tinyllm train``). The band is what
``tinyllm train`` compares a run with at each evaluation ("is my loss curve normal?").
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from tinyllm.train import TrainConfig, train

OUT = Path(__file__).resolve().parents[1] / "tinyllm" / "data" / "reference_band.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--runs-dir", default="runs/reference-band")
    args = parser.parse_args()

    curves, seconds, finals = {}, {}, {}
    for seed in args.seeds:
        config = TrainConfig(seed=seed, out_dir=args.runs_dir, name=f"seed{seed}", sample_tokens=0)
        t0 = time.perf_counter()
        result = train(config, progress=True)
        seconds[seed] = time.perf_counter() - t0
        curves[seed] = {r["step"]: r["val_bits_per_byte"] for r in result.history
                        if "val_bits_per_byte" in r}  # fmt: skip
        finals[seed] = result.val_bits_per_byte
        print(json.dumps({"seed": seed, "seconds": round(seconds[seed], 1),
                          "final_val_bits_per_byte": finals[seed]}))  # fmt: skip
    steps = sorted(set.intersection(*(set(c) for c in curves.values())))
    values = np.array([[curves[s][step] for step in steps] for s in args.seeds])
    band = {
        "description": "validation bits/byte of the default `tinyllm train`, min/max over seeds",
        "command": "python experiments/reference_band.py --seeds " + " ".join(map(str, args.seeds)),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, measured on 2 cores",
        "config": TrainConfig().to_dict(),
        "seeds": args.seeds,
        "steps": steps,
        # rounded outward, so that every seed's unrounded value lies inside the stored band
        "min": (np.floor(values.min(axis=0) * 1e4) / 1e4).tolist(),
        "max": (np.ceil(values.max(axis=0) * 1e4) / 1e4).tolist(),
        "rounding": "min and max rounded outward to 4 decimals: every seed's value lies inside",
        "per_seed": {str(s): values[i].round(4).tolist() for i, s in enumerate(args.seeds)},
        "seconds_per_run": {str(s): round(v, 1) for s, v in seconds.items()},
    }
    Path(args.out).write_text(json.dumps(band, indent=1) + "\n")
    print(json.dumps({"steps": steps, "min": band["min"], "max": band["max"]}))


if __name__ == "__main__":
    main()
