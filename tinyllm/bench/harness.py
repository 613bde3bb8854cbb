"""The benchmark harness: tinyllm and PyTorch, each in child processes of their own.

Why child processes: a framework timed in a process that another framework shares is
timed with the other's thread pools, allocator and environment. The old in-process
comparison imported tinyllm first, which then set ``OMP_WAIT_POLICY=PASSIVE`` for the whole
process: PyTorch's OpenMP pool slept between parallel regions (162 against 110 ms per step).

Here the PyTorch side runs ``torch_reference.py`` as a script, which never imports tinyllm,
with the environment as it was before tinyllm was imported, minus ``TINYLLM_*``
(``runtime.child_env``). The tinyllm side runs ``python -m tinyllm.bench.worker``. The two
alternate, round after round (tinyllm, torch, tinyllm, torch, ...), so that the machine's
drifting load hits both; each round's ratio is tinyllm's median step over PyTorch's, and the
result is the median over rounds, printed with every round's numbers.

The first-step agreement check runs once, before the timing, in processes of its own: the
tinyllm worker writes its initial weights, the batch, its loss and gradients to ``.npz``
files in a temporary folder; the PyTorch worker loads the weights and writes its own.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from tinyllm import runtime

TORCH_SCRIPT = Path(__file__).with_name("torch_reference.py")
CHILD_TIMEOUT_S = 1800


class ChildError(RuntimeError):
    """A benchmark child process failed; the message holds its last stderr line."""


def run_child(framework: str, spec: dict, extra_env: dict | None = None,
              timeout: float = CHILD_TIMEOUT_S) -> dict:  # fmt: skip
    """Run one worker spec in a fresh process of ``framework`` ("tinyllm" or "torch")."""
    env = runtime.child_env(framework)
    env.update(extra_env or {})
    if framework == "torch":
        cmd = [sys.executable, str(TORCH_SCRIPT), json.dumps(spec)]
    else:
        cmd = [sys.executable, "-m", "tinyllm.bench.worker", json.dumps(spec)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        last = err[-1] if err else f"exit status {proc.returncode}"
        raise ChildError(f"{framework} worker ({spec.get('mode')}) failed: {last}")
    return json.loads(lines[-1])


def config_dict(args) -> dict:
    """tinyllm ModelConfig fields (after defaults are filled in) for the model options."""
    from tinyllm.bench.model_bench import model_config

    return dataclasses.asdict(model_config(args))


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def compare_grads(ours_path: str, theirs_path: str) -> dict:
    """Worst relative L2 difference over every parameter gradient (a gradient that is 0 in
    exact arithmetic, such as a key bias's, is compared against 1e-3 of the median norm)."""
    ours, theirs = np.load(ours_path), np.load(theirs_path)
    names = sorted(set(ours.files) & set(theirs.files))
    missing = sorted(set(ours.files) ^ set(theirs.files))
    floor = 1e-3 * float(np.median([np.linalg.norm(theirs[n]) for n in names]))
    worst, worst_name = 0.0, ""
    for n in names:
        rel = float(np.linalg.norm(ours[n] - theirs[n]) / max(np.linalg.norm(theirs[n]), floor))
        if rel > worst:
            worst, worst_name = rel, n
    return {"worst_grad_rel_l2": worst, "worst_grad_param": worst_name,
            "params_compared": len(names), "params_missing": missing}  # fmt: skip


def prepare(args, folder: str, check: bool, device: str) -> dict:
    """Write weights and batch (tinyllm worker); with ``check``, compare the first step."""
    config = config_dict(args)
    from tinyllm.bench.worker import make_batch

    batch_path = os.path.join(folder, "batch.npz")
    np.savez(batch_path, **make_batch(config, getattr(args, "batch", 1), args.seq_len))
    spec = {"config": config, "weights": os.path.join(folder, "weights.npz"),
            "batch": batch_path, "device": device}  # fmt: skip
    ours = run_child("tinyllm", {**spec, "mode": "init", "grads": check,
                                 "out": os.path.join(folder, "grads_tinyllm.npz")})  # fmt: skip
    out = {"spec": spec, "params": ours["params"]}
    if check:
        theirs = run_child("torch", {**spec, "mode": "check",
                                     "out": os.path.join(folder, "grads_torch.npz")})  # fmt: skip
        loss_rel = abs(ours["loss"] - theirs["loss"]) / abs(theirs["loss"])
        grads = compare_grads(os.path.join(folder, "grads_tinyllm.npz"),
                              os.path.join(folder, "grads_torch.npz"))  # fmt: skip
        out["first_step_check"] = {
            "loss_tinyllm": ours["loss"], "loss_torch": theirs["loss"], "loss_rel_diff": loss_rel,
            **grads, "agree_1e-4": loss_rel < 1e-4 and grads["worst_grad_rel_l2"] < 1e-4,
            "torch_imported_tinyllm": bool(theirs["tinyllm_modules"]),
        }  # fmt: skip
    return out


def compare(args, kind: str, emit) -> dict:
    """``tinyllm bench train-step|generate --compare torch``: the result record (see module)."""
    device = args.device
    with tempfile.TemporaryDirectory(prefix="tinyllm-bench-") as folder:
        prep = prepare(args, folder, check=not args.no_check, device=device)
        spec = dict(prep["spec"], warmup=args.warmup)
        gemm_spec = None
        if kind == "train-step":
            spec.update(mode="train", steps=args.steps)
            if device == "cpu":
                gemm_spec = _gemm_spec(prep["spec"]["config"], args)
        else:
            spec.update(mode="generate", new_tokens=args.new_tokens, runs=args.runs)
        rounds = []
        for r in range(args.rounds):
            ours = run_child("tinyllm", spec)
            theirs = run_child("torch", spec)
            row = {"round": r, "tinyllm_ms": ours["ms"], "torch_ms": theirs["ms"],
                   "ratio": round(ours["ms"] / theirs["ms"], 4),
                   "tinyllm_times_ms": ours["times_ms"], "torch_times_ms": theirs["times_ms"],
                   "tinyllm_peak_rss_mb": ours["peak_rss_mb"],
                   "torch_peak_rss_mb": theirs["peak_rss_mb"]}  # fmt: skip
            if gemm_spec is not None:
                numpy_gemms = run_child("tinyllm", gemm_spec)["ms"]
                torch_gemms = run_child("torch", gemm_spec)["ms"]
                row.update(numpy_gemm_ms=numpy_gemms, torch_gemm_ms=torch_gemms,
                           gemm_ratio=round(numpy_gemms / torch_gemms, 4))  # fmt: skip
            if kind == "generate":
                same = sum(a == b for a, b in zip(ours["tokens"], theirs["tokens"]))
                row["same_tokens"] = f"{same}/{len(theirs['tokens'])}"
            rounds.append(row)
            if getattr(args, "verbose", False):
                emit({"bench": kind, "event": "round", **row})
    unit = "ms_per_step" if kind == "train-step" else "ms_per_token"
    ratios = [r["ratio"] for r in rounds]
    result = {
        "bench": kind, "compare": "torch", "arch": args.arch, "device": device,
        "config": {k: v for k, v in prep["spec"]["config"].items()},
        "batch": getattr(args, "batch", 1), "seq_len": args.seq_len, "params": prep["params"],
        "rounds": len(rounds), "warmup": args.warmup,
        "method": "child processes alternating tinyllm, torch per round; ratio = median over "
                  "rounds of (tinyllm round median / torch round median)",
        "ratio_median": round(_median(ratios), 4),
        "ratio_min": round(min(ratios), 4), "ratio_max": round(max(ratios), 4),
        f"tinyllm_{unit}": round(_median([r["tinyllm_ms"] for r in rounds]), 3),
        f"torch_{unit}": round(_median([r["torch_ms"] for r in rounds]), 3),
        "torch_threads": theirs.get("torch_threads"), "torch_version": theirs.get("torch"),
        "torch_imported_tinyllm": bool(theirs["tinyllm_modules"]),
        "tinyllm_threads": ours.get("threads"),
        "per_round": rounds,
    }  # fmt: skip
    if gemm_spec is not None:
        result["gemm_only"] = {
            "what": "the step's matrix products (tinyllm.bench.worker.step_gemms) timed back "
                    "to back, NumPy's BLAS against torch.matmul, in child processes after each "
                    "round's steps; ratio = NumPy / PyTorch",
            "ratio_median": round(_median([r["gemm_ratio"] for r in rounds]), 4),
            "numpy_ms": round(_median([r["numpy_gemm_ms"] for r in rounds]), 3),
            "torch_ms": round(_median([r["torch_gemm_ms"] for r in rounds]), 3),
        }  # fmt: skip
    if "first_step_check" in prep:
        result["first_step_check"] = prep["first_step_check"]
    return result


def _gemm_spec(config: dict, args) -> dict:
    """The worker spec of the GEMM-only comparison: every product of one training step."""
    from tinyllm.bench.worker import step_gemms

    gemms = step_gemms(config, args.batch, args.seq_len)
    return {"mode": "gemm", "config": config, "batch_size": args.batch, "seq_len": args.seq_len,
            "warmup": 2, "steps": 5, "gemms": [[a, b] for _, a, b in gemms]}  # fmt: skip


def single(args, framework: str) -> dict:
    """``--framework torch|tinyllm`` with no comparison: one child process, peak RSS too."""
    with tempfile.TemporaryDirectory(prefix="tinyllm-bench-") as folder:
        prep = prepare(args, folder, check=False, device=args.device)
        spec = dict(prep["spec"], mode="train", warmup=args.warmup, steps=args.steps)
        res = run_child(framework, spec)
    ms = res["times_ms"]
    return {"bench": "train-step", "framework": framework, "arch": args.arch,
            "device": args.device, "batch": args.batch, "seq_len": args.seq_len,
            "ms_per_step": res["ms"], "min": min(ms), "max": max(ms),
            "peak_rss_mb": res["peak_rss_mb"], "child_process": True}  # fmt: skip


# ---------------------------------------------------------------- tinyllm bench citizen

GEMM_LOOP = """
import json, os, statistics, sys, time
spec = json.loads(sys.argv[1])
exec(compile(spec.get("prelude", ""), "<prelude>", "exec"), {})
import numpy as np
rng = np.random.default_rng(0)
n = spec["n"]
a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
c = np.empty((n, n), np.float32)
between = None
if spec.get("between"):
    ns = {}
    exec(compile(spec["between"], "<between>", "exec"), ns)
    between = ns["between"]
times = []
for i in range(spec["warmup"] + spec["iters"]):
    if between is not None:
        between()
    t0 = time.perf_counter()
    for _ in range(spec["inner"]):
        np.matmul(a, b, out=c)
    if i >= spec["warmup"]:
        times.append((time.perf_counter() - t0) * 1000 / spec["inner"])
mods = sorted(m for m in sys.modules if m == "tinyllm" or m.startswith("tinyllm."))
print(json.dumps({"ms": statistics.median(times), "tinyllm_imported": bool(mods)}))
"""

# a tinyllm kernel (parallel: 4096 x 1024 rows, at dispatch.SERIAL_BELOW) run between GEMM
# loops: a pool left spinning by the kernel would slow the next GEMMs down (the old OMP
# spin-wait starvation)
KERNEL_BETWEEN = """
import numpy as np
import tinyllm.kernels as K
_x = np.random.default_rng(0).standard_normal((4096, 1024), dtype=np.float32)
def between():
    K.softmax_forward(_x)
"""

TINYLLM_STEP_PRELUDE = """
import numpy as np, tinyllm, tinyllm.functional as F
from tinyllm.models import ModelConfig, build_model
tinyllm.manual_seed(0)
_m = build_model(ModelConfig(arch="llama", d_model=128, n_layer=2, n_head=4, block_size=64))
_opt = tinyllm.optim.AdamW(_m.parameters(), lr=1e-3)
_x = np.random.default_rng(0).integers(0, 256, (8, 64))
for _ in range(3):
    _loss = F.cross_entropy(_m(tinyllm.tensor(_x)).reshape(-1, 256), tinyllm.tensor(_x.reshape(-1)))
    _opt.zero_grad(); _loss.backward(); _opt.step()
"""


def _gemm_child(spec: dict, timeout: float = 600) -> dict:
    env = runtime.child_env("torch")  # the user's program: no TINYLLM_* settings
    proc = subprocess.run([sys.executable, "-c", GEMM_LOOP, json.dumps(spec)], env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip
    if proc.returncode != 0:
        err = proc.stderr.strip().splitlines()
        raise ChildError(f"GEMM loop failed: {err[-1] if err else proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def citizen(args, emit) -> list[dict]:
    """Another program's speed with and without tinyllm in its process (see bench_cmd)."""
    import importlib.util

    records = []
    variants = {"alone": "", "import tinyllm": "import tinyllm",
                "import tinyllm + kernels": None}  # fmt: skip
    # NumPy: a BLAS GEMM loop
    base = {"n": args.gemm_n, "warmup": 2, "iters": args.iters, "inner": args.inner}
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for name, prelude in variants.items():
            spec = dict(base, prelude=prelude or "")
            if prelude is None:
                spec.update(prelude="import tinyllm", between=KERNEL_BETWEEN)
            times[name].append(_gemm_child(spec)["ms"])
    alone = _median(times["alone"])
    rec = {"bench": "citizen", "program": f"numpy GEMM {args.gemm_n}^3 float32 loop",
           "rounds": args.rounds, "alone_ms": round(alone, 4)}  # fmt: skip
    for name in list(variants)[1:]:
        rec[f"{name}_ms"] = round(_median(times[name]), 4)
        rec[f"{name}_ratio"] = round(_median(times[name]) / alone, 4)
    rec["per_round_ms"] = times
    emit(rec)
    records.append(rec)
    # PyTorch: the default train step, in a child per variant
    if importlib.util.find_spec("torch") is None:
        rec = {
            "bench": "citizen",
            "program": "torch train step",
            "skipped": "PyTorch not installed",
        }
        emit(rec)
        return records + [rec]
    tvariants = {"alone": "", "import tinyllm": "import tinyllm",
                 "import tinyllm + tinyllm steps": TINYLLM_STEP_PRELUDE}  # fmt: skip
    ttimes: dict[str, list[float]] = {v: [] for v in tvariants}
    imported: dict[str, bool] = {}
    with tempfile.TemporaryDirectory(prefix="tinyllm-bench-") as folder:
        prep = prepare(args, folder, check=False, device="cpu")
        spec = dict(prep["spec"], mode="train", warmup=args.warmup, steps=args.steps)
        for _ in range(args.rounds):
            for name, prelude in tvariants.items():
                res = run_child("torch", dict(spec, prelude=prelude))
                ttimes[name].append(res["ms"])
                imported[name] = bool(res["tinyllm_modules"])
    alone = _median(ttimes["alone"])
    rec = {"bench": "citizen", "program": f"torch train step ({args.arch}, default model)",
           "rounds": args.rounds, "alone_ms": round(alone, 3),
           "tinyllm_imported": imported}  # fmt: skip
    for name in list(tvariants)[1:]:
        rec[f"{name}_ms"] = round(_median(ttimes[name]), 3)
        rec[f"{name}_ratio"] = round(_median(ttimes[name]) / alone, 4)
    rec["per_round_ms"] = ttimes
    emit(rec)
    records.append(rec)
    return records


# ---------------------------------------------------------------- tinyllm bench threads

THREAD_VARIANTS: dict[str, dict[str, str]] = {
    "tinyllm default (numba workqueue)": {},
    "numba omp, libgomp default spin": {"NUMBA_THREADING_LAYER": "omp", "GOMP_SPINCOUNT": "300000"},
    "numba omp + OMP_WAIT_POLICY=PASSIVE": {"NUMBA_THREADING_LAYER": "omp",
                                            "OMP_WAIT_POLICY": "PASSIVE"},
}  # fmt: skip


def threads(args, emit) -> dict:
    """The default step under each Numba threading choice, alternating child processes."""
    variants = THREAD_VARIANTS
    times: dict[str, list[float]] = {v: [] for v in variants}
    launches: dict[str, list[float]] = {v: [] for v in variants}
    layers: dict[str, Any] = {}  # the layer the steps ran on (None: no parallel kernel ran)
    launch_layers: dict[str, Any] = {}  # the layer the launch measurement used
    with tempfile.TemporaryDirectory(prefix="tinyllm-bench-") as folder:
        prep = prepare(args, folder, check=False, device="cpu")
        spec = dict(prep["spec"], mode="train", warmup=args.warmup, steps=args.steps, launch=True)
        for _ in range(args.rounds):
            for name, env in variants.items():
                res = run_child("tinyllm", spec, extra_env=env)
                times[name].append(res["ms"])
                launches[name].append(res["launch_us"])
                layers[name] = res["steps_layer"]
                launch_layers[name] = res["threads"]["numba_threading_layer"]
    default = _median(times[next(iter(variants))])
    rec = {"bench": "threads", "arch": args.arch, "rounds": args.rounds, "steps": args.steps,
           "variants": {name: {"env": variants[name], "layer": layers[name],
                               "ms_per_step": round(_median(t), 2),
                               "ratio_to_default": round(_median(t) / default, 3),
                               "per_round_ms": t,
                               "launch_layer": launch_layers[name],
                               "launch_us": round(_median(launches[name]), 2)}
                        for name, t in times.items()}}  # fmt: skip
    emit(rec)
    return rec


# ---------------------------------------------------------------- tinyllm bench load

BUSY_LOOP = "import time\nt = time.time()\nwhile True:\n    t += 1.0\n"


def load(args, emit) -> dict:
    """Slowdown of the default step (tinyllm and PyTorch) with N busy processes running."""
    import importlib.util

    frameworks = ["tinyllm"] + (["torch"] if importlib.util.find_spec("torch") else [])
    quiet: dict[str, list[float]] = {f: [] for f in frameworks}
    loaded: dict[str, list[float]] = {f: [] for f in frameworks}
    with tempfile.TemporaryDirectory(prefix="tinyllm-bench-") as folder:
        prep = prepare(args, folder, check=False, device="cpu")
        spec = dict(prep["spec"], mode="train", warmup=args.warmup, steps=args.steps)
        for _ in range(args.rounds):
            for fw in frameworks:
                quiet[fw].append(run_child(fw, spec)["ms"])
            busy = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(args.busy)]
            try:
                time.sleep(0.2)
                for fw in frameworks:
                    loaded[fw].append(run_child(fw, spec)["ms"])
            finally:
                for p in busy:
                    p.terminate()
                for p in busy:
                    p.wait()
    rec = {"bench": "load", "arch": args.arch, "busy_processes": args.busy,
           "cpus": len(os.sched_getaffinity(0)), "rounds": args.rounds,
           "steps": args.steps}  # fmt: skip
    for fw in frameworks:
        q, ld = _median(quiet[fw]), _median(loaded[fw])
        rec[f"{fw}_quiet_ms"] = round(q, 2)
        rec[f"{fw}_loaded_ms"] = round(ld, 2)
        rec[f"{fw}_slowdown"] = round(ld / q, 3)
        rec[f"{fw}_per_round_ms"] = {"quiet": quiet[fw], "loaded": loaded[fw]}
    if "torch" not in frameworks:
        rec["torch"] = "not installed"
    emit(rec)
    return rec


# ---------------------------------------------------------------- tinyllm bench encode

ENCODE_MAX_LENGTH = 256  # all-MiniLM-L6-v2's max_seq_length (sentence_bert_config.json)
ENCODE_SETS = {"short": 512, "long": 128}  # default texts per set


def encode_texts(which: str, n: int | None = None) -> list[str]:
    """The benchmark's texts: "short" = fixed corpus sentences (``corpus_sentences``), "long" =
    the RAG passages of the corpus (100-200 words, ~200 tokens; ``corpus_passages``)."""
    n = ENCODE_SETS[which] if n is None else n
    if which == "short":
        from tinyllm.quant.pretrained import corpus_sentences

        return corpus_sentences("evaluation", n=n)
    if which == "long":
        from tinyllm.rag.passages import corpus_passages

        return [p.text for p in corpus_passages(100, 200)][:n]
    raise ValueError(f"encode_texts: set must be short or long, got {which!r}")


def encode_batches(tokenizer, texts: list[str], batch_size: int,
                   max_length: int = ENCODE_MAX_LENGTH) -> dict:  # fmt: skip
    """Padded int64 batches ids_i, mask_i, types_i [B, T_i] of ``texts``, longest first (as
    ``encode_sentences`` and sentence-transformers batch them), and ``n_batches``."""
    enc = [tokenizer.encode_with_types(t, max_length=max_length, truncation=True) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: -len(enc[i][0]))
    out: dict = {}
    for b, start in enumerate(range(0, len(order), batch_size)):
        rows = order[start : start + batch_size]
        T = max(len(enc[i][0]) for i in rows)
        ids, types, mask = (np.zeros((len(rows), T), np.int64) for _ in range(3))
        for r, i in enumerate(rows):
            n = len(enc[i][0])
            ids[r, :n], types[r, :n], mask[r, :n] = enc[i][0], enc[i][1], 1
        out[f"ids_{b}"], out[f"mask_{b}"], out[f"types_{b}"] = ids, mask, types
    out["n_batches"] = np.array(len(out) // 3)
    out["lengths"] = np.array([len(e[0]) for e in enc])
    return out


def encode(args, emit) -> dict:
    """``tinyllm bench encode --compare torch``: sentence embedding throughput of
    all-MiniLM-L6-v2 in tinyllm and in an idiomatic PyTorch BERT, child processes
    alternating per round; ratio = tinyllm sentences/s over torch's (above 1: tinyllm faster).

    The parent tokenizes once with tinyllm's WordPiece tokenizer (tokenizer.json) and writes
    the padded batches to an ``.npz`` both workers read: tokenization is outside the timed
    region and identical on both sides. Timed per repeat: every batch's forward + mean
    pooling + L2 normalize. Before the timing, each side writes its embeddings once and the
    largest absolute difference is reported (``agreement``).
    """
    from tinyllm.models.pretrained import load_pretrained_tokenizer
    from tinyllm.tokenizers.pretrained import require_minilm_files

    files = require_minilm_files()
    tokenizer = load_pretrained_tokenizer(str(files.directory))
    texts = encode_texts(args.set, args.sentences)
    with tempfile.TemporaryDirectory(prefix="tinyllm-bench-") as folder:
        batches = encode_batches(tokenizer, texts, args.batch_size)
        lengths = batches.pop("lengths")
        path = os.path.join(folder, "batches.npz")
        np.savez(path, **batches)
        spec = {"mode": "encode", "batches": path, "model_dir": str(files.directory),
                "model_config": str(files.config), "model_weights": str(files.weights),
                "warmup": args.warmup, "reps": args.reps}  # fmt: skip
        agreement = None
        if not args.no_check:
            outs = {fw: os.path.join(folder, f"emb_{fw}.npz") for fw in ("tinyllm", "torch")}
            for fw, out in outs.items():
                run_child(fw, dict(spec, reps=0, warmup=0, out=out))
            ours, theirs = np.load(outs["tinyllm"]), np.load(outs["torch"])
            diff = max(float(np.abs(ours[k] - theirs[k]).max()) for k in theirs.files)
            agreement = {"max_abs_diff": diff, "agree_1e-5": diff < 1e-5}
        rounds = []
        for r in range(args.rounds):
            ours = run_child("tinyllm", spec)
            theirs = run_child("torch", spec)
            row = {"round": r, "tinyllm_sentences_per_s": ours["sentences_per_s"],
                   "torch_sentences_per_s": theirs["sentences_per_s"],
                   "ratio": round(ours["sentences_per_s"] / theirs["sentences_per_s"], 4),
                   "tinyllm_times_ms": ours["times_ms"], "torch_times_ms": theirs["times_ms"],
                   "tinyllm_peak_rss_mb": ours["peak_rss_mb"],
                   "torch_peak_rss_mb": theirs["peak_rss_mb"]}  # fmt: skip
            rounds.append(row)
            if getattr(args, "verbose", False):
                emit({"bench": "encode", "event": "round", **row})
    ratios = [r["ratio"] for r in rounds]
    ours_rate = _median([r["tinyllm_sentences_per_s"] for r in rounds])
    theirs_rate = _median([r["torch_sentences_per_s"] for r in rounds])
    result = {
        "bench": "encode", "compare": "torch", "model": "all-MiniLM-L6-v2", "set": args.set,
        "sentences": len(texts), "mean_tokens": round(float(np.mean(lengths)), 1),
        "max_tokens": int(np.max(lengths)), "batch_size": args.batch_size,
        "batches": int(batches["n_batches"]), "rounds": len(rounds), "reps": args.reps,
        "method": "child processes alternating tinyllm, torch per round; each round's number "
                  "is the median over reps of sentences/s (every batch: forward + mean pool + "
                  "L2 normalize); ratio = median over rounds of tinyllm / torch",
        "ratio_median": round(_median(ratios), 4),
        "ratio_min": round(min(ratios), 4), "ratio_max": round(max(ratios), 4),
        "tinyllm_sentences_per_s": round(ours_rate, 2),
        "torch_sentences_per_s": round(theirs_rate, 2),
        "torch_threads": theirs.get("torch_threads"), "torch_version": theirs.get("torch"),
        "torch_imported_tinyllm": bool(theirs["tinyllm_modules"]),
        "tinyllm_threads": ours.get("threads"), "load_average": list(os.getloadavg()),
        "agreement": agreement, "per_round": rounds,
    }  # fmt: skip
    return result
