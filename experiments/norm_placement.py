"""Pre-LN against post-LN transformers, with and without learning-rate warmup.

    python experiments/norm_placement.py                 # 4 layers, d 128, 300 steps, 4 runs
    python experiments/norm_placement.py --steps 100 --lr 3e-3

Four byte-level language models, identical except for the norm placement and the schedule:
``TransformerBlock(norm_placement="pre" | "post")`` x 4 (d 128, 4 heads, GELU MLP 4d,
LayerNorm, biases), learned positions, an untied LM head; pre-LN adds a final LayerNorm
before the head (GPT-2), post-LN does not (its stream is already normalized). Weights are
initialized N(0, 0.02^2) (GPT-2, without the residual rescaling, so both placements start
from the same parameters), biases 0. AdamW (betas 0.9, 0.98, weight decay 0.01), no gradient
clipping; the schedule is cosine decay to 10% of the peak lr, preceded by a linear warmup
over ``--warmup`` steps or not. Data: random windows of the default corpus (the Python help
topics as UTF-8 bytes), the same batches for every run (same seed); validation on fixed
windows of the held-out 10%.

Recorded per step: the training loss and the gradient norm of each block (sqrt of the sum
of squared gradients of its parameters) before the update. Prints a table (final and
validation loss; final and peak per-layer gradient norms), one JSON line per run, and saves
loss curves and per-layer gradient norms to experiments/results/norm_placement.png.

What to expect (Xiong et al. 2020, "On Layer Normalization in the Transformer
Architecture"): at initialization post-LN's gradients are largest for the last layers and it
needs warmup to train stably at a given lr; pre-LN's gradients are of similar size across
layers and it trains without warmup. A small, shallow model may show this only mildly.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # run as a script: one thread, set before NumPy loads its BLAS
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import tinyllm  # noqa: E402
import tinyllm.functional as F  # noqa: E402
from tinyllm.data import default_corpus_bytes, random_windows, split_bytes  # noqa: E402
from tinyllm.nn import init  # noqa: E402
from tinyllm.nn.containers import ModuleList  # noqa: E402
from tinyllm.nn.layers import Embedding, Identity, Linear  # noqa: E402
from tinyllm.nn.module import Module  # noqa: E402
from tinyllm.nn.normalization import LayerNorm  # noqa: E402
from tinyllm.nn.positional import LearnedPositionalEmbedding  # noqa: E402
from tinyllm.nn.transformer import TransformerBlock  # noqa: E402
from tinyllm.optim import AdamW  # noqa: E402
from tinyllm.optim.lr_scheduler import LambdaLR, warmup_cosine  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
VOCAB = 256  # bytes


class ByteTransformer(Module):
    """Embedding + learned positions -> n blocks -> (final LayerNorm if pre-LN) -> LM head."""

    def __init__(self, placement: str, n_layers: int, d: int, heads: int, max_len: int) -> None:
        super().__init__()
        self.wte = Embedding(VOCAB, d)
        self.wpe = LearnedPositionalEmbedding(max_len, d)
        self.blocks = ModuleList(
            [
                TransformerBlock(d, heads, norm="layernorm", norm_placement=placement, bias=True)
                for _ in range(n_layers)
            ]
        )
        self.ln_f = LayerNorm(d) if placement == "pre" else Identity()
        self.lm_head = Linear(d, VOCAB, bias=False)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                init.zeros_(p)
            elif p.ndim == 2:
                init.normal_(p, 0.0, 0.02)

    def forward(self, idx):
        x = self.wpe(self.wte(idx))  # [B, T, d]
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))  # [B, T, V]


def grad_norm(module: Module) -> float:
    total = sum(
        float((p.grad.data.astype(np.float64) ** 2).sum())
        for p in module.parameters()
        if p.grad is not None
    )
    return math.sqrt(total)


def train(placement: str, warmup: int, args, train_data, val_batches) -> dict:
    tinyllm.manual_seed(args.seed)
    model = ByteTransformer(placement, args.layers, args.d, args.heads, args.T)
    optimizer = AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    scheduler = LambdaLR(optimizer, warmup_cosine(warmup, args.steps, min_ratio=0.1))
    rng = np.random.default_rng(args.seed)  # the same batches for every run
    losses, norms = [], []  # norms: [steps, layers]
    start = time.perf_counter()
    for _ in range(args.steps):
        x, y = random_windows(train_data, args.batch, args.T, rng)
        logits = model(tinyllm.tensor(x))
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), tinyllm.tensor(y.reshape(-1)))
        optimizer.zero_grad()
        loss.backward()
        losses.append(float(loss.item()))
        norms.append([grad_norm(block) for block in model.blocks])
        if not math.isfinite(losses[-1]):
            break
        optimizer.step()
        scheduler.step()
    seconds = time.perf_counter() - start
    model.eval()
    with tinyllm.no_grad():
        val = [
            float(
                F.cross_entropy(
                    model(tinyllm.tensor(x)).reshape(-1, VOCAB), tinyllm.tensor(y.reshape(-1))
                ).item()
            )
            for x, y in val_batches
        ]
    norms = np.array(norms)
    tail = max(1, len(losses) // 10)
    return {
        "run": f"{placement}-LN, warmup {warmup}",
        "placement": placement,
        "warmup_steps": warmup,
        "lr": args.lr,
        "steps": len(losses),
        "final_train_loss": float(np.mean(losses[-tail:])),  # mean of the last 10% of steps
        "val_loss": float(np.mean(val)),
        "max_loss_after_step_20": float(np.max(losses[20:])) if len(losses) > 20 else None,
        "grad_norm_final": [float(v) for v in norms[-tail:].mean(axis=0)],
        "grad_norm_peak": [float(v) for v in norms.max(axis=0)],
        "grad_norm_step0": [float(v) for v in norms[0]],
        "seconds": seconds,
        "_losses": losses,
        "_norms": norms,
    }


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(14, 7))
    grid = fig.add_gridspec(2, len(runs))
    ax = fig.add_subplot(grid[0, :])
    for r in runs:
        losses = np.array(r["_losses"])
        smooth = np.convolve(losses, np.ones(10) / 10, mode="valid") if len(losses) > 10 else losses
        ax.plot(np.arange(len(smooth)) + (len(losses) - len(smooth)), smooth, label=r["run"])
    ax.set_xlabel("step")
    ax.set_ylabel("train loss (10-step mean, nats/byte)")
    ax.set_title(f"byte-level LM, lr {runs[0]['lr']}: loss")
    ax.legend()
    for k, r in enumerate(runs):
        axk = fig.add_subplot(grid[1, k])
        for layer in range(r["_norms"].shape[1]):
            axk.plot(r["_norms"][:, layer], label=f"layer {layer}", lw=0.8)
        axk.set_yscale("log")
        axk.set_title(f"{r['run']}: grad norm", fontsize=9)
        axk.set_xlabel("step")
        if k == 0:
            axk.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50, help="warmup steps of the warmup runs")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--T", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=RESULTS / "norm_placement.png")
    parser.add_argument("--jsonl", type=Path, default=RESULTS / "norm_placement.jsonl")
    args = parser.parse_args(argv)

    train_data, val_data = split_bytes(default_corpus_bytes())
    val_rng = np.random.default_rng(12345)
    val_batches = [random_windows(val_data, args.batch, args.T, val_rng) for _ in range(8)]
    runs = []
    for placement in ("pre", "post"):
        for warmup in (args.warmup, 0):
            run = train(placement, warmup, args, train_data, val_batches)
            print(f"{run['run']:22s} done in {run['seconds']:.0f}s", file=sys.stderr)
            runs.append(run)

    final_cols = " ".join(f"{'fin' + str(i):>6s}" for i in range(args.layers))
    peak_cols = " ".join(f"{'peak' + str(i):>6s}" for i in range(args.layers))
    header = f"{'run':22s} {'train':>6s} {'val':>6s} {'max>20':>7s} | {final_cols} | {peak_cols}"
    print("per-layer gradient norms: fin = mean over the last 10% of steps, peak = max")
    print(header)
    print("-" * len(header))
    for r in runs:
        fin = " ".join(f"{v:6.3f}" for v in r["grad_norm_final"])
        peak = " ".join(f"{v:6.2f}" for v in r["grad_norm_peak"])
        worst = r["max_loss_after_step_20"]
        worst = float("nan") if worst is None else worst
        row = f"{r['run']:22s} {r['final_train_loss']:6.3f} {r['val_loss']:6.3f} {worst:7.3f}"
        print(f"{row} | {fin} | {peak}")
    lines = []
    for r in runs:
        public = {k: v for k, v in r.items() if not k.startswith("_")}
        lines.append(
            json.dumps(
                {
                    k: round(v, 4)
                    if isinstance(v, float)
                    else ([round(x, 4) for x in v] if isinstance(v, list) else v)
                    for k, v in public.items()
                }
            )
        )
    for line in lines:
        print(line)
    args.jsonl.parent.mkdir(parents=True, exist_ok=True)
    args.jsonl.write_text("\n".join(lines) + "\n")
    plot(runs, args.plot)
    print(f"plot: {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
