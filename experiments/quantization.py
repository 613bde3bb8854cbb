"""Quantization study: methods x bits x group sizes on the trained Llama and on MiniLM.

    python experiments/quantization.py                          # runs/quant_base, everything
    python experiments/quantization.py --run runs/<name> --eval-batches 10 --sentences 64
    python experiments/quantization.py --only LKD --skip kernel  # rerun matching rows only
    python experiments/quantization.py --skip kernel llama minilm --decode --baseline-rev REV

For each configuration (float32, RTN, GPTQ, AWQ at 8/4/3 bits and per-channel / g128 / g64,
NF4 with double quantization, FP8 E4M3, LLM.int8(), SmoothQuant W8A8, ZeroQuant W4A8 with and
without LKD; GPTQ with act-order, g32, true-sequential calibration, AWQ scales, 512
calibration sentences, and a mixed 4/8-bit MiniLM):

- **Llama** (the run folder; ``runs/quant_base`` is ``tinyllm train --name quant_base --steps
  400 --warmup 40``, the default architecture trained for 400 steps): bytes of all weights
  (float embeddings and head included), validation bits/byte on the first ``--eval-batches``
  validation batches, and ms per token of a one-token forward through the module path (the
  packed kernels; median of ``--reps``);
- **MiniLM** (all-MiniLM-L6-v2): bytes of the encoder's linear layers, and the cosine of each
  sentence embedding to its float32 embedding, mean and worst over ``--sentences`` fixed
  corpus sentences (disjoint from the calibration sentences).

Calibration: 8 random training windows of the run (Llama; also LKD's training data), 128
corpus sentences (MiniLM), one pass on the float model unless "true-sequential". Then a kernel
table: ``dequant_matmul`` (Numba) vs the float32 GEMM (``x @ W.T``, OpenBLAS) for R = 1 and
R = 256 rows, alternating in one process. ``--decode``: one-token forwards of the float32 and
quantized Llama round-robin in one process (medians), with ``--baseline-rev`` the packed
layers also on the kernels of that git revision. Writes
``experiments/results/quantization.jsonl`` (rows measured now replace the same rows; each
row has a ``measured`` stamp) and ``quantization.md``.
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
    ("zeroquant", {"bits": 4, "group_size": 128, "lkd_steps": 100}),
    ("gptq", {"bits": 4, "group_size": 64, "act_order": True}),
    ("gptq", {"bits": 4, "group_size": 32, "act_order": True}),
    ("gptq", {"bits": 4, "group_size": 64, "act_order": True, "sequential": True}),
    ("gptq", {"bits": 4, "group_size": 32, "act_order": True, "sequential": True}),
    (
        "gptq",
        {"bits": 4, "group_size": 64, "act_order": True, "sequential": True, "awq_scales": True},
    ),
    ("gptq", {"bits": 4, "group_size": 32, "act_order": True, "calib_sentences": 512}),
    # MiniLM's FFN input layers and the last attention output at 8 bits, the rest at 4: the
    # layers whose restoring to float raised the cosines most (``--sensitivity``)
    (
        "gptq",
        {
            "bits": 4,
            "group_size": 32,
            "act_order": True,
            "sequential": True,
            "layer_bits": {"layers.*.intermediate": 8, "layers.5.attention.o_proj": 8},
        },
    ),
]
# options that are not quantize_model arguments: MiniLM calibration sentences (default 128)
EXPERIMENT_KEYS = ("calib_sentences",)


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
    extras = [("act_order", "act-order"), ("sequential", "true-sequential"),
              ("awq_scales", "AWQ scales")]  # fmt: skip
    tag += "".join(f", {text}" for key, text in extras if kw.get(key))
    if kw.get("lkd_steps"):
        tag += f" + LKD {kw['lkd_steps']} steps/block"
    if kw.get("calib_sentences"):
        tag += f", {kw['calib_sentences']} calib sentences"
    if kw.get("layer_bits"):
        tag += ", 8-bit: " + " ".join(sorted(kw["layer_bits"]))
    return f"{method} {tag}"


def options(kw: dict) -> dict:
    """quantize_model's options of a configuration (all but bits and group size)."""
    return {k: v for k, v in kw.items()
            if k not in ("bits", "group_size") + EXPERIMENT_KEYS}  # fmt: skip


