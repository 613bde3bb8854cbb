"""Long context: RoPE context extension of a trained Llama, the cost of sequence mixers
against length, and the memory that recomputation saves.

    python experiments/long_context.py extension  [--steps 400] [--seq 64] [--finetune 40]
    python experiments/long_context.py scaling    [--lengths 256 ... 16384] [--max-quadratic 4096]
    python experiments/long_context.py recompute  [--layers 16] [--seq 256]
    python experiments/long_context.py knn        [--segments 32] [--finetune 60]

``extension``: a byte-level Llama (d 128, 4 layers, 4 heads, SwiGLU, RoPE) trained at
context ``--seq`` on the embedded corpus, then evaluated (validation nats/byte over the same
``--eval-tokens`` held-out tokens, cut into windows of each length) at 1x, 2x, 4x and 8x the
training context with plain RoPE and with each extension (``tinyllm.nn.positional``:
linear position interpolation, NTK-aware scaling, YaRN with its temperature; factor s = the
length multiple), without and with a short fine-tune (``--finetune`` steps at the target
length with the method on, from the trained weights; plain RoPE fine-tuned the same way is
the baseline). Writes experiments/results/long_context_extension.jsonl and .png.

``scaling``: forward + backward time (median of ``--repeats``) and peak traced memory
(tracemalloc: NumPy's allocations) of the sequence-mixing op alone, batch 1, against length:
softmax attention (the fused path: scores materialized), FlashAttention (tiled kernels), sliding
window attention (window 256, chunks of 128), Mamba's selective scan (d_inner 256, N 16) and
RWKV-4's WKV (C 128); attention has 4 heads of 32. The quadratic two stop at
``--max-quadratic``. Fits time = a L + b for the linear ones (slope in ms per 1k tokens).
Writes experiments/results/long_context_scaling.jsonl and _time.png, _memory.png.

``recompute``: peak traced memory and time of forward + backward of a stack of ``--layers``
transformer blocks (d 128, RMSNorm, SwiGLU, RoPE, dropout 0.1) with and without
``tinyllm.utils.checkpoint`` around each block; checks that the gradients are bit-identical.
Writes experiments/results/long_context_recompute.json.

``knn``: the Llama of ``extension`` (trained at context ``--seq``, cached under runs/) with a
kNN memory (Memorizing Transformer: ``tinyllm.nn.long_context.attach_knn_memory`` on layer
``--layer``, top ``--topk``) reads the validation split as 4 streams, ``--segments``
consecutive segments of ``--seq`` tokens each, memory kept across a stream's segments:
validation nats/byte per segment without memory (each segment alone), with the untrained
memory (gate at sigmoid(-2)), after ``--finetune`` steps of training with memory (8
segments per stream, memory cleared per step; the gates at ``--gate-lr-mult`` x the rate),
and after the same fine-tune without memory (the control). Writes
experiments/results/long_context_knn.json and .png.

Timings here are from whatever machine runs it (say which, and whether it was loaded).
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # run as a script: one thread, set before NumPy loads its BLAS
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

import tinyllm  # noqa: E402
import tinyllm.functional as F  # noqa: E402
import tinyllm.utils  # noqa: E402
from tinyllm.data.batches import random_windows  # noqa: E402
from tinyllm.functional import attention as attention_module  # noqa: E402
from tinyllm.models import Llama, ModelConfig  # noqa: E402
from tinyllm.nn.long_context import sliding_window_attention  # noqa: E402
from tinyllm.nn.positional import set_rope_scaling  # noqa: E402
from tinyllm.nn.transformer import TransformerBlock  # noqa: E402
from tinyllm.optim import AdamW  # noqa: E402
from tinyllm.optim.lr_scheduler import warmup_cosine  # noqa: E402
from tinyllm.train.tokens import load_tokens  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MULTIPLES = (1, 2, 4, 8)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------- extension
def scaling_for(method: str, s: float, train_ctx: int):
    if method == "plain" or s == 1:
        return None
    if method == "yarn":
        return {"type": "yarn", "factor": s, "original_max_position": train_ctx}
    return {"type": {"pi": "linear", "ntk": "ntk"}[method], "factor": s}


def loss_of(model, x, y):
    logits = model(tinyllm.tensor(x))
    B, T, V = logits.shape
    return F.cross_entropy(logits.reshape(B * T, V), tinyllm.tensor(y.reshape(-1)))


def nats_per_byte(model, data, T: int, eval_tokens: int, batch: int = 4) -> float:
    """Mean loss over the first ``eval_tokens`` validation targets in windows of length T."""
    model.eval()
    n = max(1, eval_tokens // T)
    starts = np.arange(n) * T
    total = count = 0.0
    with tinyllm.no_grad():
        for k in range(0, n, batch):
            s = starts[k : k + batch]
            w = data.val[s[:, None] + np.arange(T + 1)].astype(np.int64)
            total += loss_of(model, w[:, :-1], w[:, 1:]).item() * w[:, 1:].size
            count += w[:, 1:].size
    model.train()
    return total / count / data.val_bytes_per_token


def train_steps(model, data, steps, batch, seq, lr, warmup, seed, desc):
    opt = AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    schedule = warmup_cosine(warmup, steps, 0.1)
    rng = np.random.default_rng(seed)
    for step in tqdm(range(steps), desc=desc, leave=False):
        x, y = random_windows(data.train, batch, seq, rng)
        for group in opt.param_groups:
            group["lr"] = lr * schedule(step)
        loss = loss_of(model, x, y)
        opt.zero_grad()
        loss.backward()
        tinyllm.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return loss.item()


def trained_llama(args, data):
    """The Llama of ``extension``: loaded from runs/ when a run with the same settings left
    it there, else trained (and saved there, atomic safetensors)."""
    from tinyllm.io import load_checkpoint, save_checkpoint

    tinyllm.manual_seed(args.seed)
    config = ModelConfig(arch="llama", vocab_size=data.vocab_size, d_model=128, n_layer=4,
                         n_head=4, block_size=args.seq)  # fmt: skip
    model = Llama(config)
    cache = Path("runs") / (f"long_context_llama_seq{args.seq}_steps{args.steps}_"
                            f"batch{args.batch}_seed{args.seed}.safetensors")  # fmt: skip
    if cache.is_file():
        model.load_state_dict(load_checkpoint(cache)[0])
        print(f"loaded the trained Llama from {cache}", flush=True)
        return model
    t0 = time.perf_counter()
    final = train_steps(model, data, args.steps, args.batch, args.seq, args.lr, args.steps // 10,
                        args.seed, "train")  # fmt: skip
    print(f"trained {args.steps} steps at context {args.seq} in {time.perf_counter() - t0:.0f} s;"
          f" final train loss {final:.4f} nats/token", flush=True)  # fmt: skip
    cache.parent.mkdir(exist_ok=True)
    save_checkpoint(cache, {k: v.data for k, v in model.state_dict().items()}, {})
    return model


def extension(args) -> None:
    data = load_tokens(None, None)
    model = trained_llama(args, data)
    rows = []
    methods = ("plain", "pi", "ntk", "yarn")
    for method in methods:
        for m in MULTIPLES:
            T = m * args.seq
            set_rope_scaling(model, scaling_for(method, m, args.seq))
            row = {"method": method, "multiple": m, "context": T,
                   "nats_per_byte": nats_per_byte(model, data, T, args.eval_tokens)}  # fmt: skip
            if args.finetune and m > 1:
                tuned = copy.deepcopy(model)
                train_steps(tuned, data, args.finetune, max(1, args.batch * args.seq // T), T,
                            args.finetune_lr, 0, args.seed + m, f"{method} x{m}")  # fmt: skip
                row["finetuned_nats_per_byte"] = nats_per_byte(tuned, data, T, args.eval_tokens)
            rows.append(row)
            ft = row.get("finetuned_nats_per_byte")
            print(f"{method:6s} x{m}  T {T:5d}  val {row['nats_per_byte']:.4f} nats/byte"
                  + (f"  fine-tuned {ft:.4f}" if ft is not None else ""), flush=True)  # fmt: skip
    set_rope_scaling(model, None)
    meta = {"train_steps": args.steps, "train_context": args.seq, "batch": args.batch,
            "finetune_steps": args.finetune, "finetune_lr": args.finetune_lr,
            "eval_tokens": args.eval_tokens, "seed": args.seed,
            "parameters": sum(p.numel() for p in model.parameters())}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "long_context_extension.jsonl", "w") as f:
        f.write(json.dumps({"meta": meta}) + "\n")
        for r in rows:
            f.write(json.dumps(r) + "\n")
    print(json.dumps({"meta": meta, "rows": rows}))
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    panels = [(axes[0], "nats_per_byte", "no fine-tune"),
              (axes[1], "finetuned_nats_per_byte", f"{args.finetune}-step fine-tune")]  # fmt: skip
    for ax, key, title in panels:
        for method in methods:
            pts = [(r["multiple"], r.get(key, r["nats_per_byte"] if r["multiple"] == 1 else None))
                   for r in rows if r["method"] == method]  # fmt: skip
            pts = [(x, y) for x, y in pts if y is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=method)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(f"context / training context ({args.seq})")
        ax.set_title(title)
    axes[0].set_ylabel("validation nats/byte")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "long_context_extension.png", dpi=120)


# ---------------------------------------------------------------- scaling
H, DH = 4, 32  # attention: 4 heads of 32 (d 128)


def _mixers(rng):
    def attention_inputs(L):
        return [rng.standard_normal((1, H, L, DH)).astype(np.float32) for _ in range(3)]

    def attention(threshold):
        def run(L):
            q, k, v = (tinyllm.tensor(a, requires_grad=True) for a in attention_inputs(L))
            saved = attention_module.FLASH_MIN_SCORES
            attention_module.FLASH_MIN_SCORES = threshold
            try:
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                out.backward(tinyllm.tensor(np.ones(out.shape, np.float32)))
            finally:
                attention_module.FLASH_MIN_SCORES = saved

        return run

    def sliding(L):
        q, k, v = (tinyllm.tensor(a, requires_grad=True) for a in attention_inputs(L))
        out = sliding_window_attention(q, k, v, window=256, chunk_size=128)
        out.backward(tinyllm.tensor(np.ones(out.shape, np.float32)))

    def mamba(L):
        d, N = 256, 16
        u, delta = (tinyllm.tensor(rng.standard_normal((1, d, L)).astype(np.float32),
                                   requires_grad=True) for _ in range(2))  # fmt: skip
        A = tinyllm.tensor(-np.exp(rng.standard_normal((d, N))).astype(np.float32),
                           requires_grad=True)  # fmt: skip
        B, C = (tinyllm.tensor(rng.standard_normal((1, N, L)).astype(np.float32),
                               requires_grad=True) for _ in range(2))  # fmt: skip
        out = F.selective_scan(u, delta, A, B, C, delta_softplus=True)
        out.backward(tinyllm.tensor(np.ones(out.shape, np.float32)))

    def rwkv(L):
        C = 128
        td, tf = (tinyllm.tensor(rng.standard_normal(C).astype(np.float32), requires_grad=True)
                  for _ in range(2))  # fmt: skip
        k, v = (tinyllm.tensor(rng.standard_normal((1, L, C)).astype(np.float32),
                               requires_grad=True) for _ in range(2))  # fmt: skip
        out = F.wkv4(td, tf, k, v)
        out.backward(tinyllm.tensor(np.ones(out.shape, np.float32)))

    return {"attention": (attention(1 << 62), True), "flash": (attention(0), True),
            "sliding_window": (sliding, False), "mamba": (mamba, False),
            "rwkv": (rwkv, False)}  # fmt: skip


def scaling(args) -> None:
    rng = np.random.default_rng(0)
    rows = []
    mixers = _mixers(rng)
    for name, (run, quadratic) in mixers.items():
        run(256)  # warm-up: Numba compilation
        for L in args.lengths:
            if quadratic and L > args.max_quadratic:
                continue
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                run(L)
                times.append(time.perf_counter() - t0)
            tracemalloc.start()
            run(L)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            rows.append({"mixer": name, "L": L, "seconds": float(np.median(times)),
                         "peak_bytes": int(peak)})  # fmt: skip
            print(f"{name:15s} L {L:6d}  {1e3 * rows[-1]['seconds']:10.2f} ms  "
                  f"{peak / 2**20:9.1f} MiB", flush=True)  # fmt: skip
    fits = {}
    for name in mixers:
        pts = [(r["L"], r["seconds"]) for r in rows if r["mixer"] == name]
        Ls, ts = np.array([p[0] for p in pts], float), np.array([p[1] for p in pts])
        a, b = np.polyfit(Ls, ts, 1)
        pred = a * Ls + b
        fits[name] = {
            "slope_ms_per_1k_tokens": 1e6 * a, "intercept_ms": 1e3 * b,
            "r2": float(1 - ((ts - pred) ** 2).sum() / ((ts - ts.mean()) ** 2).sum()),
            "loglog_exponent": float(np.polyfit(np.log(Ls), np.log(ts), 1)[0]),
        }  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "long_context_scaling.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        f.write(json.dumps({"fits": fits}) + "\n")
    print(json.dumps({"fits": fits}))
    plt = _plt()
    for key, label, scale, fname in (("seconds", "forward + backward (ms)", 1e3, "time"),
                                     ("peak_bytes", "peak traced memory (MiB)", 2**-20,
                                      "memory")):  # fmt: skip
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for name in mixers:
            pts = [(r["L"], r[key] * scale) for r in rows if r["mixer"] == name]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L")
        ax.set_ylabel(label)
        ax.set_title("sequence mixers, batch 1, d 128")
        ax.legend()
        fig.tight_layout()
        fig.savefig(RESULTS / f"long_context_scaling_{fname}.png", dpi=120)


# ---------------------------------------------------------------- recompute
def recompute(args) -> None:
    tinyllm.manual_seed(0)
    C = 128
    blocks = [
        TransformerBlock(
            C,
            4,
            d_ff=4 * C,
            norm="rmsnorm",
            ffn="swiglu",
            dropout=0.1,
            attn_dropout=0.1,
            positional="rope",
        )  # fmt: skip
        for _ in range(args.layers)
    ]
    x0 = np.random.default_rng(0).standard_normal((args.batch, args.seq, C)).astype(np.float32)

    def step(use_checkpoint: bool, trace: bool):
        tinyllm.manual_seed(1)
        for b in blocks:
            b.zero_grad()
        if trace:
            tracemalloc.start()
        t0 = time.perf_counter()
        h = tinyllm.tensor(x0, requires_grad=True)
        for b in blocks:
            h = tinyllm.utils.checkpoint(b, h) if use_checkpoint else b(h)
        (h * h).mean().backward()
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] if trace else None
        if trace:
            tracemalloc.stop()
        return seconds, peak, [p.grad.data.copy() for b in blocks for p in b.parameters()]

    result = {"layers": args.layers, "batch": args.batch, "seq": args.seq, "d_model": C}
    grads, times = {}, {"plain": [], "checkpoint": []}
    step(False, False), step(True, False)  # warm-up
    for _ in range(args.repeats):  # alternated, so a change of machine load hits both
        for use in (False, True):
            times["checkpoint" if use else "plain"].append(step(use, False)[0])
    for use in (False, True):
        key = "checkpoint" if use else "plain"
        _, peak, grads[key] = step(use, True)
        result[key] = {"seconds": float(np.median(times[key])), "runs": times[key],
                       "peak_bytes": int(peak)}  # fmt: skip
        print(f"{key:10s} forward+backward {np.median(times[key]):.3f} s, peak traced memory "
              f"{peak / 2**20:.1f} MiB", flush=True)  # fmt: skip
    result["bit_identical_grads"] = all(
        np.array_equal(a, b) for a, b in zip(grads["plain"], grads["checkpoint"])
    )
    result["memory_ratio"] = result["plain"]["peak_bytes"] / result["checkpoint"]["peak_bytes"]
    result["time_ratio"] = result["checkpoint"]["seconds"] / result["plain"]["seconds"]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "long_context_recompute.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


# ---------------------------------------------------------------- knn memory
def _streams(tokens: np.ndarray, n_streams: int, segments: int, seq: int, starts=None):
    """[n_streams, segments, seq + 1] windows: stream i reads consecutive segments."""
    if starts is None:
        starts = np.arange(n_streams) * (len(tokens) // n_streams)
    base = starts[:, None] + np.arange(segments)[None, :] * seq
    return tokens[base[..., None] + np.arange(seq + 1)].astype(np.int64)


def knn_eval(model, layer, windows, use_memory: bool) -> list[float]:
    """Mean loss (nats/token) per segment index, memory kept across a stream's segments."""
    model.eval()
    layer.memory.clear()
    layer.use_memory = use_memory
    losses = []
    with tinyllm.no_grad():
        for s in range(windows.shape[1]):
            w = windows[:, s]
            losses.append(loss_of(model, w[:, :-1], w[:, 1:]).item())
    layer.memory.clear()
    model.train()
    return losses


