"""MHA, GQA, MQA and MLA at the same width: parameters, KV-cache bytes, training and decoding time.

    python experiments/attention_variants.py                   # d 256, 8 heads, T 256, batch 4
    python experiments/attention_variants.py --T 128 --repeats 3

One attention layer per variant, all with RoPE, float32, on the CPU:
    MHA  n_kv_heads = 8 (= n_heads)          GQA  n_kv_heads = 2          MQA  n_kv_heads = 1
    MLA  DeepSeek-V2's proportions for head size dh = d / H: kv_lora_rank 4 dh, rope dim dh / 2,
         nope and value dims dh, full-rank queries

Measured per variant:
    params            trainable scalars of the layer
    kv_bytes/token    cache bytes per token and layer, float32 (MHA/GQA/MQA: 2 Hkv dh 4;
                      MLA: (kv_lora_rank + rope dim) 4)
    fwd+bwd ms        median wall time of forward + backward on x [B, T, d] (random cotangent)
    decode ms/token   median time of one cached decoding step at context T (no grad; MLA in
                      its absorbed form)
Timings use one BLAS thread and interleave the variants run by run, so that other load on
the machine affects all of them alike.
Prints a table, one JSON line per variant, and writes a bar chart and the JSON lines under
experiments/results/.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # run as a script: one thread, set before NumPy loads its BLAS
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")  # one thread: timings comparable across machines

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import tinyllm  # noqa: E402
from tinyllm.nn.attention import Attention  # noqa: E402
from tinyllm.nn.mla import MultiHeadLatentAttention  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def build(variant: str, d: int, heads: int):
    dh = d // heads
    if variant == "MLA":
        return MultiHeadLatentAttention(
            d,
            heads,
            kv_lora_rank=4 * dh,
            qk_nope_head_dim=dh,
            qk_rope_head_dim=dh // 2,
            v_head_dim=dh,
        )
    n_kv = {"MHA": heads, "GQA": max(1, heads // 4), "MQA": 1}[variant]
    return Attention(d, heads, n_kv, positional="rope")


def time_round_robin(steps: dict, repeats: int) -> dict:
    """Median seconds per step, timing the variants in turn (load on the machine hits all)."""
    for step in steps.values():
        step()  # warm-up (tables, allocator)
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def make_steps(variant: str, d: int, heads: int, B: int, T: int):
    """(layer, train_step, decode_step) for one variant."""
    tinyllm.manual_seed(0)
    layer = build(variant, d, heads)
    rng = np.random.default_rng(0)
    x = tinyllm.tensor(rng.standard_normal((B, T, d)).astype(np.float32))
    cotangent = tinyllm.tensor(rng.standard_normal((B, T, d)).astype(np.float32))

    def train_step():
        layer.zero_grad()
        layer(x).backward(cotangent)

    cache = layer.new_cache()
    with tinyllm.no_grad():
        layer(x, cache=cache)  # prefill T tokens
    token = x[:, :1]

    def decode_step():
        with tinyllm.no_grad():
            layer(token, cache=cache)
        cache.crop(T)  # every step decodes at context T

    return layer, train_step, decode_step


def measure(d: int, heads: int, B: int, T: int, repeats: int) -> list[dict]:
    variants = ("MHA", "GQA", "MQA", "MLA")
    built = {v: make_steps(v, d, heads, B, T) for v in variants}
    train = time_round_robin({v: built[v][1] for v in variants}, repeats)
    decode = time_round_robin({v: built[v][2] for v in variants}, 5 * repeats)
    rows = []
    for v in variants:
        layer = built[v][0]
        per_token = layer.kv_cache_bytes_per_token("float32")
        rows.append(
            {
                "variant": v,
                "params": layer.num_parameters(),
                "kv_bytes_per_token": per_token,
                "kv_cache_MiB_at_T": per_token * B * T / 2**20,
                "fwd_bwd_ms": 1e3 * train[v],
                "decode_ms_per_token": 1e3 * decode[v],
                "d_model": d,
                "n_heads": heads,
                "T": T,
                "batch": B,
            }
        )
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["variant"] for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    panels = [
        ("params", "parameters"),
        ("kv_bytes_per_token", "KV-cache bytes / token (fp32)"),
        ("fwd_bwd_ms", "forward+backward (ms)"),
        ("decode_ms_per_token", "decode step (ms)"),
    ]
    for ax, (key, title) in zip(axes, panels):
        ax.bar(names, [r[key] for r in rows], color=["C0", "C1", "C2", "C3"][: len(rows)])
        ax.set_title(title, fontsize=10)
    r0 = rows[0]
    fig.suptitle(
        f"one attention layer, d={r0['d_model']}, H={r0['n_heads']}, "
        f"T={r0['T']}, B={r0['batch']} (CPU, float32)"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--T", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--plot", type=Path, default=RESULTS / "attention_variants.png")
    parser.add_argument("--jsonl", type=Path, default=RESULTS / "attention_variants.jsonl")
    args = parser.parse_args(argv)

    rows = measure(args.d, args.heads, args.batch, args.T, args.repeats)
    header = (
        f"{'variant':8s} {'params':>9s} {'KV B/token':>11s} {'KV MiB@T':>9s} "
        f"{'fwd+bwd ms':>11s} {'decode ms':>10s}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['variant']:8s} {r['params']:9d} {r['kv_bytes_per_token']:11d} "
            f"{r['kv_cache_MiB_at_T']:9.2f} {r['fwd_bwd_ms']:11.1f} "
            f"{r['decode_ms_per_token']:10.2f}"
        )
    lines = [
        json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()})
        for r in rows
    ]
    for line in lines:
        print(line)
    args.jsonl.parent.mkdir(parents=True, exist_ok=True)
    args.jsonl.write_text("\n".join(lines) + "\n")
    plot(rows, args.plot)
    print(f"plot: {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