def selected(only: list[str] | None) -> list[tuple[str, dict]]:
    """The configurations whose label contains one of ``only`` (all when None)."""
    if not only:
        return CONFIGS
    return [(m, kw) for m, kw in CONFIGS if any(o in label(m, kw) for o in only)]


def llama_rows(run: Path, eval_batches: int, reps: int, log, configs) -> list[dict]:
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
    for method, kw in configs:
        if kw.get("calib_sentences") or kw.get("layer_bits"):
            continue  # a MiniLM-only configuration (its calibration set, its layer names)
        model, *_ = load_run(run)
        t0 = time.perf_counter()
        if method != "float32":
            quantize_model(model, method, kw.get("bits", 4), kw.get("group_size", 128),
                           calibration=calib, forward=lambda m, b: m(tinyllm.tensor(b)),
                           **options(kw))  # fmt: skip
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


def minilm_rows(n_sentences: int, log, configs) -> list[dict]:
    from tinyllm.embeddings import encode_sentences
    from tinyllm.models.pretrained import load_pretrained, load_pretrained_tokenizer
    from tinyllm.nn import Linear
    from tinyllm.quant import QuantLinear, quantize_pretrained
    from tinyllm.quant.pretrained import corpus_sentences

    tok = load_pretrained_tokenizer()
    sentences = corpus_sentences("evaluation", n_sentences)
    ref = encode_sentences(load_pretrained(), tok, sentences)
    rows = []
    for method, kw in configs:
        t0 = time.perf_counter()
        if method == "float32":
            model = load_pretrained()
        else:
            n_calib = kw.get("calib_sentences")
            model = quantize_pretrained(
                method=method,
                bits=kw.get("bits", 4),
                group_size=kw.get("group_size", 128),
                calibration_sentences=corpus_sentences("calibration", n_calib) if n_calib else None,
                **options(kw),
            )
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


def minilm_sensitivity(n_sentences: int, log) -> list[dict]:
    """Per linear layer of MiniLM quantized by GPTQ w4 g64 act-order: the cosines when that one
    layer alone is restored to float32 (which layers a mixed 4/8-bit configuration keeps)."""
    from tinyllm.embeddings import encode_sentences
    from tinyllm.models.pretrained import load_pretrained, load_pretrained_tokenizer
    from tinyllm.quant import QuantLinear, quantize_pretrained
    from tinyllm.quant.model import DEFAULT_EXCLUDE, _linears
    from tinyllm.quant.pretrained import corpus_sentences

    tok = load_pretrained_tokenizer()
    sentences = corpus_sentences("evaluation", n_sentences)
    floats = load_pretrained()
    ref = encode_sentences(floats, tok, sentences)
    model = quantize_pretrained(method="gptq", bits=4, group_size=64, act_order=True)
    modules = dict(model.named_modules())

    def row(restored):
        cos = (encode_sentences(model, tok, sentences).astype(np.float64) * ref).sum(axis=1)
        out = {"model": "minilm_sensitivity", "config": "gptq w4 g64, act-order",
               "restored": restored, "cos_mean": round(float(cos.mean()), 5),
               "cos_min": round(float(cos.min()), 5)}  # fmt: skip
        log(out)
        return out

    rows = [row(None)]
    for name, _, _ in _linears(floats, DEFAULT_EXCLUDE):
        parent_name, _, attr = name.rpartition(".")
        parent = modules[parent_name]
        quantized = getattr(parent, attr)
        assert isinstance(quantized, QuantLinear)
        setattr(parent, attr, getattr(dict(floats.named_modules())[parent_name], attr))
        rows.append(row(name))
        setattr(parent, attr, quantized)
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


