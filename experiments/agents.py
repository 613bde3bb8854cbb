"""A tinyllm model that uses tools: fine-tune, then measure task success on held-out questions.

For each seed: fine-tune a byte-level Llama (d_model 64, 2 layers, 4 heads; 139,712
parameters) on synthetic ReAct traces of two tools (``calc`` and a BM25 ``lookup`` over the
default corpus), then answer held-out
questions (operands / words never seen in training) with six strategies: ReAct free or
schema-constrained, greedy or self-consistency (k samples, majority vote), and direct answering
without tools, greedy or self-consistency. Prints one transcript per strategy and JSON;
writes ``experiments/results/agents.{json,md}``.

    python experiments/agents.py                          # 3 seeds: 1,200 steps each
    python experiments/agents.py --seeds 0 --steps 50 --n 2 --k 2 --out /tmp/agents  # smoke
    python experiments/agents.py --runs /tmp/agent_runs   # keep / reuse the trained weights
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from tinyllm.agents.evaluate import default_strategies, evaluate_strategies
from tinyllm.agents.finetune import AgentTrainConfig, finetune, load_agent, save_agent
from tinyllm.agents.toolkit import agent_registry
from tinyllm.agents.traces import held_out_tasks
from tinyllm.io.checkpoint import load_checkpoint

RESULTS = Path(__file__).resolve().parent / "results" / "agents"


def trained_model(config: AgentTrainConfig, runs: Path | None, progress: bool):
    """(model, training record): loaded from ``runs`` when a matching file is there."""
    path = None
    if runs is not None:
        path = runs / f"agent_seed{config.seed}_steps{config.steps}.safetensors"
        if path.is_file():
            model, saved = load_agent(path)
            if saved == config:
                _, meta = load_checkpoint(path)
                return model, {"loaded": str(path), **meta.get("training", {})}
    result = finetune(config, progress=progress)
    record = {
        "seconds": result.seconds,
        "final_loss": float(np.mean(result.losses[-20:])),
        "parameters": result.model.num_parameters(),
    }
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_agent(path, result.model, config, training=record)
    return result.model, record


def markdown(summary: dict) -> str:
    seeds = summary["seeds"]
    names = list(summary["mean"])
    lines = [
        f"Task success on {summary['questions']} held-out questions "
        f"({summary['questions'] // 2} arithmetic, {summary['questions'] // 2} lookup), "
        f"{len(seeds)} seeds; fine-tuned {summary['config']['steps']} steps; "
        f"k = {summary['k']}, temperature {summary['temperature']}.",
        "",
        "| strategy | " + " | ".join(f"seed {s}" for s in seeds)
        + " | mean | mean calc | mean lookup | well-formed steps |",
        "|---|" + "---|" * (len(seeds) + 4),
    ]  # fmt: skip
    for name in names:
        per = [summary["per_seed"][str(s)][name] for s in seeds]
        m = summary["mean"][name]
        wf = m["well_formed_steps"]
        lines.append(
            f"| {name} | " + " | ".join(f"{p['success']:.3f}" for p in per)
            + f" | **{m['success']:.3f}** | {m['calc']:.3f} | {m['lookup']:.3f} | "
            + ("-" if wf is None else f"{wf:.3f}") + " |"
        )  # fmt: skip
    n = summary["questions"] // 2
    command = (
        f"python experiments/agents.py --seeds {' '.join(map(str, seeds))} "
        f"--steps {summary['config']['steps']} --n {n} --k {summary['k']} "
        f"--temperature {summary['temperature']}"
    )
    lines += [
        "",
        "well-formed steps: the fraction of generated ReAct steps that are a final answer or an "
        "action whose input parses, names a tool and validates against its schema.",
        "",
        f"Reproduce: `{command}` (seeds may run in separate processes, then `--merge`).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--n", type=int, default=20, help="held-out questions of each kind")
    parser.add_argument("--k", type=int, default=5, help="self-consistency samples")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--runs", type=Path, default=None, help="save / reuse weights here")
    parser.add_argument("--out", type=Path, default=RESULTS, help="writes OUT.json, OUT.md")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--merge", type=Path, nargs="+", default=None,
        help="combine the per-seed results of earlier runs (their OUT.json files) into OUT",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out)

    registry = agent_registry()
    tasks = held_out_tasks(args.n)
    strategies = default_strategies(args.k)
    per_seed, training = {}, {}
    config = None
    for seed in args.seeds:
        config = AgentTrainConfig(seed=seed, steps=args.steps)
        t0 = time.perf_counter()
        model, training[str(seed)] = trained_model(config, args.runs, not args.no_progress)
        report = evaluate_strategies(
            model, registry, tasks, strategies, seed=seed, temperature=args.temperature,
            progress=not args.no_progress,
        )  # fmt: skip
        for name, r in report.items():
            print(f"--- seed {seed}, {name}: success {r['success']:.3f}")
            for o in r["outcomes"][:2]:  # held_out_tasks alternates: one of each kind
                print(o["transcript"])
            for o in r["outcomes"][2:]:
                o.pop("transcript")  # keep two transcripts per strategy and seed
        per_seed[str(seed)] = report
        print(f"seed {seed} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    summary = {
        "experiment": "agents",
        "machine": "shared, loaded 2-core CPU (timings are indicative only)",
        "seeds": args.seeds,
        "questions": len(tasks),
        "k": args.k,
        "temperature": args.temperature,
        "config": {k: v for k, v in config.__dict__.items() if k != "seed"},
        "training": training,
        "per_seed": per_seed,
    }
    write(summary, args.out)
    return 0


def write(summary: dict, out: Path) -> None:
    """Add the means over seeds, write OUT.json and OUT.md, print them."""
    per_seed, seeds = summary["per_seed"], summary["seeds"]
    mean = {}
    for name in per_seed[str(seeds[0])]:
        rows = [per_seed[str(s)][name] for s in seeds]
        wf = [r["well_formed_steps"] for r in rows if r["well_formed_steps"] is not None]
        mean[name] = {
            "success": float(np.mean([r["success"] for r in rows])),
            "calc": float(np.mean([r["success_by_kind"]["calc"] for r in rows])),
            "lookup": float(np.mean([r["success_by_kind"]["lookup"] for r in rows])),
            "well_formed_steps": float(np.mean(wf)) if wf else None,
            "seconds": float(np.mean([r["seconds"] for r in rows])),
        }
    summary = {**summary, "mean": mean, "per_seed": _compact(per_seed)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=None) + "\n")
    out.with_suffix(".md").write_text(markdown(summary))
    print(json.dumps({"mean": mean, "training": summary["training"]}, indent=1))
    print(markdown(summary))


KEPT = ("question", "expected", "answer", "correct", "steps", "well_formed", "transcript")


def _compact(per_seed: dict) -> dict:
    """The per-question outcomes with the fields worth keeping (no vote counts)."""
    return {
        seed: {
            name: {**r, "outcomes": [{k: o[k] for k in KEPT if k in o} for o in r["outcomes"]]}
            for name, r in report.items()
        }
        for seed, report in per_seed.items()
    }


def merge(paths: list[Path], out: Path) -> int:
    """One summary from runs of disjoint seeds with the same settings (run in parallel)."""
    parts = [json.loads(p.read_text()) for p in paths]
    same = ("questions", "k", "temperature", "config")
    for key in same:
        if any(p[key] != parts[0][key] for p in parts):
            raise SystemExit(f"agents.py --merge: the runs differ in {key!r}")
    seeds = [s for p in parts for s in p["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"agents.py --merge: repeated seeds {seeds}")
    summary = {k: v for k, v in parts[0].items() if k != "mean"}
    summary["seeds"] = seeds
    summary["training"] = {k: v for p in parts for k, v in p["training"].items()}
    summary["per_seed"] = {k: v for p in parts for k, v in p["per_seed"].items()}
    write(summary, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
