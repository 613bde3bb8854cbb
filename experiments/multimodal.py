"""Multimodal on scikit-learn's digits: ViT classification, CLIP zero-shot and retrieval,
and captioning with projectors + gated cross-attention, each over seeds.

    nice -n 10 python experiments/multimodal.py                  # 3 seeds, the default runs
    nice -n 10 python experiments/multimodal.py --write-bands    # ... and store their bands
    nice -n 10 python experiments/multimodal.py --caption-ablation   # why captioning was weak
    nice -n 10 python experiments/multimodal.py --pictures       # only the seed-0 pictures

The default runs are exactly ``tinyllm vision train vit|clip|caption`` (tinyllm/vision/
runs.py) for each seed. Writes experiments/results/multimodal.jsonl (one line per run),
prints a JSON summary (mean, min, max over seeds), with ``--write-bands`` the reference
bands in tinyllm/vision/bands.json (what ``tinyllm vision train`` compares a run with),
and the pictures of the first seed: docs/images/vision_rollout_seed0.png (attention
rollout) and docs/images/vision_caption_examples_seed0.png (captions, failures included).

``--caption-ablation`` trains the ViT of each seed once and then the captioner under
variants (ViT frozen or fine-tuned at 1x / 0.1x the LM's rate, longer training, each
projector, the gates' learning-rate multiplier, a ViT from scratch), writing
experiments/results/multimodal_caption_ablation_<holdout>.jsonl; ``--holdout validation``
scores the variants on a validation part of the training split (the test images unused),
the split on which a setting may be chosen.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BANDS = ROOT / "tinyllm" / "vision" / "bands.json"

# name -> train_caption keyword arguments ("vit": None = a ViT trained inside the captioner)
ABLATION = {
    "finetune-vit (old default)": {"vit_lr_mult": 1.0},
    "finetune-vit, 2000 steps": {"vit_lr_mult": 1.0, "steps": 2000},
    "finetune-vit at 0.1x lr": {"vit_lr_mult": 0.1},
    "frozen-vit mlp (new default)": {"vit_lr_mult": 0.0},
    "frozen-vit linear": {"vit_lr_mult": 0.0, "projector": "linear"},
    "frozen-vit perceiver": {"vit_lr_mult": 0.0, "projector": "perceiver"},
    "frozen-vit, gates at 1x lr": {"vit_lr_mult": 0.0, "gate_lr_mult": 1.0},
    "vit from scratch in the captioner": {"vit": None},
}


def _summary(rows, key):
    v = np.array([r[key] for r in rows])
    return {"mean": round(float(v.mean()), 4), "min": round(float(v.min()), 4),
            "max": round(float(v.max()), 4), "values": [round(float(x), 4) for x in v]}  # fmt: skip


def default_runs(a) -> None:
    from tinyllm.vision.band import BAND_METRICS, make_band
    from tinyllm.vision.data import load_digits_split
    from tinyllm.vision.plots import caption_examples, plot_attention, plot_captions
    from tinyllm.vision.runs import TASKS, run_task

    rows = []
    load = os.getloadavg()[0]
    images = Path(a.images)
    seeds, tasks = (a.seeds[:1], ("vit", "caption")) if a.pictures else (a.seeds, TASKS)
    for seed in seeds:
        for task in tasks:
            run = run_task(task, seed, quiet=a.quiet)
            rows.append(run.metrics)
            if seed != a.seeds[0]:
                continue
            if task == "vit":
                d = load_digits_split(seed)
                path = images / f"vision_rollout_seed{seed}.png"
                plot_attention(run.model, d.x_test[:8], d.y_test[:8], path, title=f"seed {seed}")
            if task == "caption":
                x, words, labels = run.examples
                idx = caption_examples(words, labels)
                plot_captions(x[idx], [words[i] for i in idx], labels[idx],
                              images / f"vision_caption_examples_seed{seed}.png",
                              title=f"seed {seed}; last row: the first failures")  # fmt: skip
    if a.pictures:
        print(json.dumps({"pictures": str(images), "runs": rows}))
        return
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with open(a.out, "w") as f:
        for r in rows:
            f.write(json.dumps({**r, "utc": stamp, "loadavg_1min_at_start": load}) + "\n")
    summary = {"seeds": a.seeds, "loadavg_1min_at_start": load, "machine": "shared 2-core CPU"}
    for task in TASKS:
        of_task = [r for r in rows if r["task"] == task]
        for m in BAND_METRICS[task]:
            summary[f"{task}/{m}"] = _summary(of_task, m)
        summary[f"{task}/train_seconds"] = _summary(of_task, "train_seconds")
    summary["caption/vit_test_accuracy"] = _summary([r for r in rows if r["task"] == "caption"],
                                                    "vit_test_accuracy")  # fmt: skip
    print(json.dumps(summary, indent=1))
    if a.write_bands:
        bands = {t: make_band([r for r in rows if r["task"] == t]) for t in TASKS}
        for b in bands.values():
            command = "python experiments/multimodal.py --write-bands"
            b["measured"] = {"utc": stamp, "loadavg_1min_at_start": load, "command": command}
        BANDS.write_text(json.dumps({"bands": bands}, indent=1) + "\n")
        print(f"bands written to {BANDS}")


def caption_ablation(a) -> None:
    import tinyllm
    from tinyllm.models.vit import VisionTransformer
    from tinyllm.vision.runs import DEFAULT_STEPS
    from tinyllm.vision.train import train_caption, train_vit

    rows = []
    load = os.getloadavg()[0]
    for seed in a.seeds:
        vit, vm = train_vit(seed, DEFAULT_STEPS["vit"], holdout=a.holdout, quiet=a.quiet)
        state = {k: v.detach().numpy().copy() for k, v in vit.state_dict().items()}
        for name, kw in ABLATION.items():
            kw = dict(kw)
            steps = kw.pop("steps", DEFAULT_STEPS["caption"])
            if "vit" not in kw:  # a fresh copy of the seed's trained ViT for each variant
                fresh = VisionTransformer(8, 2, 1, 10, 32, 2, 4)
                fresh.load_state_dict({k: tinyllm.tensor(v) for k, v in state.items()})
                kw["vit"] = fresh
            _, m, _ = train_caption(seed, steps, holdout=a.holdout, quiet=a.quiet, **kw)
            row = {"variant": name, "holdout": a.holdout, "seed": seed, "steps": steps,
                   "projector": m["projector"],
                   "vit_lr_mult": m["vit_lr_mult"], "caption_accuracy": m["caption_accuracy"],
                   "vit_test_accuracy": vm["test_accuracy"], "gates": m["gates"],
                   "train_seconds": m["train_seconds"]}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = a.ablation_out or str(
        ROOT / "experiments/results" / f"multimodal_caption_ablation_{a.holdout}.jsonl"
    )
    with open(out, "w") as f:
        for r in rows:
            f.write(json.dumps({**r, "utc": stamp, "loadavg_1min_at_start": load}) + "\n")
    summary = {name: _summary([r for r in rows if r["variant"] == name], "caption_accuracy")
               for name in ABLATION}  # fmt: skip
    summary["vit accuracy on the same holdout (reference)"] = _summary(
        [r for r in rows if r["variant"] == next(iter(ABLATION))], "vit_test_accuracy"
    )
    result = {"seeds": a.seeds, "holdout": a.holdout, "caption_accuracy": summary}
    print(json.dumps(result, indent=1))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--write-bands", action="store_true", help="store the bands in the package")
    p.add_argument("--caption-ablation", action="store_true", help="the captioning variants")
    p.add_argument("--out", default=str(ROOT / "experiments/results/multimodal.jsonl"))
    p.add_argument("--ablation-out", default=None)
    p.add_argument("--images", default=str(ROOT / "docs/images"))
    p.add_argument("--holdout", default="test", choices=["test", "validation"],
                   help="--caption-ablation: evaluate on the test split or a validation part "
                   "of the training split")  # fmt: skip
    p.add_argument("--pictures", action="store_true", help="only the first seed's pictures")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    if a.write_bands and a.pictures:
        p.error("--write-bands needs every default run, not --pictures")
    if a.write_bands and sorted(a.seeds) != [0, 1, 2]:
        p.error("--write-bands: the bands are measured on seeds 0 1 2")
    if a.caption_ablation:
        caption_ablation(a)
    else:
        default_runs(a)


if __name__ == "__main__":
    main()