DECODE_CONFIGS = [
    ("rtn", {"bits": 8, "group_size": None}),
    ("rtn", {"bits": 4, "group_size": 128}),
    ("rtn", {"bits": 3, "group_size": 64}),
    ("nf4", {}),
    ("zeroquant", {"bits": 4, "group_size": 128}),
]


def baseline_bodies(rev: str):
    """(numba body, kernel bits) of ``kernels/quant*.py`` at git revision ``rev``, for a
    before/after comparison in one process (read with ``git show``; the tree is untouched)."""
    import importlib
    import re
    import subprocess
    import tempfile

    from tinyllm.kernels import dispatch

    def show(path):
        return subprocess.run(["git", "show", f"{rev}:{path}"], check=True, capture_output=True,
                              text=True).stdout  # fmt: skip

    folder = Path(tempfile.mkdtemp(prefix="quant_baseline_"))
    name = "quant_numba_" + re.sub(r"\W", "_", rev)
    (folder / f"{name}.py").write_text(show("kernels/quant_numba.py"))
    sys.path.insert(0, str(folder))
    old = importlib.import_module(name)
    declared = re.search(r"KERNEL_BITS = \(([^)]*)\)", show("kernels/quant.py")).group(1)
    bits = tuple(int(b) for b in declared.split(","))

    def body(x, packed, scales, zeros, table, bits, group_size):  # the old R < 16 path
        R, K = x.shape
        y = np.empty((R, packed.shape[0]), dtype=x.dtype)
        kernel = dispatch.numba_for_work(old.dequant_matmul_rows, packed.shape[0] * K)
        kernel(x, packed, scales, zeros, table, bits, group_size, y)
        return y

    return body, bits


