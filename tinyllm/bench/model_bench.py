"""Training-step and decoding benchmarks of ``tinyllm.models`` alone, in this process.

train-step: forward + backward + AdamW on random tokens, ``--steps`` timed after ``--warmup``;
prints the median, min and max ms per step, tokens/s, peak RSS and the parameter count.
generate: greedy decoding with the KV cache, batch 1, an 8-token prompt; ms per new token, and
where one ``generate`` call spends it (``parts_ms``: building the decoder, the prompt's prefill,
the steps, the rest).
The comparison with PyTorch (``--compare torch``) never shares a process with PyTorch: it
runs in child processes, ``tinyllm.bench.harness``.
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import time
from collections.abc import Iterator

import numpy as np

import tinyllm
import tinyllm.functional as F
from tinyllm.models import ModelConfig, build_model


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _summary(times_ms: list[float]) -> dict:
    return {
        "ms": round(statistics.median(times_ms), 2),
        "min": round(min(times_ms), 2),
        "max": round(max(times_ms), 2),
    }


def model_config(args) -> ModelConfig:
    block = max(args.seq_len, 8 + getattr(args, "new_tokens", 0))
    return ModelConfig(
        arch=args.arch, vocab_size=args.vocab, d_model=args.d_model, n_layer=args.n_layer,
        n_head=args.n_head, n_kv_head=args.n_kv_head, block_size=block,
    )  # fmt: skip


def _tinyllm_step(model, opt, x, y):
    def step():
        logits = model(tinyllm.tensor(x))
        V = logits.shape[-1]
        loss = F.cross_entropy(logits.reshape(-1, V), tinyllm.tensor(y.reshape(-1)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    return step


def bench_train_step(args) -> dict:
    """tinyllm's training step alone, in this process (``--profile`` needs that)."""
    from tinyllm import runtime

    runtime.tune_process()
    config = model_config(args)
    tinyllm.manual_seed(0)
    model = build_model(config)
    rng = np.random.default_rng(0)
    x = rng.integers(0, config.vocab_size, (args.batch, args.seq_len))
    y = rng.integers(0, config.vocab_size, (args.batch, args.seq_len))
    result = {"bench": "train-step", "arch": args.arch, "d_model": args.d_model,
              "n_layer": args.n_layer, "n_head": args.n_head, "n_kv_head": config.n_kv_head,
              "seq_len": args.seq_len, "batch": args.batch, "vocab": args.vocab,
              "params": model.num_parameters(), "device": "cpu"}  # fmt: skip
    opt = tinyllm.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
    step = _tinyllm_step(model, opt, x, y)
    times = []
    profiler = tinyllm.profile() if args.profile else None
    for i in range(args.warmup + args.steps):
        if profiler is not None and i == args.warmup:
            profiler.__enter__()
        t0 = time.perf_counter()
        step()
        if i >= args.warmup:
            times.append((time.perf_counter() - t0) * 1000)
    if profiler is not None:
        profiler.__exit__(None, None, None)
        result["profile"] = profiler.rows()
        print(profiler.table())
    ours = _summary(times)
    result.update(ms_per_step=ours["ms"], min=ours["min"], max=ours["max"],
                  tokens_per_s=round(args.batch * args.seq_len / ours["ms"] * 1000))  # fmt: skip
    result.update(gemm_lower_bound(model, args))
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    result["threads"] = runtime.thread_report()
    return result


def blas_gflops(n: int = 1024, repeats: int = 5) -> float:
    """The float32 GEMM rate NumPy's BLAS reaches here (best of ``repeats``, n x n x n)."""
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    b = a.T.copy()
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def gemm_lower_bound(model, args) -> dict:
    """The time one step's matrix products alone would take at the measured BLAS rate.

    Linear layers: 2 N in out FLOPs forward, twice that backward (dx and dW): 6 N in out.
    Attention per layer: Q K^T and P V, 4 B H T^2 D forward, 8 backward (no causal skipping).
    No engine that keeps float32 BLAS GEMMs can take less time than this.
    """
    from tinyllm.nn import Linear

    N = args.batch * args.seq_len
    linear = sum(6 * N * m.in_features * m.out_features
                 for m in model.modules() if isinstance(m, Linear))  # fmt: skip
    D = args.d_model // args.n_head
    attention = args.n_layer * 12 * args.batch * args.n_head * args.seq_len**2 * D
    rate = blas_gflops()
    flops = linear + attention
    return {"gemm_gflop": round(flops / 1e9, 2), "blas_gflops": round(rate, 1),
            "gemm_bound_ms": round(flops / (rate * 1e9) * 1000, 1)}  # fmt: skip


