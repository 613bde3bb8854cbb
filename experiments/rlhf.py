"""Alignment on the engine: PPO, DPO, GRPO (and a reward model) from one small base run.

Runs each method with the defaults of ``tinyllm align <method>`` for each seed (one process
per run, ``--jobs`` at a time, single-threaded BLAS/Numba so that parallel runs do not fight
over the cores), then prints the table (reward before/after on held-out prompts, KL to the
reference, alignment tax in validation bits/byte, wall time), writes it as JSON, writes the
3-seed reference bands of the reward curves to ``tinyllm/alignment/bands/<method>.json``
(``--bands``) and draws ``docs/images/rlhf_reward_kl.png``.

    tinyllm train --d-model 128 --n-layer 3 --n-head 4 --seq-len 64 --batch-size 16 \
        --steps 500 --name alignment_base          # the base run (cached under runs/)
    python experiments/rlhf.py --seeds 0 1 2 --bands
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THREADS = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
}
DRIVER = (
    "import sys\n"
    "from tinyllm.cli.main import main\n"
    "sys.exit(main(['align'] + sys.argv[1:]))\n"
)  # exactly `tinyllm align ...`, run by this interpreter


def launch(method: str, seed: int, base: str, out_dir: str, log_dir: Path) -> subprocess.Popen:
    name = f"rlhf-{method}-s{seed}"
    cmd = [
        sys.executable,
        "-c",
        DRIVER,
        method,
        base,
        "--seed",
        str(seed),
        "--name",
        name,
        "--out-dir",
        out_dir,
        "--no-progress",
    ]
    log = (log_dir / f"{name}.log").open("w")
    return subprocess.Popen(
        cmd, cwd=ROOT, env={**os.environ, **THREADS}, stdout=log, stderr=subprocess.STDOUT
    )


def make_band(method: str, seeds: list[int], out_dir: Path) -> dict:
    curves, config = [], None
    for s in seeds:
        run = out_dir / f"rlhf-{method}-s{s}"
        records = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x]
        curves.append({r["step"]: r["reward"] for r in records if r.get("kind") == "eval"})
        config = json.loads((run / "align_config.json").read_text())
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    from tinyllm.alignment.common import band_keys

    keys = band_keys(method)
    return {
        "what": f"reward on held-out prompts of `tinyllm align {method}` with its defaults, "
        "min and max over seeds (experiments/rlhf.py --bands)",
        "seeds": seeds,
        "keys": list(keys),
        "config": {k: config[k] for k in keys},
        "steps": steps,
        "min": [min(c[s] for c in curves) for s in steps],
        "max": [max(c[s] for c in curves) for s in steps],
    }


def plot(methods: list[str], seeds: list[int], out_dir: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    colors = {"ppo": "tab:blue", "dpo": "tab:green", "grpo": "tab:red"}
    for method in methods:
        for i, s in enumerate(seeds):
            run = out_dir / f"rlhf-{method}-s{s}" / "log.jsonl"
            if not run.is_file():
                continue
            ev = [json.loads(x) for x in run.read_text().splitlines() if '"eval"' in x]
            steps = [r["step"] for r in ev]
            label = method.upper() if i == 0 else None
            axes[0].plot(
                steps,
                [r["reward"] for r in ev],
                "o-",
                ms=3,
                color=colors[method],
                alpha=0.8,
                label=label,
            )
            axes[1].plot(
                steps,
                [r["kl"] for r in ev],
                "o-",
                ms=3,
                color=colors[method],
                alpha=0.8,
                label=label,
            )
    axes[0].set_ylabel("checkable reward (held-out prompts)")
    axes[1].set_ylabel("KL(policy || reference), nats per completion")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylim(0, 1.02)
    fig.suptitle(f"end a sentence after 8-32 bytes: reward and KL, seeds {seeds}")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=["ppo", "dpo", "grpo", "reward"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--base", default="runs/alignment_base")
    ap.add_argument("--out-dir", default="runs")
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--bands", action="store_true", help="write tinyllm/alignment/bands/*.json")
    ap.add_argument("--results", default="experiments/results/rlhf.json")
    ap.add_argument("--skip-existing", action="store_true", help="reuse finished run folders")
    args = ap.parse_args(argv)
    out_dir = ROOT / args.out_dir
    log_dir = Path("/tmp/rlhf_logs")
    log_dir.mkdir(exist_ok=True)
    queue = [(m, s) for s in args.seeds for m in args.methods]
    if args.skip_existing:
        queue = [
            (m, s) for m, s in queue if not (out_dir / f"rlhf-{m}-s{s}" / "summary.json").is_file()
        ]
    running: list[tuple[str, int, subprocess.Popen]] = []
    t0 = time.time()
    while queue or running:
        while queue and len(running) < args.jobs:
            m, s = queue.pop(0)
            running.append((m, s, launch(m, s, args.base, args.out_dir, log_dir)))
        time.sleep(2)
        for item in list(running):
            if item[2].poll() is not None:
                running.remove(item)
                print(
                    f"[{time.time() - t0:6.0f} s] {item[0]} seed {item[1]}: "
                    f"exit {item[2].returncode}",
                    flush=True,
                )
    rows = []
    for s in args.seeds:
        for m in args.methods:
            path = out_dir / f"rlhf-{m}-s{s}" / "summary.json"
            if path.is_file():
                rows.append(json.loads(path.read_text()))
    print(
        "\n| method | seed | reward before | reward after | KL (nats) "
        "| val bits/byte before -> after (tax) | wall |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r["method"] == "reward":
            print(
                f"| reward model | {r.get('seed', '')} | held-out pair accuracy "
                f"{r['heldout_accuracy_before']:.3f} | {r['heldout_accuracy_after']:.3f} | | | "
                f"{r['wall_s']:.0f} s |"
            )
            continue
        print(
            f"| {r['method']} | {r['seed']} | {r['reward_before']:.3f} | {r['reward_after']:.3f} | "
            f"{r['kl_after']:.2f} | {r['val_bits_per_byte_before']:.4f} -> "
            f"{r['val_bits_per_byte_after']:.4f} ({r['alignment_tax_bits_per_byte']:+.4f}) | "
            f"{r['wall_s']:.0f} s |"
        )
    results = ROOT / args.results
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps({"runs": rows}, indent=2) + "\n")
    rl = [m for m in args.methods if m != "reward"]
    if args.bands and len(args.seeds) > 1:
        for m in rl:
            band = make_band(m, args.seeds, out_dir)
            path = ROOT / "tinyllm" / "alignment" / "bands" / f"{m}.json"
            path.write_text(json.dumps(band, indent=1) + "\n")
            print(f"band: {path.relative_to(ROOT)}")
    png = ROOT / "docs" / "images" / "rlhf_reward_kl.png"
    plot(rl, args.seeds, out_dir, png)
    print(f"figure: {png}; results: {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
