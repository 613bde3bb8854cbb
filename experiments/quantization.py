"""Quantization study: methods x bits x group sizes on the trained Llama and on MiniLM.

    python experiments/quantization.py                          # runs/quant_base, everything
    python experiments/quantization.py --run runs/<name> --eval-batches 10 --sentences 64

For each configuration (float32, RTN, GPTQ, AWQ at 8/4/3 bits and per-channel / g128 / g64,
NF4 with double quantization, FP8 E4M3, LLM.int8(), SmoothQuant W8A8, ZeroQuant W4A8):

- **Llama** (the run folder; ``runs/quant_base`` is ``tinyllm train --name quant_base --steps
  400 --warmup 40``, the default architecture trained for 400 steps): bytes of all weights
  (float embeddings and head included), validation bits/byte on the first ``--eval-batches``
  validation batches, and ms per token of a one-token forward through the module path (the
  packed kernels; median of ``--reps``);
- **MiniLM** (all-MiniLM-L6-v2): bytes of the encoder's linear layers, and the cosine of each
  sentence embedding to its float32 embedding, mean and worst over ``--sentences`` fixed
  corpus sentences (disjoint from the calibration sentences).

Calibration: 8 random training windows of the run (Llama), 128 corpus sentences (MiniLM), one
pass on the float model. Then a kernel table: ``dequant_matmul`` (Numba) vs the float32 GEMM
(``x @ W.T``, OpenBLAS) for R = 1 and R = 256 rows, alternating in one process.
Writes ``experiments/results/quantization.jsonl`` and ``quantization.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import tinyllm

CONFIGS = [
    ("float32", {}),
    ("rtn", {"bits": 8, "group_size": None}),
    ("rtn", {"bits": 4, "group_size": None}),
    ("rtn", {"bits": 4, "group_size": 128}),
    ("rtn", {"bits": 4, "group_size": 64}),
    ("rtn", {"bits": 3, "group_size": 64}),
    ("gptq", {"bits": 4, "group_size": None}),
    ("gptq", {"bits": 4, "group_size": 128}),
    ("gptq", {"bits": 4, "group_size": 64}),
    ("gptq", {"bits": 3, "group_size": 64}),
    ("awq", {"bits": 4, "group_size": 128}),
    ("awq", {"bits": 3, "group_size": 64}),
    ("nf4", {}),
    ("fp8", {"bits": 8}),
    ("llm_int8", {"bits": 8}),
    ("smoothquant", {"bits": 8, "group_size": None}),
    ("zeroquant", {"bits": 4, "group_size": 128}),
]


def label(method: str, kw: dict) -> str:
    if method in ("float32", "nf4", "fp8", "llm_int8"):
        return {
            "nf4": "nf4 (g64, DQ)",
            "fp8": "fp8 e4m3 (per row)",
            "llm_int8": "LLM.int8() (6.0)",
        }.get(method, method)
    g = kw.get("group_size")
    tag = f"w{kw['bits']}" + (f" g{g}" if g else " per-channel")
    if method == "smoothquant":
        tag += " a8 (alpha 0.5)"
    if method == "zeroquant":
        tag += " a8 token-wise"
    return f"{method} {tag}"


def llama_rows(run: Path, eval_batches: int, reps: int, log) -> list[dict]:
    from tinyllm.cli.sample_cmd import load_run
    from tinyllm.data.batches import random_windows, sequential_windows
    from tinyllm.quant import model_nbytes, quantize_model
    from tinyllm.train.loop import lm_loss
    from tinyllm.train.tokens import load_tokens

    _, config, _, _ = load_run(run)
    data = load_tokens(config.data, config.tokenizer)
    rng = np.random.default_rng(1234)
    calib = [
        random_windows(data.train, config.batch_size, config.seq_len, rng)[0] for _ in range(8)
    ]
    val = list(sequential_windows(data.val, config.batch_size, config.seq_len, eval_batches))
    rows = []
    for method, kw in CONFIGS:
        model, *_ = load_run(run)
        t0 = time.perf_counter()
        if method != "float32":
            quantize_model(model, method, kw.get("bits", 4), kw.get("group_size", 128),
                           calibration=calib,
                           forward=lambda m, b: m(tinyllm.tensor(b)))  # fmt: skip
        t_quant = time.perf_counter() - t0
        model.eval()
        total = count = 0
        with tinyllm.no_grad():
            for x, y in val:
                total += lm_loss(model, x, y, "cpu").item() * y.size
                count += y.size
        bpb = total / count / data.val_bytes_per_token / np.log(2)
        one = tinyllm.tensor(np.array([[65]], dtype=np.int64))
        times = []
        with tinyllm.no_grad():
            model(one)
            for _ in range(reps):
                t = time.perf_counter()
                model(one)
                times.append(time.perf_counter() - t)
        row = {"model": "llama", "config": label(method, kw), "method": method, **kw,
               "bytes": model_nbytes(model), "val_bits_per_byte": round(bpb, 4),
               "ms_per_token": round(1e3 * float(np.median(times)), 3),
               "quantize_s": round(t_quant, 1)}  # fmt: skip
        log(row)
        rows.append(row)
    return rows


def minilm_rows(n_sentences: int, log) -> list[dict]:
    from tinyllm.embeddings import encode_sentences
    from tinyllm.models.pretrained import load_pretrained, load_pretrained_tokenizer
    from tinyllm.nn import Linear
    from tinyllm.quant import QuantLinear, quantize_pretrained
    from tinyllm.quant.pretrained import corpus_sentences

    tok = load_pretrained_tokenizer()
    sentences = corpus_sentences("evaluation", n_sentences)
    ref = encode_sentences(load_pretrained(), tok, sentences)
    rows = []
    for method, kw in CONFIGS:
        t0 = time.perf_counter()
        if method == "float32":
            model = load_pretrained()
        else:
            model = quantize_pretrained(method=method, bits=kw.get("bits", 4),
                                        group_size=kw.get("group_size", 128))  # fmt: skip
        t_quant = time.perf_counter() - t0
        emb = encode_sentences(model, tok, sentences)
        cos = (emb.astype(np.float64) * ref).sum(axis=1)
        linear_bytes = 0
        for m in model.layers.modules():
            if isinstance(m, QuantLinear):
                linear_bytes += m.nbytes
            elif isinstance(m, Linear):
                linear_bytes += m.weight.data.nbytes + (
                    m.bias.data.nbytes if m.bias is not None else 0
                )
        row = {"model": "minilm", "config": label(method, kw), "method": method, **kw,
               "linear_bytes": int(linear_bytes), "cos_mean": round(float(cos.mean()), 5),
               "cos_min": round(float(cos.min()), 5), "quantize_s": round(t_quant, 1)}  # fmt: skip
        log(row)
        rows.append(row)
    return rows


def kernel_rows(reps: int, log) -> list[dict]:
    from tinyllm.kernels import dispatch
    from tinyllm.kernels.quant import dequant_matmul
    from tinyllm.quant import quantize_nf4, quantize_weight
    from tinyllm.quant.linear import packed_operands

    rng = np.random.default_rng(0)
    rows = []
    for N, K in ((1024, 1024), (4096, 1024)):
        W = (rng.standard_normal((N, K)) * 0.02).astype(np.float32)
        formats = {"int4 g128": quantize_weight(W, 4, "group", 128, False),
                   "int8 per-channel": quantize_weight(W, 8, "channel", None, True),
                   "nf4": quantize_nf4(W)}  # fmt: skip
        for R in (1, 256):
            x = rng.standard_normal((R, K)).astype(np.float32)
            for name, q in formats.items():
                ops = packed_operands(q)
                dequant_matmul(x, *ops)  # compile / warm up
                assert dispatch.last_tier("dequant_matmul") == "numba"
                tq, tf = [], []
                for _ in range(reps):  # alternate the two sides
                    t = time.perf_counter()
                    dequant_matmul(x, *ops)
                    tq.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    x @ W.T
                    tf.append(time.perf_counter() - t)
                row = {"model": "kernel", "shape": f"[{R}, {K}] x [{N}, {K}]^T", "format": name,
                       "packed_us": round(1e6 * float(np.median(tq)), 1),
                       "float_gemm_us": round(1e6 * float(np.median(tf)), 1),
                       "weight_bytes": int(q.nbytes), "float_bytes": int(W.nbytes)}  # fmt: skip
                row["ratio"] = round(row["packed_us"] / row["float_gemm_us"], 2)
                log(row)
                rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    llama = {r["config"]: r for r in rows if r["model"] == "llama"}
    mini = {r["config"]: r for r in rows if r["model"] == "minilm"}
    lines = ["| configuration | Llama bytes | Llama val bits/byte | Llama ms/token (1-token fwd) "
             "| MiniLM linear bytes | MiniLM cos mean | MiniLM cos worst |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for method, kw in CONFIGS:
        name = label(method, kw)
        a, b = llama.get(name, {}), mini.get(name, {})
        lines.append(
            f"| {name} | {a.get('bytes', '-'):,} | {a.get('val_bits_per_byte', '-')} | "
            f"{a.get('ms_per_token', '-')} | {b.get('linear_bytes', '-'):,} | "
            f"{b.get('cos_mean', '-')} | {b.get('cos_min', '-')} |"
            if a and b
            else f"| {name} | {a} | {b} |"
        )
    kern = [r for r in rows if r["model"] == "kernel"]
    if kern:
        lines += ["", "| x [R, K] x W^T | format | packed kernel (us) | float32 GEMM (us) | ratio "
                  "| weight bytes / float |", "|---|---|---|---|---|---|"]  # fmt: skip
        for r in kern:
            share = r["weight_bytes"] / r["float_bytes"]
            lines.append(f"| {r['shape']} | {r['format']} | {r['packed_us']} | "
                         f"{r['float_gemm_us']} | {r['ratio']} | {share:.3f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default="runs/quant_base")
    p.add_argument("--eval-batches", type=int, default=10)
    p.add_argument("--sentences", type=int, default=64)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--skip", nargs="*", default=[], choices=["llama", "minilm", "kernel"])
    p.add_argument("--out", default="experiments/results/quantization")
    args = p.parse_args(argv)
    tinyllm.runtime.tune_process()  # a program of its own, like `tinyllm train`
    rows: list[dict] = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    jsonl = out.with_suffix(".jsonl")
    jsonl.write_text("")

    def log(row):
        print(json.dumps(row), flush=True)
        with jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")

    if "kernel" not in args.skip:
        rows += kernel_rows(args.reps, log)
    if "llama" not in args.skip:
        run = Path(args.run)
        if not (run / "checkpoint.safetensors").is_file():
            print(f"no run at {run}: train one with `tinyllm train --name quant_base --steps 400`",
                  file=sys.stderr)  # fmt: skip
            return 2
        rows += llama_rows(run, args.eval_batches, args.reps, log)
    if "minilm" not in args.skip:
        rows += minilm_rows(args.sentences, log)
    table = markdown(rows)
    out.with_suffix(".md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