def decode_rows(run: Path, reps: int, baseline: str | None, log) -> list[dict]:
    """ms of a one-token forward (module path) of the float32 Llama and of its quantized
    versions, all timed round-robin in one process (medians); with ``baseline``, the packed
    layers also run on the kernels of that git revision, in the same rotation."""
    from tinyllm.cli.sample_cmd import load_run
    from tinyllm.kernels import quant as KQ
    from tinyllm.quant import quantize_model

    models = {"float32": load_run(run)[0].eval()}
    for method, kw in DECODE_CONFIGS:
        model = load_run(run)[0]
        quantize_model(model, method, kw.get("bits", 4), kw.get("group_size", 128))
        models[label(method, kw)] = model.eval()
    current = (KQ._BODIES["numba"], KQ.KERNEL_BITS)
    variants = {"this tree": current}
    if baseline:
        variants[baseline] = baseline_bodies(baseline)
    one = tinyllm.tensor(np.array([[65]], dtype=np.int64))
    cases = [(name, v) for name in models for v in (["this tree"] if name == "float32"
                                                     else variants)]  # fmt: skip
    times: dict = {c: [] for c in cases}
    try:
        with tinyllm.no_grad():
            for rep in range(reps + 2):  # 2 warm-up rounds (compilation) not counted
                for name, v in cases:
                    KQ._BODIES["numba"], KQ.KERNEL_BITS = variants[v]
                    t = time.perf_counter()
                    models[name](one)
                    if rep >= 2:
                        times[(name, v)].append(time.perf_counter() - t)
    finally:
        KQ._BODIES["numba"], KQ.KERNEL_BITS = current
    fl = float(np.median(times[("float32", "this tree")])) * 1e3
    rows = []
    for name, v in cases:
        ms = float(np.median(times[(name, v)])) * 1e3
        row = {"model": "decode", "config": name, "kernels": v, "ms_median": round(ms, 3),
               "x_float32": round(ms / fl, 2), "reps": reps}  # fmt: skip
        log(row)
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    llama = {r["config"]: r for r in rows if r["model"] == "llama"}
    mini = {r["config"]: r for r in rows if r["model"] == "minilm"}
    # each row's ms/token (in the jsonl) is timed alone, at whatever load the machine had then:
    # the table leaves it out; the --decode table times the formats round-robin instead
    lines = ["| configuration | Llama bytes | Llama val bits/byte "
             "| MiniLM linear bytes | MiniLM cos mean | MiniLM cos worst |",
             "|---|---|---|---|---|---|"]  # fmt: skip

    def cell(row, key):
        value = row.get(key, "-")
        return f"{value:,}" if isinstance(value, int) else str(value)

    for method, kw in CONFIGS:
        name = label(method, kw)
        a, b = llama.get(name, {}), mini.get(name, {})
        if not (a or b):
            continue
        cells = [cell(a, "bytes"), cell(a, "val_bits_per_byte"), cell(b, "linear_bytes"),
                 cell(b, "cos_mean"), cell(b, "cos_min")]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    sens = [r for r in rows if r["model"] == "minilm_sensitivity"]
    if sens:
        lines += ["", f"| MiniLM, {sens[0]['config']}: layer restored to float32 | cos mean "
                  "| cos worst |", "|---|---|---|"]  # fmt: skip
        for r in sens:
            lines.append(f"| {r['restored'] or '(none)'} | {r['cos_mean']} | {r['cos_min']} |")
    dec = [r for r in rows if r["model"] == "decode"]
    if dec:
        lines += ["", "| one-token forward (Llama) | kernels | ms (median) | x float32 |",
                  "|---|---|---|---|"]  # fmt: skip
        for r in dec:
            lines.append(f"| {r['config']} | {r['kernels']} | {r['ms_median']} | "
                         f"{r['x_float32']} |")  # fmt: skip
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
    p.add_argument("--only", nargs="*", default=None, metavar="TEXT",
                   help="rerun only the configurations whose label contains one of TEXT; "
                   "rows measured here replace the same rows of the results files, the others "
                   "are kept as they were measured (each row has a 'measured' stamp)")  # fmt: skip
    p.add_argument("--decode", action="store_true",
                   help="also time one-token forwards of the float32 and quantized Llama, "
                   "round-robin in one process")  # fmt: skip
    p.add_argument("--baseline-rev", default=None, metavar="REV",
                   help="with --decode: also run the packed layers on kernels/quant_numba.py "
                   "at git revision REV (before/after in the same rotation)")  # fmt: skip
    p.add_argument("--sensitivity", action="store_true",
                   help="also: MiniLM's cosines, each layer alone restored to float32")  # fmt: skip
    p.add_argument("--out", default="experiments/results/quantization")
    args = p.parse_args(argv)
    tinyllm.runtime.tune_process()  # a program of its own, like `tinyllm train`
    configs = selected(args.only)
    if args.only is not None and not configs:
        print(f"no configuration matches {args.only}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    jsonl = out.with_suffix(".jsonl")
    kept: list[dict] = []
    rows: list[dict] = []
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())

    def log(row):
        row["measured"] = stamp
        print(json.dumps(row), flush=True)
        rows.append(row)

    if "kernel" not in args.skip:
        kernel_rows(args.reps, log)
    if "llama" not in args.skip:
        run = Path(args.run)
        if not (run / "checkpoint.safetensors").is_file():
            print(f"no run at {run}: train one with `tinyllm train --name quant_base --steps 400`",
                  file=sys.stderr)  # fmt: skip
            return 2
        llama_rows(run, args.eval_batches, args.reps, log, configs)
    if "minilm" not in args.skip:
        minilm_rows(args.sentences, log, configs)
    if args.sensitivity:
        minilm_sensitivity(args.sentences, log)
    if args.decode:
        decode_rows(Path(args.run), args.reps, args.baseline_rev, log)

    def key(r):
        fields = ("model", "config", "shape", "format", "kernels", "restored")
        return tuple(r.get(k) for k in fields)

    if jsonl.is_file():  # merged, and read now: another run may have written meanwhile
        kept = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    new = {key(r) for r in rows}
    rows = [r for r in kept if key(r) not in new] + rows
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = markdown(rows)
    out.with_suffix(".md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
