"""Multimodal on scikit-learn's digits: ViT classification, CLIP zero-shot and retrieval,
and captioning with projectors + gated cross-attention, each over seeds.

    nice -n 10 python experiments/multimodal.py                # 3 seeds, all tasks
    nice -n 10 python experiments/multimodal.py --seeds 0 --vit-steps 200   # quick look

Writes experiments/results/multimodal.jsonl (one line per run), a summary table on
stdout (mean and min..max over seeds) and docs/images/vision_attention.png (attention
rollout of the seed-0 ViT) and docs/images/vision_captions.png (seed-0 captions).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _band(rows, key):
    v = np.array([r[key] for r in rows])
    return f"{v.mean():.3f} ({v.min():.3f}..{v.max():.3f})"


def main(argv=None) -> None:
    from tinyllm.vision.plots import plot_attention, plot_captions
    from tinyllm.vision.train import train_caption, train_clip, train_vit

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--vit-steps", type=int, default=1500)
    p.add_argument("--clip-steps", type=int, default=2000)
    p.add_argument("--caption-steps", type=int, default=600)
    p.add_argument("--projector", default="mlp", choices=["linear", "mlp", "perceiver"])
    p.add_argument("--out", default=str(ROOT / "experiments/results/multimodal.jsonl"))
    p.add_argument("--images", default=str(ROOT / "docs/images"))
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    rows = []
    load = os.getloadavg()[0]
    for seed in a.seeds:
        vit, r = train_vit(seed, a.vit_steps, quiet=a.quiet)
        rows.append(r)
        if seed == a.seeds[0]:
            from tinyllm.vision.data import load_digits_split

            d = load_digits_split(seed)
            plot_attention(vit, d.x_test[:8], d.y_test[:8], Path(a.images) / "vision_attention.png")
        _, r = train_clip(seed, a.clip_steps, quiet=a.quiet)
        rows.append(r)
        _, r, (x, words) = train_caption(seed, a.caption_steps, projector=a.projector, vit=vit,
                                         quiet=a.quiet)  # fmt: skip
        rows.append(r)
        if seed == a.seeds[0]:
            plot_captions(x, words, Path(a.images) / "vision_captions.png")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with open(a.out, "w") as f:
        for r in rows:
            f.write(json.dumps({**r, "utc": stamp, "loadavg_1min_at_start": load}) + "\n")
    by = lambda t: [r for r in rows if r["task"] == t]  # noqa: E731
    print(f"seeds {a.seeds}; load average at start {load:.1f} (shared 2-core machine)")
    print(f"ViT test accuracy          {_band(by('vit'), 'test_accuracy')}")
    print(f"CLIP zero-shot accuracy    {_band(by('clip'), 'zero_shot_accuracy')}")
    print(f"CLIP recall@1 (image->text) {_band(by('clip'), 'recall@1')}")
    print(f"CLIP recall@5 (image->text) {_band(by('clip'), 'recall@5')}")
    print(f"caption accuracy ({a.projector})   {_band(by('caption'), 'caption_accuracy')}")


if __name__ == "__main__":
    main()
