"""Serving: throughput and latency of the continuous-batching engine against one-at-a-time
decoding, with and without prefix sharing, and speculative decoding's acceptance and speed.

    python experiments/serving.py [--run runs/quant_base] [--draft runs/alignment_base]
                                  [--concurrency 1 2 4 8 16] [--prompt-len 24] [--max-tokens 24]

``batching``: N requests (distinct random byte prompts, greedy, ``--max-tokens`` each) arrive
at once. "engine" serves them with ``LLMEngine`` (paged KV cache, iteration-level batching,
reference paged attention); "sequential" runs them one after another through
``model.generate`` (contiguous KV cache, batch 1): the no-batching/no-paging baseline.
Reports tokens/s, time to first token (TTFT) and inter-token latency (ITL) percentiles.
``prefix``: the same with all prompts sharing a 48-token prefix, prefix sharing on and off:
prefill tokens computed and wall time. ``speculative``: target ``--run`` with draft
``--draft`` (both byte-level runs of ``tinyllm train``), greedy and T = 1, gamma 4:
acceptance rate, tokens per target forward, and wall time against plain ``generate``.
Writes experiments/results/serving.jsonl and serving.png. CPU, float32, on a shared machine:
absolute times move with the load (reported with the results).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import tinyllm  # noqa: E402
from tinyllm.cli.sample_cmd import load_run  # noqa: E402
from tinyllm.serve.engine import LLMEngine, SamplingParams  # noqa: E402
from tinyllm.serve.speculative import speculative_generate  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def pct(values, q):
    return float(np.percentile(values, q)) * 1000 if len(values) else float("nan")


def run_engine(model, prompts, max_tokens, prefix_sharing=True, warm_prefix=None):
    engine = LLMEngine(model, num_blocks=4096, block_size=16, max_num_seqs=64,
                       prefix_sharing=prefix_sharing)  # fmt: skip
    params = SamplingParams(max_tokens=max_tokens, temperature=0)
    if warm_prefix is not None:  # a live request already holds the shared prefix's K/V
        engine.add_request(warm_prefix, SamplingParams(max_tokens=max_tokens + 8, temperature=0))
        engine.step()
    t0 = time.perf_counter()
    ids = [engine.add_request(p, params) for p in prompts]
    times: dict = {i: [] for i in ids}
    while engine.has_unfinished():
        for req in engine.step():
            if req.id in times:
                times[req.id].append(time.perf_counter())
    wall = time.perf_counter() - t0
    ttft = [t[0] - t0 for t in times.values()]
    itl = [b - a for t in times.values() for a, b in zip(t, t[1:])]
    return wall, ttft, itl, engine.stats


def run_sequential(model, prompts, max_tokens):
    t0 = time.perf_counter()
    ttft, itl = [], []
    for p in prompts:
        stamps: list[float] = []

        def stamp(_token, stamps=stamps):
            stamps.append(time.perf_counter())

        model.generate(tinyllm.tensor(np.array([p])), max_tokens, temperature=0, callback=stamp)
        ttft.append(stamps[0] - t0)  # includes the wait behind earlier requests
        itl += [b - a for a, b in zip(stamps, stamps[1:])]
    return time.perf_counter() - t0, ttft, itl


def mcts_rows(model, budget=160, length=8, seeds=6):
    """MCTS vs best-of-N at equal model calls. Policy: the run's next-byte distribution
    restricted to the digits 0-9 (renormalized) after the prompt "digits: "; reward (a
    program): the fraction of steps where the next digit is the previous plus 1 (mod 10)."""
    from tinyllm.generation.mcts import CountingPolicy, best_of_n, mcts_generate
    from tinyllm.models.decoder import Decoder

    head = [ord(c) for c in "digits: "]
    digits = np.arange(48, 58)

    def probs(prefix):
        z = Decoder(model, 1, len(head) + length).prefill(
            np.array([head + [48 + d for d in prefix]])
        )
        z = np.asarray(z[0], dtype=np.float64)[digits]
        p = np.exp(z - z.max())
        return p / p.sum()

    def reward(seq):
        return sum((b - a) % 10 == 1 for a, b in zip(seq, seq[1:])) / (len(seq) - 1)

    rows = []
    for name, fn in (("mcts", mcts_generate), ("best_of_n", best_of_n)):
        rewards = [fn(CountingPolicy(probs), (), length, reward, budget, seed=s)[1]
                   for s in range(seeds)]  # fmt: skip
        row = {"experiment": "mcts", "method": name, "model_calls": budget, "length": length,
               "mean_best_reward": float(np.mean(rewards)), "rewards": rewards}  # fmt: skip
        rows.append(row)
        print(json.dumps(row))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/quant_base")
    ap.add_argument("--draft", default="runs/alignment_base")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--prompt-len", type=int, default=24)
    ap.add_argument("--max-tokens", type=int, default=24)
    args = ap.parse_args()
    model, *_ = load_run(args.run)
    rng = np.random.default_rng(0)
    rows = []
    run_engine(model, [[65] * 8] * 2, 4)  # warm up (RoPE tables, first-call costs)
    run_sequential(model, [[65] * 8], 4)
    load = os.getloadavg()[0]
    for n in args.concurrency:
        prompts = [list(rng.integers(32, 127, args.prompt_len)) for _ in range(n)]
        tokens = n * args.max_tokens
        wall, ttft, itl, _ = run_engine(model, prompts, args.max_tokens)
        swall, sttft, sitl = run_sequential(model, prompts, args.max_tokens)
        for name, w, f, i in (("engine", wall, ttft, itl), ("sequential", swall, sttft, sitl)):
            row = {"experiment": "batching", "mode": name, "concurrency": n,
                   "tokens_per_s": tokens / w, "ttft_p50_ms": pct(f, 50), "ttft_p99_ms": pct(f, 99),
                   "itl_p50_ms": pct(i, 50), "itl_p99_ms": pct(i, 99), "load1": load}  # fmt: skip
            rows.append(row)
            print(json.dumps(row))
    shared = list(rng.integers(32, 127, 48))
    prompts = [shared + list(rng.integers(32, 127, 8)) for _ in range(8)]
    for sharing in (True, False):
        wall, ttft, _, stats = run_engine(model, prompts, 8, prefix_sharing=sharing,
                                          warm_prefix=shared + [32])  # fmt: skip
        row = {
            "experiment": "prefix",
            "prefix_sharing": sharing,
            "requests": 8,
            "wall_s": wall,
            "ttft_p50_ms": pct(ttft, 50),
            "shared_blocks": stats["shared_blocks"],
            "tokens_computed": stats["batched_tokens"],
        }  # fmt: skip (incl. the warm request)
        rows.append(row)
        print(json.dumps(row))
    draft, *_ = load_run(args.draft)
    prompt = [ord(c) for c in "The quick brown "]
    n_new = 40
    for temperature in (0.0, 1.0):
        speculative_generate(model, draft, prompt, 4, gamma=4, temperature=temperature)  # warm
        t0 = time.perf_counter()
        new, stats = speculative_generate(model, draft, prompt, n_new, gamma=4,
                                          temperature=temperature, seed=0)  # fmt: skip
        spec = time.perf_counter() - t0
        t0 = time.perf_counter()
        model.generate(tinyllm.tensor(np.array([prompt])), n_new, temperature=temperature,
                       generator=np.random.default_rng(0))  # fmt: skip
        plain = time.perf_counter() - t0
        row = {"experiment": "speculative", "temperature": temperature, "gamma": 4,
               "acceptance_rate": stats["acceptance_rate"],
               "tokens_per_target_forward": stats["tokens_per_round"],
               "speculative_s": spec, "plain_s": plain}  # fmt: skip
        rows.append(row)
        print(json.dumps(row))
    rows += mcts_rows(model)
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "serving.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for mode, style in (("engine", "o-"), ("sequential", "s--")):
        sel = [r for r in rows if r.get("mode") == mode]
        c = [r["concurrency"] for r in sel]
        axes[0].plot(c, [r["tokens_per_s"] for r in sel], style, label=mode)
        axes[1].plot(c, [r["ttft_p50_ms"] for r in sel], style, label=f"{mode} p50")
        axes[1].plot(c, [r["ttft_p99_ms"] for r in sel], style, alpha=0.5, label=f"{mode} p99")
        axes[2].plot(c, [r["itl_p50_ms"] for r in sel], style, label=f"{mode} p50")
        axes[2].plot(c, [r["itl_p99_ms"] for r in sel], style, alpha=0.5, label=f"{mode} p99")
    for ax, title in zip(axes, ("throughput (tokens/s)", "time to first token (ms)",
                                "inter-token latency (ms)")):  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent requests")
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.suptitle(f"{args.run}: continuous batching vs one at a time (CPU, load {load:.1f})")
    fig.tight_layout()
    fig.savefig(RESULTS / "serving.png", dpi=110)
    print("wrote", RESULTS / "serving.jsonl", RESULTS / "serving.png")


if __name__ == "__main__":
    main()
