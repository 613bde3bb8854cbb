"""CLM, MLM, PrefixLM and T5 span corruption trained with the same budget on the corpus.

    python experiments/objectives.py                  # d 128, 2 layers, 300 steps, 4 runs
    python experiments/objectives.py --steps 100      # quicker

Every run is ``tinyllm train`` (``tinyllm.train.train``) with the same configuration but the
objective: byte tokens of the default corpus, d_model 128, 4 heads, Llama blocks (RMSNorm,
RoPE, SwiGLU), sequences of 128 tokens, batch 16, AdamW at lr 1e-3 with 30 warmup steps and
cosine decay, the same seed. The models differ as the objectives need:

    clm       Llama (causal), n_layer blocks                      loss per next token
    mlm       BidirectionalLM, n_layer blocks                     loss per masked token (15 %)
    prefixlm  BidirectionalLM + prefix mask, n_layer blocks       loss per continuation token
    span      EncoderDecoder, n_layer encoder + n_layer decoder   loss per target token
              blocks (about twice the parameters)                 (noise, sentinels, </s>)

The losses are NOT comparable one-to-one: each is the mean cross-entropy (nats) over a
different set of predicted tokens, with different context (a masked token sees both sides;
a continuation token sees a bidirectional prefix; a span target sees the whole corrupted
text, and a quarter of the targets are sentinels and </s>), and each step trains on a
different number of targets (CLM and PrefixLM: every (continuation) token; MLM: 15 % of
them; span: 29 per 141-token row). The table reports what each run measured and how many
targets it saw; the figure draws the curves side by side in nats per target token.

Writes experiments/results/objectives.jsonl (one line per run, with its curves) and
experiments/results/objectives.png; prints a table and one JSON line per run.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # run as a script: one thread, set before NumPy loads its BLAS
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
OBJECTIVES = ("clm", "mlm", "prefixlm", "span")
WHAT = {
    "clm": "next token",
    "mlm": "masked token",
    "prefixlm": "continuation token",
    "span": "target token",
}


def run_one(objective: str, args, out_dir: str) -> dict:
    from tinyllm.train import TrainConfig, train

    config = TrainConfig(
        objective=objective, d_model=args.d_model, n_layer=args.layers, n_head=4,
        seq_len=args.seq_len, batch_size=args.batch, steps=args.steps, lr=args.lr,
        warmup=args.warmup, eval_interval=args.eval_interval, eval_batches=args.eval_batches,
        log_interval=args.log_interval, checkpoint_interval=10**9, sample_tokens=0,
        out_dir=out_dir, name=objective, seed=args.seed,
    )  # fmt: skip
    start = time.perf_counter()
    result = train(config, progress=args.progress, echo=lambda *a: None)
    seconds = time.perf_counter() - start
    records = [json.loads(x) for x in (result.run_dir / "log.jsonl").read_text().splitlines()]
    train_curve = [(r["step"], r["loss"]) for r in records if "loss" in r]
    # clm's validation is per byte; with byte tokens one byte is one token
    val_key = "val_nats_per_byte" if objective == "clm" else "val_loss"
    val_curve = [(r["step"], r[val_key]) for r in records if val_key in r]
    if objective == "clm":
        from tinyllm.models import build_model
        from tinyllm.train.loop import model_config_for

        params = build_model(model_config_for(config, 256)).num_parameters()
        model_name, targets_per_step = "Llama (causal)", args.batch * args.seq_len
    else:
        from tinyllm.objectives.trainer import build_task_and_model

        task, model = build_task_and_model(config, 256)
        params, model_name = model.num_parameters(), type(model).__name__
        targets_per_step = float(np.mean([r["targets"] for r in records if "targets" in r]))
    tail = max(1, len(train_curve) // 10)
    return {
        "objective": objective,
        "model": model_name,
        "parameters": params,
        "loss_is_nats_per": WHAT[objective],
        "targets_per_step": targets_per_step,
        "steps": result.step,
        "final_train_loss": float(np.mean([x for _, x in train_curve[-tail:]])),
        "final_val_loss": val_curve[-1][1],
        "seconds": seconds,
        "d_model": args.d_model,
        "n_layer": args.layers,
        "seq_len": args.seq_len,
        "batch_size": args.batch,
        "lr": args.lr,
        "train_curve": train_curve,
        "val_curve": val_curve,
    }


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), dpi=120)
    for run, color in zip(runs, ("tab:blue", "tab:orange", "tab:green", "tab:red")):
        label = f"{run['objective']} (per {run['loss_is_nats_per']})"
        axes[0].plot(*zip(*run["train_curve"]), color=color, lw=1, label=label)
        axes[1].plot(*zip(*run["val_curve"]), "o-", color=color, ms=3, label=label)
    for ax, title in zip(axes, ("training loss", "validation loss (fixed masks)")):
        ax.set_xlabel("step")
        ax.set_ylabel("nats per target token (a different target set per objective)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    r = runs[0]
    fig.suptitle(
        f"objectives on the corpus (bytes): d_model {r['d_model']}, {r['n_layer']} layers "
        f"(span: {r['n_layer']} + {r['n_layer']}), T {r['seq_len']}, batch {r['batch_size']}, "
        f"{r['steps']} steps — losses are not comparable one-to-one",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--eval-interval", type=int, default=50)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--log-interval", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
    p.add_argument("--out", type=Path, default=RESULTS / "objectives")
    p.add_argument("--progress", action="store_true", help="a progress bar per run")
    args = p.parse_args(argv)

    import tinyllm

    tinyllm.runtime.tune_process()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for objective in args.objectives:
            runs.append(run_one(objective, args, tmp))
            row = {k: v for k, v in runs[-1].items() if not k.endswith("_curve")}
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.with_suffix(".jsonl").open("w") as f:
        for run in runs:
            f.write(json.dumps(run) + "\n")
    plot(runs, args.out.with_suffix(".png"))
    print(f"\n{'objective':10} {'model':16} {'params':>9} {'loss per':>19} {'targets/step':>12} "
          f"{'train':>7} {'val':>7} {'seconds':>8}")  # fmt: skip
    for r in runs:
        print(f"{r['objective']:10} {r['model']:16} {r['parameters']:>9,} "
              f"{r['loss_is_nats_per']:>19} {r['targets_per_step']:>12.0f} "
              f"{r['final_train_loss']:>7.3f} {r['final_val_loss']:>7.3f} "
              f"{r['seconds']:>8.0f}")  # fmt: skip
    print(f"\nwrote {args.out.with_suffix('.jsonl')} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
