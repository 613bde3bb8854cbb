"""Dense Llama vs MoE Llama at equal active parameters, and router collapse vs balancing.

    nice -n 10 python experiments/moe.py [--steps 200] [--eval-interval 20] [--seed 0]

Every run is ``tinyllm train`` (``tinyllm.train.train``) on the embedded corpus, byte-level,
d_model 128, 2 layers, 4 heads, seq 64, batch 8, same seed and batches:

- dense: the SwiGLU FFN of width F = 384 (Llama's default for d 128);
- MoE runs: 8 experts of width F/2 = 192, top-2, so each token's FFN does the dense work
  (active FFN parameters equal; the router adds d x E = 1024 per layer), with
    * none:       no balancing (aux coef 0, z coef 0), softmax-then-top-k (Mixtral)
    * switch:     Switch loss 0.01 + z-loss 0.001
    * aux_free:   DeepSeek-V3's selection bias (rate 1e-3), no aux loss
    * noisy:      Shazeer's noisy top-k, no aux loss.

Writes experiments/results/moe.jsonl (one line per run: parameters, validation bits/byte,
median tokens/s of the steps, per-evaluation expert load and its normalized entropy),
moe_loss.png (training loss curves) and moe_load.png (expert-load heatmaps over time of
layer 0 for each MoE run, and the load entropy over time: 1 = uniform, 0 = one expert).

    nice -n 10 python experiments/moe.py --timing [--reps 15]

times one training step (forward, backward, AdamW update; batch 8 x 64) of the dense and
the "switch" MoE model, alternating the two so that the shared machine's load hits both
alike; prints the medians and writes experiments/results/moe_timing.json. The per-run
tokens/s in moe.jsonl come from separate runs and are only indicative.

    nice -n 10 python experiments/moe.py --decode-timing [--reps 3]

times ``generate`` (greedy, batch 1, a 16-byte prompt, 112 new tokens: the context fills
the default seq_len 128) of the MoE default model of ``tinyllm train --moe-experts 8
--moe-top-k 2`` (d 256, 4 layers, untrained weights: the routing work is the same) with the
KV cache (``Decoder``, MoE FFN in array code) and without it (the full forward over the
context for every token), alternating; checks both give the same tokens; writes
experiments/results/moe_decode_timing.json.

    python experiments/moe.py --routing-profile [--reps 5]

profiles (cProfile) training steps of the MoE default model (batch 16 x 128) and prints the
share of the step spent in routing's integer work (top-k selection, the sort of slots by
expert): whether the permutation is hot enough to deserve a Numba kernel.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # run as a script: one thread, set before NumPy loads its BLAS
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from tinyllm.train import TrainConfig, train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BASE = dict(d_model=128, n_layer=2, n_head=4, seq_len=64, batch_size=8, lr=3e-3, warmup=20,
            eval_batches=4, log_interval=5, sample_tokens=0)  # fmt: skip
MOE = dict(moe_experts=8, moe_top_k=2, moe_expert_hidden=192)
RUNS = {
    "dense": {},
    "none": {**MOE, "moe_aux_coef": 0.0, "moe_z_coef": 0.0},
    "switch": {**MOE, "moe_aux_coef": 0.01, "moe_z_coef": 0.001},
    "aux_free": {**MOE, "moe_router": "aux_free", "moe_aux_coef": 0.0, "moe_z_coef": 0.0},
    "noisy": {**MOE, "moe_router": "noisy_topk", "moe_aux_coef": 0.0, "moe_z_coef": 0.0},
}


def entropy(load: np.ndarray) -> np.ndarray:
    """Normalized entropy of each row's load distribution: 1 uniform, 0 one expert."""
    p = load / np.maximum(load.sum(-1, keepdims=True), 1)
    h = -(p * np.log(np.where(p > 0, p, 1))).sum(-1)
    return h / np.log(load.shape[-1])


