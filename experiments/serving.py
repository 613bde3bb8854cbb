"""Serving: throughput and latency against concurrent requests, with and without paging,
prefix sharing and speculation; and MCTS against best-of-N at equal model calls.

    python experiments/serving.py [--run runs/quant_base] [--draft runs/alignment_base]
                                  [--concurrency 1 2 4 8 16] [--max-tokens 24]
                                  [--part serving|mcts|all]

``serving`` (serving.jsonl, serving.png). N requests arrive at once; each prompt is a
shared 24-token "system prompt" and 8 tokens of its own; greedy, ``--max-tokens`` new
tokens each; KV blocks of 8 tokens. Modes:

- ``paged+prefix``: ``LLMEngine`` (paged KV cache, continuous batching), prefix sharing on.
  A live request holds the system prompt's blocks (as a server that keeps serving it
  does), in every engine mode, so the shared blocks exist when the N requests arrive;
- ``paged+prefix numba``: the same with the Numba paged decode kernel (the others use the
  reference tier: a gather, then the contiguous formula);
- ``paged``: prefix sharing off;
- ``contiguous batch``: no paging, static batching: ``model.generate`` on the [N, T] batch
  (one contiguous KV cache; every request waits for the batch);
- ``contiguous 1-by-1``: ``model.generate`` one request after another (batch 1);
- ``speculative 1-by-1``: ``speculative_generate`` (draft ``--draft``, gamma 4) one request
  after another; the acceptance rate is reported.

Per mode and N: tokens/s (N * max_tokens / wall time), time to first token (from the
common arrival), inter-token latency (gaps between a request's consecutive tokens, 0 for
tokens that arrive together, as a speculative round's do) and time per output token
((last - first) / (tokens - 1) per request), at p50 and p99; of ``--repeats``
runs (modes interleaved), the one with the median wall time is kept.

``mcts`` (serving_mcts.jsonl, serving_mcts.png). Tasks: after a prompt text, write
``length`` digits; the reward (a program) is the fraction of steps where the next digit is
the previous plus k (mod 10). The policy is the run's next-byte distribution restricted to
the ten digits. Settings of MCTS (c_puct, backup, prior temperature) and of best-of-N
(sampling temperature) are chosen on 6 development tasks, then both are compared on 6
held-out tasks over 3 seeds, at equal model calls (distinct prefixes evaluated).
CPU, float32, on a shared machine: absolute times move with the load (reported).
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # run as a script: one thread, set before NumPy loads its BLAS
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import tinyllm  # noqa: E402
from tinyllm.cli.sample_cmd import load_run  # noqa: E402
from tinyllm.serve.engine import LLMEngine, SamplingParams  # noqa: E402
from tinyllm.serve.speculative import speculative_generate  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# prompts of 24 + 8 tokens: with 24 new tokens and gamma + 1 they fit the draft's 64-token
# context; blocks of 8 tokens, so the shared 24 tokens are 3 whole blocks
PREFIX_LEN, SUFFIX_LEN, GAMMA, BLOCK = 24, 8, 4, 8


def pct(values, q):
    return float(np.percentile(values, q)) * 1000 if len(values) else float("nan")


def summarize(mode, n, max_tokens, wall, stamps, t0, load, **extra):
    """One result row from per-request token timestamps (a list per request)."""
    ttft = [s[0] - t0 for s in stamps]
    itl = [b - a for s in stamps for a, b in zip(s, s[1:])]
    tpot = [(s[-1] - s[0]) / (len(s) - 1) for s in stamps if len(s) > 1]
    row = {"experiment": "serving", "mode": mode, "concurrency": n,
           "tokens_per_s": n * max_tokens / wall, "wall_s": wall,
           "ttft_p50_ms": pct(ttft, 50), "ttft_p99_ms": pct(ttft, 99),
           "itl_p50_ms": pct(itl, 50), "itl_p99_ms": pct(itl, 99),
           "tpot_p50_ms": pct(tpot, 50), "tpot_p99_ms": pct(tpot, 99), "load1": load,
           **extra}  # fmt: skip
    print(json.dumps(row), flush=True)
    return row


def run_engine(model, prompts, system, max_tokens, prefix_sharing, kernel="reference"):
    engine = LLMEngine(model, num_blocks=2048, block_size=BLOCK, max_num_seqs=64,
                       prefix_sharing=prefix_sharing, kernel=kernel)  # fmt: skip
    # a live request holds the system prompt (both modes, so both carry its decode stream)
    engine.add_request(system + [32], SamplingParams(max_tokens=4 * max_tokens, temperature=0))
    engine.step()
    params = SamplingParams(max_tokens=max_tokens, temperature=0)
    t0 = time.perf_counter()
    ids = [engine.add_request(p, params) for p in prompts]
    stamps: dict = {i: [] for i in ids}
    while any(not engine.requests[i].finished for i in ids):
        for req in engine.step():
            if req.id in stamps:
                stamps[req.id].append(time.perf_counter())
    wall = time.perf_counter() - t0
    return wall, list(stamps.values()), t0, engine.stats


def run_static_batch(model, prompts, max_tokens):
    t0 = time.perf_counter()
    stamps: list[float] = []
    model.generate(tinyllm.tensor(np.array(prompts)), max_tokens, temperature=0,
                   callback=lambda _t: stamps.append(time.perf_counter()))  # fmt: skip
    wall = time.perf_counter() - t0
    return wall, [stamps] * len(prompts), t0  # every request gets its tokens at these times


def run_sequential(model, prompts, max_tokens):
    t0 = time.perf_counter()
    out = []
    for p in prompts:
        stamps: list[float] = []
        model.generate(tinyllm.tensor(np.array([p])), max_tokens, temperature=0,
                       callback=lambda _t, s=stamps: s.append(time.perf_counter()))  # fmt: skip
        out.append(stamps)
    return time.perf_counter() - t0, out, t0


def run_speculative(model, draft, prompts, max_tokens):
    t0 = time.perf_counter()
    out, drafted, accepted = [], 0, 0
    for p in prompts:
        stamps: list[float] = []

        def emitted(tokens, s=stamps):
            now = time.perf_counter()
            s.extend([now] * len(tokens))

        _, stats = speculative_generate(model, draft, p, max_tokens, gamma=GAMMA,
                                        temperature=0, callback=emitted)  # fmt: skip
        drafted, accepted = drafted + stats["drafted"], accepted + stats["accepted"]
        out.append(stamps)
    return time.perf_counter() - t0, out, t0, accepted / max(drafted, 1)


MODES = ("paged+prefix", "paged+prefix numba", "paged", "contiguous batch", "contiguous 1-by-1",
         "speculative 1-by-1")  # fmt: skip
ENGINE_MODES = ((True, "reference", "paged+prefix"), (True, "numba", "paged+prefix numba"),
                (False, "reference", "paged"))  # fmt: skip


def median_of(rows):
    """The repeat with the median wall time, with every repeat's tokens/s beside it."""
    rows = sorted(rows, key=lambda r: r["wall_s"])
    row = dict(rows[len(rows) // 2])
    row["tokens_per_s_repeats"] = [r["tokens_per_s"] for r in rows]
    return row


def serving_rows(model, draft, concurrency, max_tokens, repeats=1):
    rng = np.random.default_rng(0)
    system = [int(t) for t in rng.integers(32, 127, PREFIX_LEN)]
    warm = [system + [65] * SUFFIX_LEN] * 2  # warm-up: RoPE tables, first-call costs
    run_engine(model, warm, system, 4, True)
    run_engine(model, warm, system, 4, True, "numba")  # compiles (or loads) the kernel
    run_static_batch(model, warm, 4)
    run_speculative(model, draft, warm[:1], 4)
    rows = []
    for n in concurrency:
        prompts = [system + [int(t) for t in rng.integers(32, 127, SUFFIX_LEN)] for _ in range(n)]
        load = os.getloadavg()[0]
        runs: dict = {mode: [] for mode in MODES}
        for _ in range(repeats):  # modes interleaved, so load changes hit them alike
            for sharing, kernel, mode in ENGINE_MODES:
                wall, stamps, t0, stats = run_engine(model, prompts, system, max_tokens, sharing,
                                                     kernel)  # fmt: skip
                runs[mode].append(summarize(mode, n, max_tokens, wall, stamps, t0, load,
                                            shared_blocks=stats["shared_blocks"],
                                            tokens_computed=stats["batched_tokens"]))  # fmt: skip
            wall, stamps, t0 = run_static_batch(model, prompts, max_tokens)
            runs["contiguous batch"].append(
                summarize("contiguous batch", n, max_tokens, wall, stamps, t0, load)
            )
            wall, stamps, t0 = run_sequential(model, prompts, max_tokens)
            runs["contiguous 1-by-1"].append(
                summarize("contiguous 1-by-1", n, max_tokens, wall, stamps, t0, load)
            )
            wall, stamps, t0, acc = run_speculative(model, draft, prompts, max_tokens)
            row = summarize("speculative 1-by-1", n, max_tokens, wall, stamps, t0, load,
                            acceptance_rate=acc, gamma=GAMMA)  # fmt: skip
            runs["speculative 1-by-1"].append(row)
        rows += [median_of(runs[mode]) for mode in MODES]
    return rows


def plot_serving(rows, title, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(19, 4.4))
    styles = dict(zip(MODES, ("o-", "o--", "^-", "s--", "d:", "v-.")))
    for mode in MODES:
        sel = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["concurrency"])
        if not sel:
            continue
        c = [r["concurrency"] for r in sel]
        label = mode
        if mode.startswith("speculative"):
            acc = np.mean([r["acceptance_rate"] for r in sel])
            label += f" (gamma {GAMMA}, accept {acc:.0%})"
        line = axes[0].plot(c, [r["tokens_per_s"] for r in sel], styles[mode], label=label)[0]
        for ax, key in ((axes[1], "ttft"), (axes[2], "itl"), (axes[3], "tpot")):
            ax.plot(c, [r[f"{key}_p50_ms"] for r in sel], styles[mode], color=line.get_color(),
                    label=f"{mode} p50")  # fmt: skip
            ax.plot(c, [r[f"{key}_p99_ms"] for r in sel], styles[mode], color=line.get_color(),
                    alpha=0.35, label=f"{mode} p99")  # fmt: skip
    for ax, name in zip(axes, ("throughput (tokens/s)", "time to first token (ms): p50, p99 faint",
                               "inter-token latency (ms): p50, p99 faint",
                               "time per output token (ms): p50, p99 faint")):  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent requests")
        ax.set_title(name, fontsize=10)
    axes[1].set_yscale("log")
    axes[2].set_yscale("symlog", linthresh=0.1)  # a speculative round's tokens arrive at once: 0
    axes[2].set_ylim(bottom=0)
    axes[3].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- MCTS vs best-of-N
DIGITS = np.arange(48, 58)
DEV_TASKS = [("digits: ", 1), ("code ", 3), ("pin = ", 7), ("id ", 2), ("n = ", 9), ("seq: ", 5)]
HELD_OUT = [("number: ", 1), ("key ", 4), ("x = ", 3), ("row ", 6), ("total: ", 8), ("zip ", 7)]
LENGTH, BUDGET = 8, 160


class DigitPolicy:
    """probs(prefix of digits) -> [10]: the run's next byte after ``head`` + the digits,
    restricted to '0'..'9' and renormalized. One KV cache holds the head (but its last
    byte); each call rolls back to it and prefills the last head byte and the digits.
    Results are kept across searches (a speed-up only: each search counts its own calls
    with a fresh ``CountingPolicy``)."""

    def __init__(self, model, head: str):
        from tinyllm.models.decoder import Decoder

        self.head, self.cache = [ord(c) for c in head], {}
        self.dec = Decoder(model, 1, len(self.head) + LENGTH + 1)
        self.dec.prefill(np.array([self.head[:-1]]))

    def __call__(self, prefix: tuple) -> np.ndarray:
        if prefix not in self.cache:
            self.dec.truncate(len(self.head) - 1)
            z = self.dec.prefill(np.array([[self.head[-1]] + [48 + d for d in prefix]]))
            z = np.asarray(z[0], dtype=np.float64)[DIGITS]
            p = np.exp(z - z.max())
            self.cache[prefix] = p / p.sum()
        return self.cache[prefix]


def step_reward(k: int):
    def reward(seq):
        return sum((b - a) % 10 == k for a, b in zip(seq, seq[1:])) / (len(seq) - 1)

    return reward


MCTS_GRID = [dict(c_puct=c, backup=b, prior_temperature=t, fpu=f)
             for c, b, t, f in itertools.product((0.25, 0.5, 1.0, 2.0), ("max", "mean"),
                                                 (1.0, 2.0), (0.0, "parent"))]  # fmt: skip
BON_GRID = [dict(temperature=t) for t in (0.7, 1.0, 1.5, 2.0)]
OLD_MCTS = dict(c_puct=1.5, backup="mean", prior_temperature=1.0, fpu=0.0)  # the previous defaults


def search_score(method, settings, policies, tasks, seeds):
    from tinyllm.generation.mcts import CountingPolicy, best_of_n, mcts_generate

    fn = mcts_generate if method == "mcts" else best_of_n
    rewards, calls = [], []
    for head, k in tasks:
        for seed in seeds:
            counting = CountingPolicy(policies[head])
            _, r = fn(counting, (), LENGTH, step_reward(k), BUDGET, seed=seed, **settings)
            rewards.append(r)
            calls.append(counting.calls)
    return rewards, calls


def mcts_rows(model):
    policies = {h: DigitPolicy(model, h) for h, _ in DEV_TASKS + HELD_OUT}
    rows, dev_seeds, test_seeds = [], (100, 101, 102), (0, 1, 2)
    chosen = {}
    for method, grid in (("mcts", MCTS_GRID), ("best_of_n", BON_GRID)):
        scored = []
        for settings in grid:
            rewards, calls = search_score(method, settings, policies, DEV_TASKS, dev_seeds)
            row = {"experiment": "mcts_dev", "method": method, "settings": settings,
                   "mean_reward": float(np.mean(rewards)),
                   "max_calls_used": max(calls)}  # fmt: skip
            rows.append(row)
            scored.append((row["mean_reward"], settings))
            print(json.dumps(row), flush=True)
        chosen[method] = max(scored, key=lambda s: s[0])[1]  # first best on ties
    finals = (("mcts", chosen["mcts"]), ("best_of_n", chosen["best_of_n"]),
              ("mcts (previous defaults)", OLD_MCTS),
              ("best_of_n (T = 1)", {"temperature": 1.0}))  # fmt: skip
    for name, settings in finals:
        method = "mcts" if name.startswith("mcts") else "best_of_n"
        rewards, calls = search_score(method, settings, policies, HELD_OUT, test_seeds)
        per_seed = [float(np.mean(rewards[i :: len(test_seeds)])) for i in range(len(test_seeds))]
        row = {"experiment": "mcts_test", "method": name, "settings": settings,
               "model_calls": BUDGET, "length": LENGTH, "tasks": len(HELD_OUT),
               "mean_reward": float(np.mean(rewards)), "per_seed_mean": per_seed,
               "rewards": rewards, "max_calls_used": max(calls)}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def plot_mcts(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    dev = [r for r in rows if r["experiment"] == "mcts_dev"]
    labels = [("MCTS " if r["method"] == "mcts" else "BoN ") +
              ",".join(f"{k[:5]}={v}" for k, v in r["settings"].items()) for r in dev]  # fmt: skip
    axes[0].barh(range(len(dev)), [r["mean_reward"] for r in dev],
                 color=["C0" if r["method"] == "mcts" else "C1" for r in dev])  # fmt: skip
    axes[0].set_yticks(range(len(dev)), labels, fontsize=6)
    axes[0].set_xlabel("mean best reward (6 dev tasks x 3 seeds)")
    axes[0].set_title("development set: settings", fontsize=10)
    test = [r for r in rows if r["experiment"] == "mcts_test"]
    for i, r in enumerate(test):
        axes[1].bar(i, r["mean_reward"], color="C0" if r["method"].startswith("mcts") else "C1",
                    alpha=1.0 if "(" not in r["method"] else 0.45)  # fmt: skip
        axes[1].plot([i] * len(r["per_seed_mean"]), r["per_seed_mean"], "k.")
    axes[1].set_xticks(range(len(test)), [r["method"] for r in test], fontsize=7, rotation=10)
    axes[1].set_ylabel(f"mean best reward at {BUDGET} model calls")
    axes[1].set_title("held-out tasks (bars: mean; dots: per seed)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/quant_base")
    ap.add_argument("--draft", default="runs/alignment_base")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--part", choices=["serving", "mcts", "all"], default="all")
    ap.add_argument("--repeats", type=int, default=3, help="serving: runs per point (median)")
    args = ap.parse_args()
    model, *_ = load_run(args.run)
    RESULTS.mkdir(exist_ok=True)
    if args.part in ("serving", "all"):
        draft, *_ = load_run(args.draft)
        rows = serving_rows(model, draft, args.concurrency, args.max_tokens, args.repeats)
        with open(RESULTS / "serving.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        load = np.mean([r["load1"] for r in rows])
        title = (f"{args.run} (draft {args.draft}), {PREFIX_LEN}+{SUFFIX_LEN}-token prompts, "
                 f"{args.max_tokens} new tokens, greedy; CPU float32, shared machine, load "
                 f"{load:.1f}")  # fmt: skip
        plot_serving(rows, title, RESULTS / "serving.png")
        print("wrote", RESULTS / "serving.jsonl", RESULTS / "serving.png")
    if args.part in ("mcts", "all"):
        rows = mcts_rows(model)
        with open(RESULTS / "serving_mcts.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        plot_mcts(rows, RESULTS / "serving_mcts.png")
        print("wrote", RESULTS / "serving_mcts.jsonl", RESULTS / "serving_mcts.png")


if __name__ == "__main__":
    main()
