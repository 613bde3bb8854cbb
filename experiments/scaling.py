"""Training-step time by model width and context: tinyllm, PyTorch, and the GEMM-only bound.

    python experiments/scaling.py                  # d_model 128 256 512 768 x T 128 512 1024
    python experiments/scaling.py --quick          # a smoke test: 2 widths, T 128, 1 round
    python experiments/scaling.py --arch gpt --rounds 5

For every (d_model, T): a Llama (or GPT) with 4 layers, head size 64, vocab 256, and
``--tokens`` tokens per step (batch = tokens // T, at least 1), float32, forward + backward +
AdamW. Three child processes per round, alternating (``tinyllm.bench.harness``):

- tinyllm (``python -m tinyllm.bench.worker``), after ``tinyllm.runtime.tune_process()``;
- PyTorch eager, idiomatic (``tinyllm/bench/torch_reference.py``, never imports tinyllm),
  from tinyllm's initial weights, default thread count; skipped when torch is absent;
- the GEMM-only bound: every matrix product of the step at the step's shapes (linear layers
  forward, dx and dW; attention QK^T, PV and their four backward products, no causal
  skipping), timed back to back in NumPy. No engine that keeps these float32 BLAS GEMMs
  can take less time.

Each cell is the median over rounds of each process's median step. One JSON line per cell
(also written to ``experiments/results/scaling.jsonl``), a table, and a plot
(``experiments/results/scaling.png``: ms per step and the ratio to PyTorch).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _args(arch: str, d_model: int, seq_len: int, batch: int, n_layer: int) -> argparse.Namespace:
    return argparse.Namespace(arch=arch, d_model=d_model, n_layer=n_layer,
                              n_head=max(1, d_model // 64), n_kv_head=None, seq_len=seq_len,
                              vocab=256, batch=batch)  # fmt: skip


def measure(arch: str, d_model: int, seq_len: int, batch: int, n_layer: int, rounds: int,
            steps: int, warmup: int, with_torch: bool) -> dict:  # fmt: skip
    """One cell: medians over ``rounds`` of tinyllm, PyTorch and GEMM-only child processes."""
    from tinyllm.bench import harness

    args = _args(arch, d_model, seq_len, batch, n_layer)
    times: dict[str, list[float]] = {"tinyllm": [], "torch": [], "gemm": []}
    with tempfile.TemporaryDirectory(prefix="tinyllm-scaling-") as folder:
        prep = harness.prepare(args, folder, check=False, device="cpu")
        spec = dict(prep["spec"], mode="train", warmup=warmup, steps=steps)
        gemm_spec = dict(spec, mode="gemm", batch_size=batch, seq_len=seq_len)
        gemm = {}
        for _ in range(rounds):
            times["tinyllm"].append(harness.run_child("tinyllm", spec)["ms"])
            if with_torch:
                times["torch"].append(harness.run_child("torch", spec)["ms"])
            gemm = harness.run_child("tinyllm", gemm_spec)
            times["gemm"].append(gemm["ms"])
    med = {k: round(statistics.median(v), 2) if v else None for k, v in times.items()}
    return {
        "experiment": "scaling", "arch": arch, "d_model": d_model, "seq_len": seq_len,
        "batch": batch, "n_layer": n_layer, "n_head": args.n_head, "params": prep["params"],
        "rounds": rounds, "steps": steps,
        "tinyllm_ms": med["tinyllm"], "torch_ms": med["torch"], "gemm_only_ms": med["gemm"],
        "gemm_gflop": gemm.get("gflop"), "gemm_gflops_per_s": gemm.get("gflops_per_s"),
        "ratio_to_torch": (round(med["tinyllm"] / med["torch"], 3) if med["torch"] else None),
        "ratio_to_gemm_bound": round(med["tinyllm"] / med["gemm"], 3),
        "per_round_ms": times,
    }  # fmt: skip


def table(rows: list[dict]) -> str:
    """The results as a Markdown table."""
    out = ["| d_model | T | batch | params | tinyllm ms | PyTorch ms | GEMM-only ms | "
           "tinyllm / PyTorch | tinyllm / GEMM-only |",
           "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        out.append(f"| {r['d_model']} | {r['seq_len']} | {r['batch']} | {r['params']:,} | "
                   f"{r['tinyllm_ms']} | {r['torch_ms'] or '-'} | {r['gemm_only_ms']} | "
                   f"{r['ratio_to_torch'] or '-'} | {r['ratio_to_gemm_bound']} |")  # fmt: skip
    return "\n".join(out)


def plot(rows: list[dict], path: Path) -> None:
    """ms per step against d_model, one colour per T; and tinyllm / PyTorch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_ratio) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, T in enumerate(sorted({r["seq_len"] for r in rows})):
        sel = sorted((r for r in rows if r["seq_len"] == T), key=lambda r: r["d_model"])
        d = [r["d_model"] for r in sel]
        color = f"C{i}"
        ax.plot(d, [r["tinyllm_ms"] for r in sel], "o-", color=color, label=f"tinyllm, T {T}")
        if all(r["torch_ms"] for r in sel):
            ax.plot(d, [r["torch_ms"] for r in sel], "s--", color=color, label=f"PyTorch, T {T}")
            ax_ratio.plot(d, [r["ratio_to_torch"] for r in sel], "o-", color=color,
                          label=f"T {T}")  # fmt: skip
        ax.plot(d, [r["gemm_only_ms"] for r in sel], ":", color=color, label=f"GEMM-only, T {T}")
    ax.set(xlabel="d_model", ylabel="ms per training step", yscale="log",
           title=f"forward + backward + AdamW, {rows[0]['n_layer']} layers")  # fmt: skip
    ax.legend(fontsize=7, ncol=2)
    ax_ratio.axhline(1.0, color="grey", lw=0.8)
    ax_ratio.set(xlabel="d_model", ylabel="tinyllm / PyTorch (lower is faster)",
                 title="time ratio, median over rounds")  # fmt: skip
    if ax_ratio.lines[1:]:
        ax_ratio.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", choices=["llama", "gpt"], default="llama")
    p.add_argument("--d-models", type=int, nargs="+", default=[128, 256, 512, 768])
    p.add_argument("--seq-lens", type=int, nargs="+", default=[128, 512, 1024])
    p.add_argument("--tokens", type=int, default=1024, help="tokens per step (batch * T)")
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: d_model 64 128, T 64, 1 round, 1 step, 1 warm-up")  # fmt: skip
    p.add_argument("--out", type=Path, default=None,
                   help="the plot (default experiments/results/scaling.png; "
                   "scaling_quick.png with --quick); the .jsonl goes beside it")  # fmt: skip
    args = p.parse_args(argv)
    if args.quick:
        args.d_models, args.seq_lens, args.rounds, args.steps, args.warmup = (
            [64, 128],
            [64],
            1,
            1,
            1,
        )
        args.n_layer = 2
    if args.out is None:
        args.out = RESULTS / ("scaling_quick.png" if args.quick else "scaling.png")
    import importlib.util

    with_torch = not args.no_torch and importlib.util.find_spec("torch") is not None
    rows = []
    jsonl = args.out.with_suffix(".jsonl")
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    with open(jsonl, "w") as f:
        for T in args.seq_lens:
            for d in args.d_models:
                batch = max(1, args.tokens // T)
                row = measure(args.arch, d, T, batch, args.n_layer, args.rounds, args.steps,
                              args.warmup, with_torch)  # fmt: skip
                rows.append(row)
                line = json.dumps(row)
                print(line, flush=True)
                f.write(line + "\n")
    print(table(rows))
    plot(rows, args.out)
    print(f"wrote {jsonl} and {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