def bench_generate(args) -> dict:
    """tinyllm's greedy decoding alone, in this process: ms per new token."""
    from tinyllm import runtime

    runtime.tune_process()
    config = model_config(args)
    tinyllm.manual_seed(0)
    model = build_model(config)
    model.eval()
    prompt = np.random.default_rng(0).integers(0, config.vocab_size, (1, 8))
    result = {"bench": "generate", "arch": args.arch, "d_model": args.d_model,
              "n_layer": args.n_layer, "n_head": args.n_head, "new_tokens": args.new_tokens,
              "params": model.num_parameters()}  # fmt: skip
    times, parts = [], []
    for i in range(args.warmup + args.runs):
        with _timed_decoder() as spent:
            t0 = time.perf_counter()
            model.generate(tinyllm.tensor(prompt), args.new_tokens, temperature=0)
            total = time.perf_counter() - t0
        if i >= args.warmup:
            times.append(total * 1000 / args.new_tokens)
            parts.append(dict(spent, other=total - sum(spent.values())))
    ours_ms = statistics.median(times)
    result.update(ms_per_token=round(ours_ms, 3), tokens_per_s=round(1000 / ours_ms, 1))
    # per generate call, medians over the runs (each part's own median)
    result["parts_ms"] = {k: round(statistics.median(p[k] for p in parts) * 1000, 3)
                          for k in parts[0]}  # fmt: skip
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return result


@contextlib.contextmanager
def _timed_decoder() -> Iterator[dict]:
    """Seconds spent in ``Decoder.__init__`` (the build: weight copies, tables, cache),
    ``prefill`` and ``step`` while the block runs, summed per method: the real ``generate``
    timed from the inside (its own loop, sampling and Python make up the rest)."""
    from tinyllm.models.decoder import Decoder

    methods = {"build": "__init__", "prefill": "prefill", "steps": "step"}
    originals = {part: getattr(Decoder, name) for part, name in methods.items()}
    spent = dict.fromkeys(methods, 0.0)

    def timed(part):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return originals[part](*args, **kwargs)
            finally:
                spent[part] += time.perf_counter() - t0

        return wrapper

    for part, name in methods.items():
        setattr(Decoder, name, timed(part))
    try:
        yield spent
    finally:
        for part, name in methods.items():
            setattr(Decoder, name, originals[part])


def bench_overhead(args) -> dict:
    """The engine's fixed cost per op (forward + backward) on 4x4 tensors, in microseconds."""
    x = tinyllm.randn(4, 4, requires_grad=True)
    # near the identity, so a long chain of products neither overflows nor vanishes
    w = tinyllm.tensor(np.eye(4, dtype=np.float32) + 0.01 * np.ones((4, 4), np.float32),
                       requires_grad=True)  # fmt: skip
    ops = {
        "mul": lambda a: a * w,
        "add": lambda a: a + w,
        "tanh": lambda a: a.tanh(),
        "matmul": lambda a: a @ w,
        "softmax": lambda a: F.softmax(a, -1),
    }
    result = {"bench": "overhead", "shape": [4, 4], "chain": args.chain}
    for name, op in ops.items():
        best = float("inf")
        for _ in range(args.runs):
            t0 = time.perf_counter()
            y = x
            for _ in range(args.chain):
                y = op(y)
            y.sum().backward()
            best = min(best, (time.perf_counter() - t0) / (args.chain + 1) * 1e6)
            x.grad = None
        result[f"{name}_us"] = round(best, 2)
    a = np.ones((4, 4), np.float32)
    t0 = time.perf_counter()
    for _ in range(10000):
        a * a
    result["numpy_mul_us"] = round((time.perf_counter() - t0) / 10000 * 1e6, 2)
    return result
