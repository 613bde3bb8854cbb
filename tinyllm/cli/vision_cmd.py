"""``tinyllm vision train vit|clip|caption``: train on scikit-learn's digits (no download).

    tinyllm vision train vit --steps 2000 --seed 0
    tinyllm vision train clip --steps 3000
    tinyllm vision train caption --projector perceiver --steps 1500

Each run writes a folder (``--out``, default ``runs/vision-<task>-seed<seed>-<time>``) with
``metrics.json``, ``model.npz`` (the state dict) and a PNG (attention rollout for vit,
captions for caption). Progress bars go to stderr. Needs the ``vision`` extra
(scikit-learn, matplotlib).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``vision`` subcommand."""
    parser = subparsers.add_parser("vision", help="ViT, CLIP and captioning on sklearn digits")
    sub = parser.add_subparsers(dest="vision_command", metavar="ACTION")
    train = sub.add_parser("train", help="train vit | clip | caption")
    train.add_argument("task", choices=["vit", "clip", "caption"])
    train.add_argument("--steps", type=int, default=None, help="default 2000/3000/1500")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--projector", default="mlp", choices=["linear", "mlp", "perceiver"])
    train.add_argument("--pos-embed", default="learned", choices=["learned", "sincos", "none"])
    train.add_argument("--out", default=None, help="run folder (default runs/vision-...)")
    train.set_defaults(func=run)
    parser.set_defaults(func=lambda a: parser.print_help() or 0)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from tinyllm.vision.data import load_digits_split
    from tinyllm.vision.plots import plot_attention, plot_captions
    from tinyllm.vision.train import train_caption, train_clip, train_vit

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"runs/vision-{args.task}-seed{args.seed}-{stamp}")
    out.mkdir(parents=True, exist_ok=True)
    steps = args.steps or {"vit": 2000, "clip": 3000, "caption": 1500}[args.task]
    if args.task == "vit":
        model, metrics = train_vit(args.seed, steps, pos_embed=args.pos_embed)
        d = load_digits_split(args.seed)
        plot_attention(model, d.x_test[:8], d.y_test[:8], out / "attention_rollout.png")
    elif args.task == "clip":
        model, metrics = train_clip(args.seed, steps)
    else:
        model, metrics, (x, words) = train_caption(args.seed, steps, projector=args.projector)
        plot_captions(x, words, out / "captions.png")
    np.savez(out / "model.npz", **{k: v.detach().numpy() for k, v in model.state_dict().items()})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics))
    print(f"run folder: {out}")
    return 0
