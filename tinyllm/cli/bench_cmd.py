"""``tinyllm bench``: benchmarks that print one JSON line per measurement.

Each benchmark is a sub-subcommand: an entry of ``BENCHMARKS``, name -> (help,
add_arguments, run), where ``add_arguments(parser)`` adds its options and ``run(args)``
returns the exit status. To add one (train-step, generate, overhead, ...), write the two
functions and add a line to ``BENCHMARKS``; heavy imports belong inside ``run``.

``tinyllm bench kernels [--quick]`` times every hot kernel's reference tier (NumPy)
against its Numba tier, forward + backward, at LLM-typical float32 shapes (4096 rows of
1024), and naive attention (S and P materialized) against FlashAttention (B=4, H=8,
T=512 and 2048, D=64, causal): median wall-clock times of interleaved repeats, the
ratio, and the peak extra memory of each attention path (``tracemalloc``, which sees
every NumPy allocation). Targets: each Numba kernel >= 2x faster than the reference;
flash attention's peak extra memory at T=2048 < 10% of naive, its time <= 1.5x naive.

``tinyllm bench train-step|generate --compare torch`` times PyTorch eager in child processes
that never import tinyllm and inherit none of its settings, alternating with tinyllm's own
child processes for ``--rounds`` rounds; it prints every round and the median ratio, after a
first-step loss/gradient agreement check run in processes of its own
(``tinyllm.bench.harness``). ``--device cuda`` does the same against PyTorch CUDA where a GPU
exists. ``tinyllm bench citizen`` shows that importing and running tinyllm next to another
program (a NumPy GEMM loop, a PyTorch step) does not slow it down; ``tinyllm bench threads``
times the step under each Numba threading choice; ``tinyllm bench load`` gives tinyllm's and
PyTorch's slowdown with N busy processes on the machine.

``tinyllm bench encode --compare torch [--set short|long] [--batch-size 128] [--rounds 5]``
times all-MiniLM-L6-v2 sentence embeddings (forward + mean pooling + L2 normalize) in tinyllm
against an idiomatic PyTorch BERT with the same safetensors weights, in alternating child
processes; the parent tokenizes once, outside the timed region (``harness.encode``).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable


# ---------------------------------------------------------------- the `bench` command
def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="benchmarks (one JSON line per measurement)",
        description="Run a benchmark; each prints one JSON line per measurement.",
    )
    sub = p.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    for name, (help_text, add_arguments, run) in BENCHMARKS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(sp)
        sp.set_defaults(func=run)

    def no_benchmark(args) -> int:
        p.print_help()
        return 0

    p.set_defaults(func=no_benchmark)


def emit(record: dict) -> None:
    """Print one JSON line and flush (benchmarks stream their results)."""
    print(json.dumps(record), flush=True)


def median_ms(samples: list[float]) -> float:
    s = sorted(samples)
    n = len(s)
    mid = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    return round(1000 * mid, 3)


# ---------------------------------------------------------------- bench kernels
KERNEL_OPS = (
    "softmax",
    "log_softmax",
    "cross_entropy",
    "layer_norm",
    "layer_norm_residual",
    "rms_norm",
    "rope",
    "swiglu",
    "geglu",
    "adamw",
)
SPEEDUP_TARGET = 2.0
FLASH_MEMORY_TARGET = 0.10  # flash peak extra / naive peak extra, at the longest T
FLASH_TIME_TARGET = 1.5  # flash time / naive time


def _add_kernel_arguments(p) -> None:
    p.add_argument("--quick", action="store_true", help="3 repeats (attention at T=2048: 1)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per tier (default 7)")
    p.add_argument("--ops", default=",".join(KERNEL_OPS + ("attention",)),
                   help="comma-separated ops (default: all, attention last)")  # fmt: skip
    p.add_argument("--rows", type=int, default=4096, help="rows R of the [R, C] ops")
    p.add_argument("--cols", type=int, default=1024, help="columns C (classes, features)")
    p.add_argument("--seq", default="512,2048", help="attention sequence lengths T")
    p.add_argument("--batch", type=int, default=4, help="attention batch B")
    p.add_argument("--heads", type=int, default=8, help="attention heads H")
    p.add_argument("--head-dim", type=int, default=64, help="attention head size D")
    p.add_argument("--no-causal", action="store_true", help="full (non-causal) attention")


def _kernel_cases(rng, R: int, C: int, dtype):
    """name -> (shape label, fn(tier) running forward + backward once)."""
    import numpy as np

    import tinyllm.kernels as K

    def arr(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(dtype)

    x, dy = arr(R, C, scale=3.0), arr(R, C)
    w, b = arr(C), arr(C)
    target = rng.integers(0, C, R)
    dloss = np.full(R, 1.0 / R, dtype)
    D = 64  # RoPE head size: [R*C/(H*T*D)] sequences of H heads, T positions
    H, T = 16, max(1, R * C // (16 * 64 * 4))
    Bs = max(1, R * C // (H * T * D))
    xr, dyr = arr(Bs, H, T, D), arr(Bs, H, T, D)
    angles = rng.random((T, D // 2))
    cos, sin = np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)
    g2, dg = arr(R, 2 * C), arr(R, C)
    p0, grad = arr(R, C), arr(R, C)
    state = {"p": p0.copy(), "m": np.zeros_like(p0), "v": np.zeros_like(p0), "step": 0}

    def softmax():
        y = K.softmax_forward(x)
        K.softmax_backward(dy, y)

    def log_softmax():
        y = K.log_softmax_forward(x)
        K.log_softmax_backward(dy, y)

    def cross_entropy():
        _, lse = K.cross_entropy_forward(x, target)
        K.cross_entropy_backward(dloss, x, target, lse)

    def layer_norm():
        _, mean, rstd = K.layer_norm_forward(x, w, b)
        K.layer_norm_backward(dy, x, mean, rstd, w)

    def layer_norm_residual():
        _, mean, rstd, summed = K.layer_norm_forward(x, w, b, residual=dy)
        K.layer_norm_backward(dy, summed, mean, rstd, w, dsummed=dy)

    def rms_norm():
        _, rstd = K.rms_norm_forward(x, w)
        K.rms_norm_backward(dy, x, rstd, w)

    def rope():
        K.rope_forward(xr, cos, sin)
        K.rope_backward(dyr, cos, sin)

    def swiglu():
        K.swiglu_forward(g2)
        K.swiglu_backward(dg, g2)

    def geglu():
        K.geglu_forward(g2)
        K.geglu_backward(dg, g2)

    def adamw():
        state["step"] += 1
        K.adamw_step(state["p"], grad, state["m"], state["v"], step=state["step"], lr=1e-3,
                     weight_decay=0.1)  # fmt: skip

    return {
        "softmax": ([R, C], softmax),
        "log_softmax": ([R, C], log_softmax),
        "cross_entropy": ([R, C], cross_entropy),
        "layer_norm": ([R, C], layer_norm),
        "layer_norm_residual": ([R, C], layer_norm_residual),
        "rms_norm": ([R, C], rms_norm),
        "rope": ([Bs, H, T, D], rope),
        "swiglu": ([R, 2 * C], swiglu),
        "geglu": ([R, 2 * C], geglu),
        "adamw": ([R, C], adamw),
    }


def _time_tiers(fn: Callable[[], None], tiers: tuple[str, ...], repeats: int) -> dict:
    """Median seconds per tier of ``fn`` under ``kernels.use(tier)``, runs interleaved."""
    import tinyllm.kernels as K

    samples: dict[str, list[float]] = {t: [] for t in tiers}
    for tier in tiers:  # warm-up: compile, fault in pages
        with K.use(tier):
            fn()
    for _ in range(repeats):
        for tier in tiers:
            with K.use(tier):
                t0 = time.perf_counter()
                fn()
                samples[tier].append(time.perf_counter() - t0)
    return {t: median_ms(s) for t, s in samples.items()}


def _peak_extra_bytes(fn: Callable[[], None]) -> int:
    """Peak bytes allocated (and traced) while ``fn`` runs, above what existed before."""
    import tracemalloc

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def _attention_record(rng, B, H, T, D, causal, repeats, dtype) -> dict:
    import tinyllm.kernels as K

    q, k, v, do = (rng.standard_normal((B, H, T, D)).astype(dtype) for _ in range(4))

    def fwd_bwd(tier: str, times: dict | None = None):
        def go():
            with K.use(tier):
                t0 = time.perf_counter()
                o, lse = K.attention_forward(q, k, v, causal=causal)
                t1 = time.perf_counter()
                K.attention_backward(do, q, k, v, o, lse, causal=causal)
                t2 = time.perf_counter()
            if times is not None:
                times.setdefault(tier, []).append((t1 - t0, t2 - t1))

        return go

    fwd_bwd("numba")()  # compile
    peaks = {tier: _peak_extra_bytes(fwd_bwd(tier)) for tier in ("reference", "numba")}
    times: dict = {}
    for _ in range(repeats):
        for tier in ("reference", "numba"):
            fwd_bwd(tier, times)()
    stat = {}
    for tier, name in (("reference", "naive"), ("numba", "flash")):
        stat[name + "_fwd_ms"] = median_ms([f for f, _ in times[tier]])
        stat[name + "_bwd_ms"] = median_ms([b for _, b in times[tier]])
        stat[name + "_ms"] = median_ms([f + b for f, b in times[tier]])
        stat[name + "_peak_extra_mb"] = round(peaks[tier] / 2**20, 2)
    time_ratio = stat["flash_ms"] / stat["naive_ms"]
    memory_ratio = peaks["numba"] / max(peaks["reference"], 1)
    return {
        "bench": "kernels",
        "op": "attention",
        "shape": [B, H, T, D],
        "causal": causal,
        "dtype": str(q.dtype),
        "repeats": repeats,
        **stat,
        "time_ratio": round(time_ratio, 3),
        "memory_ratio": round(memory_ratio, 4),
        "target_time_ratio": FLASH_TIME_TARGET,
        "target_memory_ratio": FLASH_MEMORY_TARGET,
        "meets_time_target": time_ratio <= FLASH_TIME_TARGET,
        # the memory target is set for the long sequence (T >= 2048); shorter: not applicable
        "meets_memory_target": memory_ratio < FLASH_MEMORY_TARGET if T >= 2048 else None,
    }


def run_kernels(args) -> int:
    import numpy as np

    import tinyllm.kernels as K
    from tinyllm.kernels import dispatch

    if not dispatch.numba_available():
        print("tinyllm bench kernels: Numba is not installed", file=sys.stderr)
        return 1
    repeats = args.repeats or (3 if args.quick else 7)
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    unknown = set(ops) - set(KERNEL_OPS) - {"attention"}
    if unknown:
        print(f"tinyllm bench kernels: unknown ops {sorted(unknown)}", file=sys.stderr)
        return 2
    dtype = np.float32
    rng = np.random.default_rng(0)
    # one parallel launch: loads Numba and applies tinyllm's thread policy (runtime.py)
    K.softmax_forward(np.zeros((1, dispatch.SERIAL_BELOW), dtype))
    import numba

    from tinyllm import runtime

    report = runtime.thread_report()
    emit({
        "bench": "kernels",
        "event": "config",
        "numba_threads": runtime.kernel_threads(),
        "cpu_count": os.cpu_count(),
        "numba_threading_layer": report.get("numba_threading_layer"),
        "blas_threads": report["blas_threads"],
        "numpy": np.__version__,
        "numba": numba.__version__,
        "env": report["env"],
    })  # fmt: skip
    cases = _kernel_cases(rng, args.rows, args.cols, dtype)
    for name in ops:
        if name == "attention":
            continue
        shape, fn = cases[name]
        ms = _time_tiers(fn, ("reference", "numba"), repeats)
        speedup = ms["reference"] / ms["numba"] if ms["numba"] > 0 else math.inf
        emit({
            "bench": "kernels",
            "op": name,
            "shape": shape,
            "dtype": "float32",
            "pass": "step" if name == "adamw" else "forward+backward",
            "repeats": repeats,
            "reference_ms": ms["reference"],
            "numba_ms": ms["numba"],
            "speedup": round(speedup, 2),
            "target_speedup": SPEEDUP_TARGET,
            "meets_target": speedup >= SPEEDUP_TARGET,
        })  # fmt: skip
    if "attention" in ops:
        seqs = [int(t) for t in args.seq.split(",") if t.strip()]
        for T in seqs:
            reps = repeats if not (args.quick and T >= 2048) else 1
            reps = max(1, reps if T < 2048 else min(reps, 3))
            emit(_attention_record(rng, args.batch, args.heads, T, args.head_dim,
                                   not args.no_causal, reps, dtype))  # fmt: skip
    return 0


# name -> (help, add_arguments(parser), run(args) -> exit status)


# ---------------------------------------------------------------- model benchmarks
def _add_model_arguments(p, generate: bool = False) -> None:
    p.add_argument("--arch", choices=["llama", "gpt"], default="llama")
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-kv-head", type=int, default=None)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu",
        help="cpu, or cuda (CuPy against PyTorch CUDA; with --compare torch)",
    )  # fmt: skip
    p.add_argument(
        "--compare", choices=["torch"], default=None,
        help="time PyTorch eager too: child processes alternating tinyllm, torch",
    )  # fmt: skip
    p.add_argument(
        "--rounds", type=int, default=5,
        help="with --compare: rounds of (tinyllm process, torch process)",
    )  # fmt: skip
    p.add_argument(
        "--no-check", action="store_true",
        help="with --compare: skip the first-step loss/gradient agreement check",
    )  # fmt: skip
    p.add_argument("--verbose", action="store_true", help="also print one JSON line per round")
    p.add_argument("--warmup", type=int, default=3)
    if generate:
        p.add_argument("--new-tokens", type=int, default=128)
        p.add_argument("--runs", type=int, default=5)
    else:
        p.add_argument("--batch", type=int, default=8)
        p.add_argument("--steps", type=int, default=20)
        p.add_argument("--profile", action="store_true", help="print the per-op profile table")
        p.add_argument("--framework", choices=["tinyllm", "torch"], default="tinyllm",
                       help="only this framework, in a child process (peak RSS alone)")  # fmt: skip


def _fail(message: str) -> int:
    print(f"tinyllm bench: {message}", file=sys.stderr)
    return 2


def _torch_missing() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is None


def _check_model_args(args) -> str | None:
    """The one-line reason these options cannot run here, or None."""
    wants_torch = args.compare == "torch" or getattr(args, "framework", "tinyllm") == "torch"
    if wants_torch and _torch_missing():
        return "--compare torch needs PyTorch (pip install torch==2.13.0)"
    if args.device == "cuda":
        from tinyllm.backend import cuda_is_available

        if not cuda_is_available():
            return "--device cuda needs an NVIDIA GPU with CuPy; none is available here"
        if args.compare != "torch" and getattr(args, "framework", "tinyllm") != "torch":
            return "--device cuda is measured against PyTorch: add --compare torch"
    if args.compare == "torch" and args.rounds < 1:
        return "--rounds must be at least 1"
    return None


def _run_compare(args, kind: str) -> int:
    from tinyllm.bench import harness

    try:
        emit(harness.compare(args, kind, emit))
    except harness.ChildError as e:
        return _fail(str(e))
    return 0


def run_train_step(args) -> int:
    reason = _check_model_args(args)
    if reason:
        return _fail(reason)
    if args.compare == "torch":
        return _run_compare(args, "train-step")
    if args.framework == "torch" or args.device == "cuda":
        from tinyllm.bench import harness

        try:
            emit(harness.single(args, args.framework))
        except harness.ChildError as e:
            return _fail(str(e))
        return 0
    from tinyllm.bench.model_bench import bench_train_step

    result = bench_train_step(args)
    result.pop("profile", None)
    emit(result)
    return 0


def run_generate(args) -> int:
    reason = _check_model_args(args)
    if reason:
        return _fail(reason)
    if args.compare == "torch":
        return _run_compare(args, "generate")
    from tinyllm.bench.model_bench import bench_generate

    emit(bench_generate(args))
    return 0


# ---------------------------------------------------------------- citizen, threads, load
def _add_citizen_arguments(p) -> None:
    _add_model_arguments(p)
    p.set_defaults(steps=10, rounds=3)
    p.add_argument("--gemm-n", type=int, default=512, help="GEMM size of the NumPy program")
    p.add_argument("--iters", type=int, default=20, help="timed GEMM loops per process")
    p.add_argument("--inner", type=int, default=10, help="GEMMs per timed loop")


def run_citizen(args) -> int:
    from tinyllm.bench import harness

    try:
        harness.citizen(args, emit)
    except harness.ChildError as e:
        return _fail(str(e))
    return 0


def _add_threads_arguments(p) -> None:
    _add_model_arguments(p)
    # T 1,024, batch 2: the causal softmax runs over 8 M scores per layer, above
    # dispatch.SERIAL_BELOW, so the threading layer has parallel kernels to run (at the
    # default train-step size every kernel runs serially and the variants cannot differ)
    p.set_defaults(steps=5, rounds=3, seq_len=1024, batch=2)


def run_threads(args) -> int:
    from tinyllm.bench import harness

    try:
        harness.threads(args, emit)
    except harness.ChildError as e:
        return _fail(str(e))
    return 0


def _add_load_arguments(p) -> None:
    _add_model_arguments(p)
    p.set_defaults(steps=10, rounds=3)
    p.add_argument("--busy", type=int, default=2, help="busy (spinning) processes to start")


def run_load(args) -> int:
    from tinyllm.bench import harness

    try:
        harness.load(args, emit)
    except harness.ChildError as e:
        return _fail(str(e))
    return 0


def _add_overhead_arguments(p) -> None:
    p.add_argument("--chain", type=int, default=200, help="ops per chain (one backward)")
    p.add_argument("--runs", type=int, default=20, help="best of this many chains")


def run_overhead(args) -> int:
    from tinyllm.bench.model_bench import bench_overhead

    emit(bench_overhead(args))
    return 0


# ---------------------------------------------------------------- encode
def _add_encode_arguments(p) -> None:
    p.add_argument("--compare", choices=["torch"], required=True,
                   help="time PyTorch too: child processes alternating tinyllm, torch")  # fmt: skip
    p.add_argument("--set", choices=["short", "long"], default="short",
                   help="short: corpus sentences (~20-30 tokens); long: RAG passages "
                        "(~200 tokens)")  # fmt: skip
    p.add_argument("--sentences", type=int, default=None,
                   help="texts embedded per repeat (default: 512 short, 128 long)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5, help="rounds of (tinyllm, torch) processes")
    p.add_argument("--reps", type=int, default=3, help="timed passes over the texts per process")
    p.add_argument("--warmup", type=int, default=1, help="untimed batches per process")
    p.add_argument("--no-check", action="store_true", help="skip the embedding agreement check")
    p.add_argument("--verbose", action="store_true", help="also print one JSON line per round")


def run_encode(args) -> int:
    if _torch_missing():
        return _fail("encode --compare torch needs PyTorch (pip install torch==2.13.0)")
    for name in ("rounds", "reps", "batch_size"):
        if getattr(args, name) < 1:
            return _fail(f"--{name.replace('_', '-')} must be at least 1")
    if args.sentences is not None and args.sentences < 1:
        return _fail("--sentences must be at least 1")
    from tinyllm.bench import harness

    try:
        emit(harness.encode(args, emit))
    except harness.ChildError as e:
        return _fail(str(e))
    except FileNotFoundError as e:
        return _fail(str(e))
    return 0


BENCHMARKS: dict[str, tuple[str, Callable, Callable]] = {
    "kernels": (
        "reference (NumPy) vs Numba kernels, naive vs flash attention (time and memory)",
        _add_kernel_arguments,
        run_kernels,
    ),
    "train-step": (
        "forward + backward + AdamW of a tinyllm.models model on random tokens",
        _add_model_arguments,
        run_train_step,
    ),
    "generate": (
        "greedy decoding with the KV cache, batch 1, an 8-token prompt",
        lambda p: _add_model_arguments(p, generate=True),
        run_generate,
    ),
    "overhead": (
        "the engine's fixed cost per op (forward + backward) on 4x4 tensors",
        _add_overhead_arguments,
        run_overhead,
    ),
    "citizen": (
        "another program's speed (a NumPy GEMM loop, a PyTorch train step) with and without "
        "tinyllm imported and running in its process",
        _add_citizen_arguments,
        run_citizen,
    ),
    "threads": (
        "a train step with parallel kernels (T 1,024, batch 2) under each Numba threading "
        "choice (workqueue, OpenMP spinning, OpenMP passive), alternating child processes",
        _add_threads_arguments,
        run_threads,
    ),
    "load": (
        "slowdown of the default train step (tinyllm and PyTorch) with N busy processes",
        _add_load_arguments,
        run_load,
    ),
    "encode": (
        "all-MiniLM-L6-v2 sentence embeddings/s, tinyllm vs an idiomatic PyTorch BERT "
        "(--compare torch), alternating child processes",
        _add_encode_arguments,
        run_encode,
    ),
}
