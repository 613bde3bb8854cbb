"""``tinyllm vision train vit|clip|caption``: train on scikit-learn's digits (no download).

    tinyllm vision train vit                 # 1500 steps, seed 0
    tinyllm vision train clip --steps 3000
    tinyllm vision train caption --projector perceiver

``caption`` first trains the ViT classifier of the same seed (``--vit-steps``), then the
captioner on its tokens with the ViT frozen (``--vit-lr-mult 0``; 1 fine-tunes it at the
LM's learning rate). Each run writes a folder (``--out``, default
``runs/vision-<task>-seed<seed>-<time>``) with ``metrics.json``, ``model.safetensors`` (the
state dict, via tinyllm.io) and a PNG (attention rollout for vit, captions for caption),
and ends by comparing its metrics with the reference band of the default run
(``tinyllm/vision/bands.json``). Progress bars go to stderr. Needs the ``vision`` extra
(scikit-learn, matplotlib).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``vision`` subcommand."""
    from tinyllm.vision.runs import DEFAULT_STEPS

    parser = subparsers.add_parser("vision", help="ViT, CLIP and captioning on sklearn digits")
    sub = parser.add_subparsers(dest="vision_command", metavar="ACTION")
    train = sub.add_parser("train", help="train vit | clip | caption")
    train.add_argument("task", choices=["vit", "clip", "caption"])
    steps = "/".join(str(DEFAULT_STEPS[t]) for t in ("vit", "clip", "caption"))
    train.add_argument("--steps", type=int, default=None, help=f"default {steps}")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--projector", default="mlp", choices=["linear", "mlp", "perceiver"])
    train.add_argument("--pos-embed", default="learned", choices=["learned", "sincos", "none"])
    vit_help = f"caption: steps of its ViT (default {DEFAULT_STEPS['vit']})"
    train.add_argument("--vit-steps", type=int, default=None, help=vit_help)
    mult_help = "caption: the ViT's lr / the LM's (0 = frozen, the default)"
    train.add_argument("--vit-lr-mult", type=float, default=0.0, help=mult_help)
    train.add_argument("--out", default=None, help="run folder (default runs/vision-...)")
    train.set_defaults(func=run)
    parser.set_defaults(func=lambda a: parser.print_help() or 0)


def run(args: argparse.Namespace) -> int:
    from tinyllm.io.checkpoint import save_checkpoint
    from tinyllm.vision.band import band_lines
    from tinyllm.vision.data import load_digits_split
    from tinyllm.vision.plots import plot_attention, plot_captions
    from tinyllm.vision.runs import run_task

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"runs/vision-{args.task}-seed{args.seed}-{stamp}")
    out.mkdir(parents=True, exist_ok=True)
    result = run_task(args.task, args.seed, args.steps, projector=args.projector,
                      pos_embed=args.pos_embed, vit_steps=args.vit_steps,
                      vit_lr_mult=args.vit_lr_mult)  # fmt: skip
    metrics = result.metrics
    if args.task == "vit":
        d = load_digits_split(args.seed)
        plot_attention(result.model, d.x_test[:8], d.y_test[:8], out / "attention_rollout.png",
                       title=f"seed {args.seed}")  # fmt: skip
    elif args.task == "caption":
        x, words, labels = result.examples
        plot_captions(x[:12], words[:12], labels[:12], out / "captions.png",
                      title=f"seed {args.seed}")  # fmt: skip
    arrays = {k: v.detach().numpy() for k, v in result.model.state_dict().items()}
    save_checkpoint(out / "model.safetensors", arrays, {"vision": metrics})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics))
    for line in band_lines(metrics):
        print(line)
    print(f"run folder: {out}")
    return 0
