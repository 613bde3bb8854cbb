"""Could a different thread arrangement close the train-step gap to PyTorch? (issue 15)

tinyllm's CPU step runs its matrix products on NumPy's OpenBLAS pool (two threads here) and
its own kernels serially below ``SERIAL_BELOW`` elements, because OpenBLAS's workers spin
after every product and a second pool would fight them (README, "Threads and load").
PyTorch instead runs everything on one OpenMP pool. This experiment measures the three
arrangements that might move the gap, each in child processes of its own, alternating:

- ``gemms``: the default model's step products (``tinyllm.bench.worker.step_gemms``, gpt)
  on NumPy's pool, against "one pool": every product cut into row blocks (batched
  products: their batch entries) run by a parallel Numba kernel on OpenMP, each block
  through SciPy's BLAS held to one thread (``threadpoolctl``, in that child only), so that
  one pool would be left for the kernels too. The two give the same products (checked
  against NumPy's in every child, to float32 rounding).
- ``step``: the default gpt training step as shipped, with OpenBLAS's spin shortened
  (``OPENBLAS_THREAD_TIMEOUT=4``, its minimum: workers sleep almost at once), and with the
  kernels parallel from 64 k elements (``SERIAL_BELOW``), alone and together.

    python experiments/thread_pools.py                 # 5 rounds, ~4 min; JSON lines
    python experiments/thread_pools.py --quick         # smoke test, small shapes

Writes ``experiments/results/thread_pools.json`` (not with ``--quick``). Needs SciPy and
``threadpoolctl`` (both come with the test extra's scikit-learn).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

STEP_VARIANTS = {  # name -> (extra environment, SERIAL_BELOW override or None)
    "shipped": ({}, None),
    "blas timeout 4": ({"OPENBLAS_THREAD_TIMEOUT": "4"}, None),
    "kernels parallel from 64 k": ({}, 1 << 16),
    "both": ({"OPENBLAS_THREAD_TIMEOUT": "4"}, 1 << 16),
}


def _config(quick: bool) -> dict:
    from tinyllm.models import ModelConfig

    d = 64 if quick else 256
    cfg = ModelConfig(arch="gpt", vocab_size=256, d_model=d, n_layer=2 if quick else 4,
                      n_head=4, block_size=128)  # fmt: skip
    keys = ("arch", "d_model", "n_head", "n_layer", "n_kv_head", "ffn_hidden", "vocab_size")
    return {key: getattr(cfg, key) for key in keys}


def _one_pool_kernels():
    """Numba kernels that run BLAS products (SciPy's, via ``np.dot``) in parallel blocks."""
    import scipy.linalg.cython_blas  # noqa: F401  (the BLAS np.dot calls inside Numba)
    from numba import njit, prange

    @njit(parallel=True)
    def rows(a, b, out, blocks):  # out = a @ b, row blocks of a in parallel
        step = (a.shape[0] + blocks - 1) // blocks
        for i in prange(blocks):
            lo, hi = i * step, min(a.shape[0], (i + 1) * step)
            out[lo:hi] = np.dot(a[lo:hi], b)

    @njit(parallel=True)
    def batched(a, b, out):  # out[i] = a[i] @ b[i], the batch entries in parallel
        for i in prange(a.shape[0]):
            out[i] = np.dot(a[i], b[i])

    return rows, batched


def child_gemms(spec: dict) -> dict:
    """Time the step's products on NumPy's pool or on one pool; check they agree."""
    from tinyllm.bench.worker import step_gemms

    rng = np.random.default_rng(0)
    gemms = step_gemms(spec["config"], spec["batch"], spec["seq_len"])
    pairs = [(rng.standard_normal(a, dtype=np.float32), rng.standard_normal(b, dtype=np.float32))
             for _, a, b in gemms]  # fmt: skip
    reference = [np.matmul(a, b) for a, b in pairs]
    outs = [np.empty_like(r) for r in reference]
    if spec["pool"] == "numpy":

        def run():
            for (a, b), out in zip(pairs, outs):
                np.matmul(a, b, out=out)

    else:
        import numba
        from threadpoolctl import threadpool_limits

        numba.config.THREADING_LAYER = "omp"
        rows, batched = _one_pool_kernels()  # loads SciPy's BLAS: limit it after this
        threadpool_limits(limits=1, user_api="blas")  # this child only: BLAS single-threaded
        threads = numba.get_num_threads()

        def run():
            for (a, b), out in zip(pairs, outs):
                if a.ndim == 3:
                    batched(a, b, out)
                else:
                    rows(a, b, out, threads)

    run()
    worst = max(float(np.max(np.abs(o - r)) / max(float(np.max(np.abs(r))), 1e-30))
                for o, r in zip(outs, reference))  # fmt: skip
    times = []
    for i in range(spec["warmup"] + spec["steps"]):
        t0 = time.perf_counter()
        run()
        if i >= spec["warmup"]:
            times.append((time.perf_counter() - t0) * 1000)
    from threadpoolctl import threadpool_info

    blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    return {"ms": round(statistics.median(times), 2), "worst_relative_difference": worst,
            "blas_threads": blas}  # fmt: skip


def child_step(spec: dict) -> dict:
    """The default gpt training step (``tinyllm bench train-step``'s loop), as configured."""
    from types import SimpleNamespace

    from tinyllm.kernels import dispatch

    if spec["serial_below"] is not None:
        dispatch.SERIAL_BELOW = spec["serial_below"]
    from tinyllm.bench.model_bench import bench_train_step

    c = spec["config"]
    args = SimpleNamespace(arch="gpt", vocab=c["vocab_size"], d_model=c["d_model"],
                           n_layer=c["n_layer"], n_head=c["n_head"], n_kv_head=None,
                           seq_len=spec["seq_len"], batch=spec["batch"], warmup=spec["warmup"],
                           steps=spec["steps"], profile=False)  # fmt: skip
    result = bench_train_step(args)
    return {"ms": result["ms_per_step"]}


def run_child(spec: dict, env_extra: dict | None = None) -> dict:
    env = dict(os.environ, **(env_extra or {}))
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"thread_pools child failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small shapes, one round")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("experiments/results/thread_pools.json"))
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        result = child_gemms(spec) if spec["mode"] == "gemms" else child_step(spec)
        print(json.dumps(result))
        return 0
    rounds = 1 if args.quick else args.rounds
    base = {"config": _config(args.quick), "batch": 2 if args.quick else 8,
            "seq_len": 32 if args.quick else 128, "warmup": 1 if args.quick else 3,
            "steps": 2 if args.quick else 10}  # fmt: skip
    gemms = {"numpy": [], "one pool": []}
    steps = {name: [] for name in STEP_VARIANTS}
    worst = 0.0
    for r in range(rounds):
        for name, pool in (("numpy", "numpy"), ("one pool", "onepool")):
            result = run_child({**base, "mode": "gemms", "pool": pool})
            if pool == "onepool" and result["blas_threads"] != [1] * len(result["blas_threads"]):
                raise RuntimeError(f"one pool: BLAS pools not single-threaded: {result}")
            gemms[name].append(result["ms"])
            worst = max(worst, result["worst_relative_difference"])
        for name, (env, serial_below) in STEP_VARIANTS.items():
            spec = {**base, "mode": "step", "serial_below": serial_below}
            steps[name].append(run_child(spec, env)["ms"])
        latest = {"gemms_ms": {k: v[-1] for k, v in gemms.items()},
                  "step_ms": {k: v[-1] for k, v in steps.items()}}  # fmt: skip
        print(json.dumps({"round": r, **latest}), flush=True)
    median = {k: round(statistics.median(v), 2) for k, v in {**gemms, **steps}.items()}
    summary = {
        "what": "gpt default step: its products on NumPy's pool vs one pool (Numba OpenMP "
        "blocks over single-threaded SciPy BLAS); the step with OpenBLAS's spin shortened "
        "and/or kernels parallel from 64 k elements; medians of alternating child processes",
        "config": base,
        "rounds": rounds,
        "gemms_ms": {k: v for k, v in gemms.items()},
        "step_ms": {k: v for k, v in steps.items()},
        "median_ms": median,
        "one_pool_worst_relative_difference": worst,
        "machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end",
    }
    print(json.dumps(summary))
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
