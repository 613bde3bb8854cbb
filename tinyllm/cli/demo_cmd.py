"""``tinyllm demo``: train a small MLP on two interleaved spirals, then gradcheck it.

A first look at the engine: a 2-layer MLP (Linear -> tanh -> Linear) learns to separate two
spirals with AdamW and cross-entropy; then the whole model's gradient is checked against
float64 finite differences, parameter by parameter, and the ops it used are gradchecked.
"""

from __future__ import annotations

import math
import time

import numpy as np


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="train a small MLP on two spirals and gradcheck it")
    p.add_argument("--steps", type=int, default=400, help="training steps (default 400)")
    p.add_argument("--hidden", type=int, default=64, help="hidden width (default 64)")
    p.add_argument("--lr", type=float, default=1e-2, help="AdamW learning rate (default 1e-2)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def spirals(n_per_class: int, rng: np.random.Generator, noise: float = 0.1):
    """Two interleaved spirals in 2-D: points [2n, 2] float32 and labels [2n] int64."""
    t = np.sqrt(rng.uniform(0, 1, n_per_class)) * 3 * math.pi
    a = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (3 * math.pi)
    x = np.concatenate([a, -a]) + noise * rng.standard_normal((2 * n_per_class, 2)) / 3
    y = np.concatenate([np.zeros(n_per_class), np.ones(n_per_class)]).astype(np.int64)
    return x.astype(np.float32), y


def build_mlp(hidden: int):
    from tinyllm import nn

    return nn.Sequential(
        nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 2)
    )


def run(args) -> int:
    from tqdm import tqdm

    import tinyllm
    import tinyllm.functional as F
    from tinyllm.cli.gradcheck_cmd import gradcheck_rows
    from tinyllm.gradcheck import gradcheck_parameters

    tinyllm.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x_train, y_train = spirals(500, rng)
    x_test, y_test = spirals(500, rng)
    model = build_mlp(args.hidden)
    opt = tinyllm.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    X, Y = tinyllm.tensor(x_train), tinyllm.tensor(y_train)
    t0 = time.perf_counter()
    bar = tqdm(range(args.steps), desc="training MLP", unit="step")
    for _ in bar:
        loss = F.cross_entropy(model(X), Y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    seconds = time.perf_counter() - t0
    with tinyllm.no_grad():
        accuracy = float((model(tinyllm.tensor(x_test)).argmax(-1).numpy() == y_test).mean())
    print(
        f"\nMLP {model.num_parameters()} parameters, {args.steps} AdamW steps in {seconds:.1f} s:"
    )
    print(f"  final training loss {loss.item():.4f}, test accuracy {accuracy:.3f}")

    print("\nWhole-model gradient vs float64 finite differences (random cotangent):")
    model.double()
    xs, ys = tinyllm.tensor(x_train[:64].astype(np.float64)), tinyllm.tensor(y_train[:64])
    print(f"{'parameter':<12} {'shape':<12} {'max abs err':>12} {'max rel err':>12}  result")
    failures = 0
    rows = gradcheck_parameters(model, lambda: F.cross_entropy(model(xs), ys, reduction="none"))
    for row in rows:
        failures += not row["passed"]
        print(
            f"{row['parameter']:<12} {str(row['shape']):<12} {row['max_abs_error']:>12.2e} "
            f"{row['max_rel_error']:>12.2e}  {'pass' if row['passed'] else 'FAIL'}"
        )

    print("\nThe ops the MLP uses, from the op registry (`tinyllm gradcheck` runs them all):")
    print(f"{'op':<16} {'case':<34} {'max abs err':>12} {'max rel err':>12}  result")
    for row in gradcheck_rows(["linear", "tanh", "cross_entropy"]):
        failures += not row["passed"]
        print(
            f"{row['op']:<16} {row['case'][:34]:<34} {row['max_abs_error']:>12.2e} "
            f"{row['max_rel_error']:>12.2e}  {'pass' if row['passed'] else 'FAIL'}"
        )
    return 1 if failures else 0
