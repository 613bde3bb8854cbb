"""float32 vs float16 (autocast + dynamic loss scaling) vs bfloat16 (autocast) on the default
``tinyllm train`` model: validation bits/byte, training loss, speed, loss-scale events.

    python experiments/mixed_precision.py                      # 1000 steps, the default run
    python experiments/mixed_precision.py --steps 300          # a shorter budget
    python experiments/mixed_precision.py --precisions bf16 --jobs 1
    python experiments/mixed_precision.py --report-only        # re-read finished run folders

Each precision is ``tinyllm train --precision P`` with every other setting at its default
(seed 0; ``--steps`` changes the schedule's length). ``--jobs`` runs precisions in parallel
processes. Results: ``experiments/results/mixed_precision.jsonl`` (one line per precision and
a summary line) and ``mixed_precision.png`` (training loss and validation bits/byte; the
float32 reference band of ``tinyllm/data/reference_band.json`` shaded when ``--steps`` is
the band's 1000).

float16 and bfloat16 are emulated on NumPy (``tinyllm.amp.autocast``: 16-bit operands and
outputs of every GEMM, float32 arithmetic), so the 16-bit runs are *slower* here than
float32 (rounding costs time and no 16-bit GEMM exists to gain it back); what this measures
is the effect of the precision on the model, not speed. Timings on a shared machine are
reported as measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
PRECISIONS = ("fp32", "fp16", "bf16")


def run_name(precision: str, steps: int, seed: int) -> str:
    return f"mixed-precision-{precision}-steps{steps}-s{seed}"


def train_one(precision: str, steps: int, seed: int, out_dir: str) -> None:
    from tinyllm import runtime
    from tinyllm.train import TrainConfig, train

    runtime.tune_process()  # a training program of its own, like `tinyllm train`
    config = TrainConfig(precision=precision, steps=steps, seed=seed, out_dir=out_dir,
                         name=run_name(precision, steps, seed), sample_tokens=0)  # fmt: skip
    train(config, progress=sys.stderr.isatty())


def summarize(precision: str, run_dir: Path) -> dict:
    log = run_dir / "log.jsonl"  # absent: the run has not logged a step yet
    records = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    steps = [r for r in records if "loss" in r]
    vals = [r for r in records if "val_bits_per_byte" in r]
    out = {
        "precision": precision,
        "run_dir": str(run_dir),
        "steps": steps[-1]["step"] if steps else 0,
        "train_loss": [(r["step"], r["loss"]) for r in steps],
        "val_bits_per_byte": [(r["step"], r["val_bits_per_byte"]) for r in vals],
        "band": [(r["step"], r["band"]) for r in vals if "band" in r],
        "final_val_bits_per_byte": vals[-1]["val_bits_per_byte"] if vals else None,
        "seconds": steps[-1]["elapsed_s"] if steps else None,
        "median_tokens_per_s": sorted(r["tokens_per_s"] for r in steps)[len(steps) // 2]
        if steps
        else None,
    }
    if precision == "fp16":
        out["skipped_steps"] = [r["step"] for r in steps if r.get("skipped")]
        out["loss_scale_last_logged"] = steps[-1].get("loss_scale") if steps else None
        out["note"] = "skipped steps are among the logged ones (every log_interval steps)"
    return out


def band_at(steps: int) -> dict | None:
    from tinyllm.train import band as reference_band

    band = reference_band.load_band("llama")
    if band is None or band["config"].get("steps") != steps:
        return None
    return band


def plot(rows: list[dict], band: dict | None, path: Path, steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    colors = {"fp32": "black", "fp16": "tab:blue", "bf16": "tab:orange"}
    for row in rows:
        s, l = zip(*row["train_loss"]) if row["train_loss"] else ((), ())
        label = row.get("label", row["precision"])
        a.plot(s, l, label=label, color=colors[row["precision"]], lw=1)
        if row["val_bits_per_byte"]:
            s, v = zip(*row["val_bits_per_byte"])
            b.plot(s, v, "o-", label=label, color=colors[row["precision"]], ms=3)
    if band is not None:
        b.fill_between(band["steps"], band["min"], band["max"], color="gray", alpha=0.3,
                       label=f"float32 band (seeds {band['seeds']})")  # fmt: skip
    a.set(xlabel="step", ylabel="training loss (nats/token)", title="training loss")
    b.set(xlabel="step", ylabel="validation bits/byte", title=f"validation ({steps} steps)")
    a.legend()
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=str(ROOT / "runs"))
    p.add_argument("--jobs", type=int, default=1, help="precisions trained in parallel")
    p.add_argument("--report-only", action="store_true", help="summarize finished run folders")
    p.add_argument(
        "--fp32-from-band",
        action="store_true",
        help="take float32 from the reference band's run of this seed (same "
        "configuration, measured by experiments/reference_band.py) instead of training it",
    )
    p.add_argument("--train-one", help=argparse.SUPPRESS)  # a worker process: one precision
    args = p.parse_args()
    if args.train_one:
        train_one(args.train_one, args.steps, args.seed, args.out_dir)
        return
    if args.fp32_from_band:  # float32 comes from the band: not trained, not read from a run
        args.precisions = [p for p in args.precisions if p != "fp32"]
    t0 = time.time()
    if not args.report_only:
        pending = list(args.precisions)
        running: list[subprocess.Popen] = []
        while pending or running:
            while pending and len(running) < args.jobs:
                precision = pending.pop(0)
                cmd = [
                    sys.executable,
                    __file__,
                    "--train-one",
                    precision,
                    "--steps",
                    str(args.steps),
                    "--seed",
                    str(args.seed),
                    "--out-dir",
                    args.out_dir,
                ]
                running.append(subprocess.Popen(cmd))
            running[0].wait()
            if running[0].returncode:
                raise SystemExit(f"training failed: {running[0].args}")
            running.pop(0)
    rows = []
    for precision in args.precisions:
        run_dir = Path(args.out_dir) / run_name(precision, args.steps, args.seed)
        rows.append(summarize(precision, run_dir))
    band = band_at(args.steps)
    if args.fp32_from_band:
        if band is None or str(args.seed) not in band["per_seed"]:
            raise SystemExit(
                f"--fp32-from-band: no band run of seed {args.seed} at {args.steps} steps"
            )
        values = band["per_seed"][str(args.seed)]
        rows.insert(0, {"precision": "fp32", "label": f"fp32 (band run, seed {args.seed})",
                        "source": "reference band, seed "
                        f"{args.seed} ({band['command']})", "steps": args.steps,
                        "train_loss": [], "val_bits_per_byte": list(zip(band["steps"], values)),
                        "final_val_bits_per_byte": values[-1],
                        "seconds": band["seconds_per_run"].get(str(args.seed)),
                        "median_tokens_per_s": None})  # fmt: skip
    summary = {
        "summary": True,
        "command": "python experiments/mixed_precision.py " + " ".join(sys.argv[1:]),
        "steps": args.steps,
        "seed": args.seed,
        "machine": f"{platform.machine()}, cpu, {os.cpu_count()} cores, shared and loaded",
        "load_average": os.getloadavg()[0],
        "wall_s": time.time() - t0,
        "emulation": "fp16/bf16 rounded through numpy.float16 / ml_dtypes, float32 arithmetic",
    }
    # per evaluation step: each precision against float32 and against the band. A run that
    # has not finished (a shorter budget) is compared at the evaluations it has reached.
    evals = {r["precision"]: dict(r["val_bits_per_byte"]) for r in rows}
    ref_evals = evals.get("fp32", {})
    comparisons = []
    for step in sorted({s for e in evals.values() for s in e}):
        entry = {"step": step, **{p: e[step] for p, e in evals.items() if step in e}}
        for p in evals:
            if p != "fp32" and step in evals[p] and step in ref_evals:
                entry[f"{p}_minus_fp32"] = evals[p][step] - ref_evals[step]
        if band is not None and step in band["steps"]:
            i = band["steps"].index(step)
            lo, hi = band["min"][i], band["max"][i]
            entry["band"] = [lo, hi]
            entry["band_seed_fp32"] = band["per_seed"].get(str(args.seed), [None] * (i + 1))[i]
            for p in evals:
                if step in evals[p]:
                    v = evals[p][step]
                    if entry["band_seed_fp32"] is not None:
                        entry[f"{p}_minus_band_seed_fp32"] = v - entry["band_seed_fp32"]
                    entry[f"{p}_outside_band_by"] = 0.0 if lo <= v <= hi else (
                        v - hi if v > hi else v - lo)  # fmt: skip
        comparisons.append(entry)
    summary["per_evaluation"] = comparisons
    fresh = Path(args.out_dir) / run_name("fp32", args.steps, args.seed)
    if args.fp32_from_band and band is not None and (fresh / "log.jsonl").exists():
        # the band's run of this seed stands for float32 only if this code reproduces it
        ran = dict(summarize("fp32", fresh)["val_bits_per_byte"])
        seed_values = dict(zip(band["steps"], band["per_seed"][str(args.seed)]))
        summary["fresh_fp32_equals_band_seed"] = {
            str(k): {"fresh": v, "band_seed": seed_values[k], "equal": v == seed_values[k]}
            for k, v in ran.items()
            if k in seed_values
        }
    summary["finished"] = {r["precision"]: r["steps"] == args.steps for r in rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    with (RESULTS / "mixed_precision.jsonl").open("w") as f:
        for row in rows + [summary]:
            f.write(json.dumps(row) + "\n")
    plot(rows, band, RESULTS / "mixed_precision.png", args.steps)
    table = {r["precision"]: {k: r[k] for k in ("final_val_bits_per_byte", "seconds",
                                                "median_tokens_per_s")} for r in rows}  # fmt: skip
    print(json.dumps({"table": table, **summary}, indent=1))


if __name__ == "__main__":
    main()
