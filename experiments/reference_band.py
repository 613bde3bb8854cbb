"""Measure the reference band of the default ``tinyllm train`` run: validation bits per byte at
each evaluation step, min and max over seeds, stored in tinyllm/data/reference_band.json.

    python experiments/reference_band.py --seeds 0 1 2                 # the Llama default run
    python experiments/reference_band.py --arch mamba --seeds 0 1 2    # tinyllm train --arch mamba

Each seed is a full default run of that architecture (about as long as ``tinyllm train``).
The band is what ``tinyllm train`` compares a run with at each evaluation ("is my loss curve
normal?"). The package's band file holds one band per architecture (``{"bands": {arch:
band}}``): writing to it replaces that architecture's band and keeps the others. Any other
``--out`` gets the band alone, a part that ``--merge`` reads. Seeds can run as separate
processes and be merged afterwards:

    python experiments/reference_band.py --seeds 1 --out /tmp/seed1.json   # one per seed
    python experiments/reference_band.py --merge /tmp/seed0.json /tmp/seed1.json ...

``--steps N`` measures a shorter run (its band applies to ``tinyllm train --steps N`` only,
since the learning-rate schedule depends on the number of steps).

The MoE default run (``tinyllm train --moe-experts 8 --moe-top-k 2``) has a band of its own,
key ``llama-moe`` (``tinyllm.train.band.band_key``), never compared with the dense one:

    python experiments/reference_band.py --moe-experts 8 --moe-top-k 2 --seeds 0 1 2

``--from-runs DIR...`` makes the band from the log.jsonl of run folders that this script
(or ``tinyllm train`` with the band's configuration) wrote, without training: a run that
has not finished gives the steps it has evaluated, and the band then covers the steps that
every seed reached (``tinyllm train`` says "no reference point" at the others).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from tinyllm import runtime
from tinyllm.train import TrainConfig, train
from tinyllm.train.band import band_key, bands_of
from tinyllm.train.config import ARCHS
from tinyllm.train.loop import describe_evaluation, evaluation_plan
from tinyllm.train.tokens import load_tokens

OUT = Path(__file__).resolve().parents[1] / "tinyllm" / "data" / "reference_band.json"


def _flags(config: TrainConfig) -> str:
    """The flags that select ``config`` among band configurations ("" for the default run)."""
    flags = "" if config.arch == "llama" else f" --arch {config.arch}"
    if config.moe_experts:
        flags += f" --moe-experts {config.moe_experts} --moe-top-k {config.moe_top_k}"
    return flags + ("" if config.steps == TrainConfig().steps else f" --steps {config.steps}")


def _key(config: TrainConfig) -> str:
    """The band's key in the package's band file: the architecture, ``-moe`` for MoE runs."""
    return band_key(config.to_dict())


def band_config(arch: str, steps: int | None = None, moe_experts: int = 0,
                moe_top_k: int | None = None) -> TrainConfig:  # fmt: skip
    """The configuration a band is measured with: the defaults, for ``arch`` (and ``steps``;
    ``moe_experts`` > 0: the MoE run ``tinyllm train --moe-experts E --moe-top-k k``, every
    other MoE field at its default)."""
    moe = {"moe_experts": moe_experts} if moe_experts else {}
    if moe_experts and moe_top_k is not None:
        moe["moe_top_k"] = moe_top_k
    return TrainConfig(arch=arch, **moe, **({} if steps is None else {"steps": steps}))


def run_seeds(seeds: list[int], runs_dir: str, base: TrainConfig) -> tuple[dict, dict]:
    """({seed: {step: val bits/byte}}, {seed: seconds}) of runs of ``base``, one per seed."""
    curves, seconds = {}, {}
    for seed in seeds:
        config = dataclasses.replace(base, seed=seed, out_dir=runs_dir,
                                     name=f"{_key(base)}-seed{seed}", sample_tokens=0)  # fmt: skip
        t0 = time.perf_counter()
        result = train(config, progress=True)
        seconds[seed] = time.perf_counter() - t0
        curves[seed] = {r["step"]: r["val_bits_per_byte"] for r in result.history
                        if "val_bits_per_byte" in r}  # fmt: skip
        print(json.dumps({"seed": seed, "seconds": round(seconds[seed], 1),
                          "final_val_bits_per_byte": result.val_bits_per_byte}))  # fmt: skip
    return curves, seconds


def make_band(curves: dict, seconds: dict, command: str, config: TrainConfig) -> dict:
    """The band: min and max over seeds at every step all seeds evaluated, rounded outward."""
    seeds = sorted(curves)
    steps = sorted(set.intersection(*(set(c) for c in curves.values())))
    values = np.array([[curves[s][step] for step in steps] for s in seeds])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "description": f"validation bits/byte of the default `tinyllm train{_flags(config)}`, "
        "min/max over seeds",
        "command": command,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, measured on 2 cores",
        "load_average_at_end": load,
        "evaluation": describe_evaluation(evaluation_plan(load_tokens(None, None), config)),
        "config": config.to_dict(),
        "seeds": seeds,
        "steps": steps,
        # rounded outward, so that every seed's unrounded value lies inside the stored band
        "min": (np.floor(values.min(axis=0) * 1e4) / 1e4).tolist(),
        "max": (np.ceil(values.max(axis=0) * 1e4) / 1e4).tolist(),
        "rounding": "min and max rounded outward to 4 decimals: every seed's value lies inside",
        "per_seed": {str(s): values[i].tolist() for i, s in enumerate(seeds)},
        "seconds_per_run": {str(s): round(seconds[s], 1) for s in seeds},
    }


def write_band(band: dict, out: Path) -> None:
    """The package's band file: replace ``band``'s architecture, keep the others (a file of
    the first, single-band format is read as such); any other path: the band alone."""
    if out.resolve() == OUT.resolve():
        bands = bands_of(json.loads(out.read_text())) if out.is_file() else {}
        bands[band_key(band["config"])] = band
        order = sorted(bands, key=lambda a: (a != "llama", a))  # the default run's band first
        out.write_text(json.dumps({"bands": {a: bands[a] for a in order}}, indent=1) + "\n")
    else:
        out.write_text(json.dumps(band, indent=1) + "\n")


def curves_from_runs(run_dirs: list[str]) -> tuple[dict, dict, TrainConfig]:
    """({seed: {step: val bits/byte}}, {seed: seconds so far}, config) from run folders
    (their config.json and log.jsonl); the configurations must agree but for the seed."""
    curves, seconds, config = {}, {}, None
    for run_dir in map(Path, run_dirs):
        saved = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
        lines = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
        default = TrainConfig()  # the bookkeeping fields as a band stores them
        mine = dataclasses.replace(saved, seed=0, name=None, out_dir=default.out_dir,
                                   sample_tokens=default.sample_tokens)  # fmt: skip
        if config is None:
            config = mine
        elif mine.to_dict() != config.to_dict():
            raise SystemExit(f"--from-runs: {run_dir} was run with another configuration")
        if saved.seed in curves:
            raise SystemExit(f"--from-runs: seed {saved.seed} given twice ({run_dir})")
        curves[saved.seed] = {r["step"]: r["val_bits_per_byte"] for r in lines
                              if "val_bits_per_byte" in r}  # fmt: skip
        if not curves[saved.seed]:
            raise SystemExit(f"--from-runs: {run_dir} has no evaluation yet")
        seconds[saved.seed] = max((r.get("elapsed_s", 0.0) for r in lines), default=0.0)
    return curves, seconds, config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; flags that would be ignored are errors (exit status 2): ``--moe-top-k``
    without ``--moe-experts``, and ``--arch``/``--steps``/``--moe-*`` with ``--from-runs`` (the
    runs' config.json gives the configuration)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default=None, choices=ARCHS, help="default: llama")
    parser.add_argument("--steps", type=int, default=None,
                        help="a shorter run (default: the TrainConfig default)")  # fmt: skip
    parser.add_argument("--moe-experts", type=int, default=None,
                        help="the MoE run with E experts per layer (default 0: dense)")  # fmt: skip
    parser.add_argument(
        "--moe-top-k",
        type=int,
        default=None,
        help="experts per token of the MoE run (default: TrainConfig's; needs --moe-experts)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--runs-dir", default="runs/reference-band")
    parser.add_argument(
        "--from-runs",
        nargs="+",
        metavar="RUN_DIR",
        help="the band from run folders, finished or not (no training; their config.json "
        "gives the configuration)",
    )
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="merge band files of single seeds (no training)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.moe_top_k is not None and not args.moe_experts:
        parser.error("--moe-top-k applies to an MoE run: give --moe-experts E (E > 0) with it")
    if args.from_runs:
        flags = {"--arch": args.arch, "--steps": args.steps, "--moe-experts": args.moe_experts,
                 "--moe-top-k": args.moe_top_k}  # fmt: skip
        given = [flag for flag, value in flags.items() if value is not None]
        if given:
            parser.error(
                f"--from-runs takes the configuration from the runs' config.json: "
                f"{', '.join(given)} would be ignored (leave them out)"
            )
    args.arch = "llama" if args.arch is None else args.arch
    args.moe_experts = 0 if args.moe_experts is None else args.moe_experts
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    runtime.tune_process()  # a training program of its own, like `tinyllm train`

    if args.from_runs:
        curves, seconds, config = curves_from_runs(args.from_runs)
        seeds = " ".join(map(str, sorted(curves)))
        last = min(max(c) for c in curves.values())
        command = f"python experiments/reference_band.py{_flags(config)} --seeds {seeds} " + (
            "(seeds run in parallel" + ("" if last == config.steps else
                                        f", stopped after step {last}") + ")"
        )  # fmt: skip
    elif args.merge:
        curves, seconds, configs = {}, {}, []
        for path in args.merge:
            part = json.loads(Path(path).read_text())
            configs.append(TrainConfig.from_dict(part["config"]).to_dict())  # fields added since
            if configs[-1] != configs[0]:
                raise SystemExit(f"--merge: {path} was measured with another configuration")
            for s, values in part["per_seed"].items():
                curves[int(s)] = dict(zip(part["steps"], values))
                seconds[int(s)] = part["seconds_per_run"][s]
        config = TrainConfig.from_dict(configs[0])
        seeds = " ".join(map(str, sorted(curves)))
        command = f"python experiments/reference_band.py{_flags(config)} --seeds {seeds} " + (
            "(seeds run in parallel)"
        )
    else:
        config = band_config(args.arch, args.steps, args.moe_experts, args.moe_top_k)
        curves, seconds = run_seeds(args.seeds, args.runs_dir, config)
        command = f"python experiments/reference_band.py{_flags(config)} --seeds " + " ".join(
            map(str, args.seeds)
        )
    band = make_band(curves, seconds, command, config)
    write_band(band, Path(args.out))
    print(json.dumps({"steps": band["steps"], "min": band["min"], "max": band["max"]}))


if __name__ == "__main__":
    main()
