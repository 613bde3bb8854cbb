"""Mamba against Llama on the default corpus, and Mamba's time against sequence length.

    python experiments/mamba.py train  [--steps 300] [--archs mamba llama rwkv]
    python experiments/mamba.py scaling [--lengths 256 512 1024 2048 4096]

``train``: two byte-level models of about the same size trained on the same batches (random
windows of the Python help topics, the embedded corpus; same seed, same AdamW, warmup then
cosine, clipping at 1): a Llama (d 128, 4 layers, 4 heads, SwiGLU, RoPE: ``models.Llama``)
and a Mamba (d 128, 8 layers, d_state 16, expand 2: ``models.mamba.MambaLM``; one Mamba
block holds about half the parameters of a transformer layer, so two per layer, as in the
paper's comparisons); with ``--archs ... rwkv`` also an RWKV-4 LM (d 128, 4 layers:
``models.rwkv.RWKVLM``). A_log, D and RWKV's time_* vectors are not weight-decayed. Prints,
per model, parameters, validation bits/byte on the first ``--eval-batches`` windows of the
held-out 10 %, and tokens/s while stepping (forward + backward + update); writes one JSON
line per model to experiments/results/mamba_train.jsonl.

``scaling``: forward + backward of one Mamba block (d_model 128, batch 1) at each length,
median of ``--repeats`` runs; fits time = a L + b (least squares) and the exponent of
time ~ L^p (log-log), and writes experiments/results/mamba_scaling.jsonl and a plot.
Attention would grow as L^2 in the scores; the scan's work is L d_inner N.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # run as a script: one thread, set before NumPy loads its BLAS
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import tinyllm  # noqa: E402
import tinyllm.functional as F  # noqa: E402
from tinyllm.data.batches import random_windows  # noqa: E402
from tinyllm.models import RWKVLM, Llama, ModelConfig, RWKVConfig  # noqa: E402
from tinyllm.models.mamba import MambaConfig, MambaLM  # noqa: E402
from tinyllm.nn.mamba import Mamba  # noqa: E402
from tinyllm.optim import AdamW  # noqa: E402
from tinyllm.optim.lr_scheduler import warmup_cosine  # noqa: E402
from tinyllm.train.tokens import load_tokens  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def build(arch: str, vocab: int, seq: int):
    if arch == "llama":
        return Llama(ModelConfig(arch="llama", vocab_size=vocab, d_model=128, n_layer=4,
                                 n_head=4, block_size=seq))  # fmt: skip
    if arch == "rwkv":
        return RWKVLM(RWKVConfig(vocab_size=vocab, d_model=128, n_layer=4))
    return MambaLM(MambaConfig(vocab_size=vocab, d_model=128, n_layer=8, d_state=16))


def optimizer(model, lr: float) -> AdamW:
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and name not in skip else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    return AdamW(groups, lr=lr, betas=(0.9, 0.95))


def loss_of(model, x, y):
    logits = model(tinyllm.tensor(x))
    B, T, V = logits.shape
    return F.cross_entropy(logits.reshape(B * T, V), tinyllm.tensor(y.reshape(-1)))


def bits_per_byte(model, data, batch: int, seq: int, n_batches: int) -> float:
    model.eval()
    total = count = 0.0
    starts = np.arange(n_batches * batch) * seq
    with tinyllm.no_grad():
        for k in range(n_batches):
            s = starts[k * batch : (k + 1) * batch]
            windows = data.val[s[:, None] + np.arange(seq + 1)].astype(np.int64)
            total += loss_of(model, windows[:, :-1], windows[:, 1:]).item() * windows[:, 1:].size
            count += windows[:, 1:].size
    model.train()
    return total / count / data.val_bytes_per_token / math.log(2)


def train(args) -> None:
    data = load_tokens(None, None)
    RESULTS.mkdir(exist_ok=True)
    rows = []
    for arch in args.archs:
        tinyllm.manual_seed(args.seed)
        model = build(arch, data.vocab_size, args.seq)
        opt = optimizer(model, args.lr)
        schedule = warmup_cosine(args.warmup, args.steps, 0.1)
        rng = np.random.default_rng(args.seed)
        params = sum(p.numel() for p in model.parameters())
        stepping = 0.0
        for step in range(args.steps):
            x, y = random_windows(data.train, args.batch, args.seq, rng)
            for group in opt.param_groups:
                group["lr"] = args.lr * schedule(step)
            t0 = time.perf_counter()
            loss = loss_of(model, x, y)
            opt.zero_grad()
            loss.backward()
            tinyllm.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            stepping += time.perf_counter() - t0
            if step % 50 == 0 or step == args.steps - 1:
                print(f"{arch} step {step:4d} loss {loss.item():.4f}", flush=True)
        bpb = bits_per_byte(model, data, args.batch, args.seq, args.eval_batches)
        row = {
            "arch": arch, "parameters": params, "steps": args.steps, "batch": args.batch,
            "seq_len": args.seq, "lr": args.lr, "final_train_loss_nats": loss.item(),
            "val_bits_per_byte": bpb, "val_tokens": args.eval_batches * args.batch * args.seq,
            "tokens_per_s": args.steps * args.batch * args.seq / stepping,
        }  # fmt: skip
        rows.append(row)
        with open(RESULTS / "mamba_train.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
    print(f"\n{'model':8s} {'params':>9s} {'val bits/byte':>14s} {'tokens/s':>9s}")
    for r in rows:
        print(f"{r['arch']:8s} {r['parameters']:9,d} {r['val_bits_per_byte']:14.4f} "
              f"{r['tokens_per_s']:9.0f}")  # fmt: skip


def scaling(args) -> None:
    tinyllm.manual_seed(0)
    block = Mamba(128, d_state=16)
    rng = np.random.default_rng(0)
    rows = []
    for L in args.lengths:
        x = tinyllm.tensor(rng.standard_normal((1, L, 128)).astype(np.float32), requires_grad=True)
        v = rng.standard_normal((1, L, 128)).astype(np.float32)
        times = []
        for r in range(args.repeats + 1):  # the first run warms up (Numba compilation)
            t0 = time.perf_counter()
            block(x).backward(v)
            if r:
                times.append(time.perf_counter() - t0)
        rows.append({"L": L, "seconds": float(np.median(times)), "runs": times})
        print(f"L {L:6d}  forward+backward {1e3 * rows[-1]['seconds']:9.2f} ms", flush=True)
    Ls = np.array([r["L"] for r in rows], float)
    ts = np.array([r["seconds"] for r in rows])
    a, b = np.polyfit(Ls, ts, 1)
    pred = a * Ls + b
    r2 = 1 - ((ts - pred) ** 2).sum() / ((ts - ts.mean()) ** 2).sum()
    p = np.polyfit(np.log(Ls), np.log(ts), 1)[0]
    fit = {
        "slope_ms_per_1k_tokens": 1e6 * a,
        "intercept_ms": 1e3 * b,
        "r2": r2,
        "loglog_exponent": p,
    }
    print(f"fit: time = {1e6 * a:.2f} ms per 1k tokens * L/1k + {1e3 * b:.2f} ms "
          f"(R^2 {r2:.4f}); log-log exponent {p:.3f}")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "mamba_scaling.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        f.write(json.dumps({"fit": fit}) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(Ls, 1e3 * ts, "o", label="measured")
        ax.plot(Ls, 1e3 * pred, "-", label=f"fit: {1e6 * a:.1f} ms / 1k tokens")
        ax.set_xlabel("sequence length L")
        ax.set_ylabel("forward + backward (ms)")
        ax.set_title("one Mamba block (d 128, N 16), batch 1")
        ax.legend()
        fig.tight_layout()
        fig.savefig(RESULTS / "mamba_scaling.png", dpi=120)
    except ImportError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument(
        "--archs", nargs="+", default=["mamba", "llama"], choices=["mamba", "llama", "rwkv"]
    )
    t.add_argument("--steps", type=int, default=300)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--seq", type=int, default=128)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--warmup", type=int, default=30)
    t.add_argument("--eval-batches", type=int, default=20)
    t.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("scaling")
    s.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    s.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tinyllm.runtime.tune_process()  # a program of its own, like `tinyllm train`
    train(args) if args.cmd == "train" else scaling(args)


if __name__ == "__main__":
    main()