def run(name: str, steps: int, eval_interval: int, seed: int, out: Path) -> dict:
    config = TrainConfig(**BASE, **RUNS[name], steps=steps, eval_interval=eval_interval,
                         checkpoint_interval=10 * steps, seed=seed, out_dir=str(out),
                         name=name)  # fmt: skip
    result = train(config, progress=False, echo=lambda *a: None)
    log = [json.loads(x) for x in (result.run_dir / "log.jsonl").read_text().splitlines()]
    steps_log = [r for r in log if "loss" in r]
    evals = [r for r in log if "val_bits_per_byte" in r]
    from tinyllm.models import build_model
    from tinyllm.train.loop import model_config_for

    params = build_model(model_config_for(config, 256)).num_parameters()
    record = {
        "run": name, "parameters": params, "val_bits_per_byte": result.val_bits_per_byte,
        "loss": [(r["step"], r["loss"]) for r in steps_log],
        "tokens_per_s_median": float(np.median([r["tokens_per_s"] for r in steps_log[1:]])),
        "eval_steps": [r["step"] for r in evals],
    }  # fmt: skip
    if "expert_load" in evals[0]:
        load = np.array([r["expert_load"] for r in evals])  # [evals, layers, experts]
        record["expert_load"] = load.tolist()
        record["load_entropy"] = entropy(load).tolist()  # [evals, layers]
        record["max_expert_share"] = (load.max(-1) / load.sum(-1)).tolist()
    print(f"{name:>8}: {params:,} params, val {result.val_bits_per_byte:.4f} bits/byte, "
          f"{record['tokens_per_s_median']:,.0f} tok/s"
          + (f", final load entropy {record['load_entropy'][-1]}" if "expert_load" in record
             else ""), flush=True)  # fmt: skip
    return record