def knn_finetune(model, layer, data, args, use_memory: bool) -> None:
    gate = [layer.gate]  # a fresh scalar per head: its own (larger) step size, as gates do
    rest = [p for p in model.parameters() if p is not layer.gate]
    groups = [{"params": rest}, {"params": gate, "lr": args.finetune_lr * args.gate_lr_mult}]
    opt = AdamW(groups, lr=args.finetune_lr, betas=(0.9, 0.95), weight_decay=0.0)
    rng = np.random.default_rng(args.seed + 1)
    layer.use_memory = use_memory
    span = 8 * args.seq + 1
    desc = "fine-tune " + ("with" if use_memory else "without") + " memory"
    for _ in tqdm(range(args.finetune), desc=desc, leave=False):
        starts = rng.integers(0, len(data.train) - span, 8)
        windows = _streams(data.train, 8, 8, args.seq, starts)
        layer.memory.clear()
        opt.zero_grad()
        for s in range(8):  # memory from earlier segments, no gradient into it
            w = windows[:, s]
            (loss_of(model, w[:, :-1], w[:, 1:]) * (1.0 / 8)).backward()
        tinyllm.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    layer.memory.clear()


def knn(args) -> None:
    from tinyllm.nn.long_context import attach_knn_memory

    data = load_tokens(None, None)
    base = trained_llama(args, data)
    windows = _streams(data.val, 4, args.segments, args.seq)
    per_byte = 1.0 / data.val_bytes_per_token
    curves = {}
    model = copy.deepcopy(base)
    layer = attach_knn_memory(model, args.layer, topk=args.topk)
    curves["no memory"] = knn_eval(model, layer, windows, False)
    curves["memory, untrained gate"] = knn_eval(model, layer, windows, True)
    for use in (True, False):
        tuned = copy.deepcopy(base)
        tuned_layer = attach_knn_memory(tuned, args.layer, topk=args.topk)
        knn_finetune(tuned, tuned_layer, data, args, use)
        key = "fine-tuned with memory" if use else "fine-tuned without memory (control)"
        curves[key] = knn_eval(tuned, tuned_layer, windows, use)
        if use:
            gate = 1 / (1 + np.exp(-tuned_layer.gate.data.astype(np.float64)))
    result = {
        "segments": args.segments, "seq": args.seq, "streams": 4, "layer": args.layer,
        "topk": args.topk, "finetune_steps": args.finetune, "finetune_lr": args.finetune_lr,
        "gate_lr_mult": args.gate_lr_mult,
        "gate_after_finetune": gate.tolist(),
        "nats_per_byte": {k: float(np.mean(v[1:]) * per_byte) for k, v in curves.items()},
        "per_segment_nats_per_byte": {k: [x * per_byte for x in v] for k, v in curves.items()},
    }  # fmt: skip
    for k, v in result["nats_per_byte"].items():
        print(f"{k:38s} {v:.4f} nats/byte (segments 2..{args.segments})")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "long_context_knn.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["nats_per_byte"]))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, v in result["per_segment_nats_per_byte"].items():
        ax.plot(np.arange(1, len(v) + 1), v, "-", label=k)
    ax.set_xlabel(f"segment of the stream ({args.seq} tokens each)")
    ax.set_ylabel("validation nats/byte")
    ax.set_title("Llama + kNN memory (Memorizing Transformer)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "long_context_knn.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("extension")
    e.add_argument("--steps", type=int, default=400)
    e.add_argument("--batch", type=int, default=16)
    e.add_argument("--seq", type=int, default=64)
    e.add_argument("--lr", type=float, default=2e-3)
    e.add_argument("--finetune", type=int, default=40)
    e.add_argument("--finetune-lr", type=float, default=3e-4)
    e.add_argument("--eval-tokens", type=int, default=16384)
    e.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("scaling")
    s.add_argument("--lengths", type=int, nargs="+",
                   default=[256, 512, 1024, 2048, 4096, 8192, 16384])  # fmt: skip
    s.add_argument("--max-quadratic", type=int, default=4096)
    s.add_argument("--repeats", type=int, default=3)
    r = sub.add_parser("recompute")
    r.add_argument("--layers", type=int, default=16)
    r.add_argument("--batch", type=int, default=4)
    r.add_argument("--seq", type=int, default=256)
    r.add_argument("--repeats", type=int, default=5)
    k = sub.add_parser("knn")
    for name, value in (("--steps", 400), ("--batch", 16), ("--seq", 64), ("--seed", 0),
                        ("--segments", 32), ("--finetune", 150), ("--layer", 2),
                        ("--topk", 32)):  # fmt: skip
        k.add_argument(name, type=int, default=value)
    k.add_argument("--lr", type=float, default=2e-3)
    k.add_argument("--finetune-lr", type=float, default=3e-4)
    k.add_argument("--gate-lr-mult", type=float, default=30.0)
    args = parser.parse_args()
    tinyllm.runtime.tune_process()  # a program of its own, like `tinyllm train`
    commands = {"extension": extension, "scaling": scaling, "recompute": recompute, "knn": knn}
    commands[args.cmd](args)


if __name__ == "__main__":
    main()