def plot(records: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in records:
        s, loss = zip(*r["loss"])
        ax.plot(s, loss, label=f"{r['run']} ({r['val_bits_per_byte']:.3f} bpb)")
    ax.set(xlabel="step", ylabel="train loss (nats/token)", title="dense vs MoE (equal active)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "moe_loss.png", dpi=120)
    moe = [r for r in records if "expert_load" in r]
    fig, axes = plt.subplots(1, len(moe) + 1, figsize=(4 * (len(moe) + 1), 3.6))
    for ax, r in zip(axes, moe):
        load = np.array(r["expert_load"])[:, 0, :]  # layer 0: [evals, experts]
        share = load / load.sum(-1, keepdims=True)
        im = ax.imshow(share.T, aspect="auto", vmin=0, vmax=1, cmap="viridis",
                       extent=[0, r["eval_steps"][-1], 7.5, -0.5])  # fmt: skip
        ax.set(title=f"{r['run']}: layer 0 load", xlabel="step", ylabel="expert")
    fig.colorbar(im, ax=axes[len(moe) - 1])
    ax = axes[-1]
    for r in moe:
        ax.plot(r["eval_steps"], np.array(r["load_entropy"]).mean(1), marker="o", label=r["run"])
    ax.set(title="load entropy (mean of layers)", xlabel="step", ylim=(0, 1.05))
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "moe_load.png", dpi=120)


def timing(reps: int, seed: int) -> dict:
    """Median seconds per training step of the dense and the MoE model, interleaved."""
    import time

    import tinyllm
    from tinyllm.data.batches import random_windows
    from tinyllm.models import build_model
    from tinyllm.train.loop import lm_loss, make_optimizer, model_config_for
    from tinyllm.train.tokens import load_tokens

    data = load_tokens(None, None)
    models = {}
    for name in ("dense", "switch"):
        config = TrainConfig(**BASE, **RUNS[name], seed=seed)
        tinyllm.manual_seed(seed)
        model = build_model(model_config_for(config, data.vocab_size))
        models[name] = (model, make_optimizer(model, config), config)
    rng = np.random.default_rng(seed)
    times = {name: [] for name in models}
    for rep in range(reps + 2):  # the first two rounds warm up (allocations, Numba)
        x, y = random_windows(data.train, BASE["batch_size"], BASE["seq_len"], rng)
        for name, (model, opt, _config) in models.items():
            t0 = time.perf_counter()
            loss = lm_loss(model, x, y, "cpu")
            for m in model.modules():
                if getattr(m, "aux_loss", None) is not None:
                    loss = loss + m.aux_loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            if rep >= 2:
                times[name].append(time.perf_counter() - t0)
    tokens = BASE["batch_size"] * BASE["seq_len"]
    out = {name: {"median_s": float(np.median(t)), "tokens_per_s": tokens / float(np.median(t)),
                  "reps": len(t)} for name, t in times.items()}  # fmt: skip
    out["moe_over_dense_time"] = out["switch"]["median_s"] / out["dense"]["median_s"]
    print(json.dumps(out, indent=1))
    return out


def decode_timing(reps: int, seed: int) -> dict:
    """Median new tokens/s of cached and uncached greedy generation of the MoE default model."""
    import time

    import tinyllm
    from tinyllm.models import build_model
    from tinyllm.train.loop import model_config_for

    config = TrainConfig(moe_experts=8, moe_top_k=2, seed=seed)
    tinyllm.manual_seed(seed)
    model = build_model(model_config_for(config, 256))
    prompt = tinyllm.tensor(np.random.default_rng(seed).integers(0, 256, (1, 16)))
    new = config.seq_len - 16
    times, outs = {"cached": [], "uncached": []}, {}
    for rep in range(reps + 1):  # the first round warms up
        for name in times:
            t0 = time.perf_counter()
            out = model.generate(prompt, new, temperature=0, use_cache=name == "cached")
            if rep:
                times[name].append(time.perf_counter() - t0)
            outs[name] = out.numpy()
    if not np.array_equal(outs["cached"], outs["uncached"]):
        raise SystemExit("cached and uncached decoding gave different tokens")
    result = {name: {"median_s": float(np.median(t)), "new_tokens_per_s": new / float(np.median(t)),
                     "reps": len(t)} for name, t in times.items()}  # fmt: skip
    result["speedup"] = result["uncached"]["median_s"] / result["cached"]["median_s"]
    result["new_tokens"], result["prompt_tokens"] = new, 16
    print(json.dumps(result, indent=1))
    return result


def routing_profile(reps: int, seed: int) -> dict:
    """Share of a training step of the MoE default model spent in routing's integer work."""
    import cProfile
    import pstats
    import time

    import tinyllm
    import tinyllm.functional as F
    from tinyllm.models import build_model
    from tinyllm.train.loop import make_optimizer, model_config_for

    config = TrainConfig(moe_experts=8, moe_top_k=2, seed=seed)
    tinyllm.manual_seed(seed)
    model = build_model(model_config_for(config, 256))
    opt = make_optimizer(model, config)
    rng = np.random.default_rng(seed)

    def step():
        x = rng.integers(0, 256, (config.batch_size, config.seq_len))
        y = rng.integers(0, 256, (config.batch_size * config.seq_len,))
        loss = F.cross_entropy(model(tinyllm.tensor(x)).reshape(-1, 256), tinyllm.tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    profile = cProfile.Profile()
    t0 = time.perf_counter()
    profile.enable()
    for _ in range(reps):
        step()
    profile.disable()
    total = time.perf_counter() - t0
    names = ("expert_permutation", "topk_indices")
    spent = {name: 0.0 for name in names}
    for (_, _, name), stat in pstats.Stats(profile).stats.items():
        if name in spent:
            spent[name] += stat[3]  # cumulative seconds
    result = {"steps": reps, "step_s": total / reps,
              **{f"{n}_share": spent[n] / total for n in names}}  # fmt: skip
    print(json.dumps(result, indent=1))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--eval-interval", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("--timing", action="store_true", help="time dense vs MoE steps only")
    ap.add_argument("--decode-timing", action="store_true",
                    help="time cached vs uncached decoding of the MoE default model")  # fmt: skip
    ap.add_argument("--routing-profile", action="store_true",
                    help="step share of top-k and the expert permutation")  # fmt: skip
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    if args.routing_profile:
        routing_profile(min(args.reps, 5), args.seed)
        return
    if args.decode_timing:
        result = decode_timing(args.reps, args.seed)
        (RESULTS / "moe_decode_timing.json").write_text(json.dumps(result, indent=1) + "\n")
        return
    if args.timing:
        result = timing(args.reps, args.seed)
        (RESULTS / "moe_timing.json").write_text(json.dumps(result, indent=1) + "\n")
        return
    with tempfile.TemporaryDirectory() as tmp:
        records = [run(n, args.steps, args.eval_interval, args.seed, Path(tmp)) for n in args.runs]
    with open(RESULTS / "moe.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps({**r, "steps": args.steps, "seed": args.seed}) + "\n")
    plot(records)


if __name__ == "__main__":
    main()
