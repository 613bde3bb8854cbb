"""Reference bands of the default vision runs: "is my result normal?"

``tinyllm/vision/bands.json`` holds, per task, the settings of the default run and, for
each headline metric, its values over several seeds with their min and max; written by
``python experiments/multimodal.py --write-bands`` from the runs it just made. A band
applies to a run whose settings (BAND_KEYS) equal the band's; the seed may differ.

With n seeds, a run of a new seed lands outside their min..max with probability
2 / (n + 1) when seeds are exchangeable (1/2 for n = 3): "outside" is a prompt to look,
not a failure. A run of one of the band's seeds on the same software reproduces its value.
"""

from __future__ import annotations

import json
from importlib import resources

import numpy as np

__all__ = ["BAND_KEYS", "BAND_METRICS", "band_lines", "load_bands", "make_band", "verdict"]

# the settings that must match for a task's band to apply
BAND_KEYS = {
    "vit": ("steps", "pos_embed"),
    "clip": ("steps",),
    "caption": ("steps", "projector", "vit_steps", "vit_lr_mult", "pos_embed"),
}
# the metrics each band covers
BAND_METRICS = {
    "vit": ("test_accuracy",),
    "clip": ("zero_shot_accuracy", "recall@1", "recall@5"),
    "caption": ("caption_accuracy",),
}


def load_bands() -> dict[str, dict]:
    """{task: band} from the package's bands.json ({} when it is absent)."""
    try:
        text = resources.files("tinyllm.vision").joinpath("bands.json").read_text()
    except FileNotFoundError:
        return {}
    return dict(json.loads(text)["bands"])


def make_band(rows: list[dict]) -> dict:
    """The band of one task from its runs (one per seed, same settings)."""
    task = rows[0]["task"]
    config = {k: rows[0][k] for k in BAND_KEYS[task]}
    for r in rows:
        if r["task"] != task or {k: r[k] for k in BAND_KEYS[task]} != config:
            raise ValueError(f"make_band: runs of different settings: {config} vs {r}")
    seeds = [int(r["seed"]) for r in rows]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"make_band: repeated seeds {seeds}")
    metrics = {}
    for m in BAND_METRICS[task]:
        v = np.array([float(r[m]) for r in rows])
        metrics[m] = {"values": v.tolist(), "min": float(v.min()), "max": float(v.max()),
                      "mean": float(v.mean())}  # fmt: skip
    return {"task": task, "config": config, "seeds": seeds, "metrics": metrics}


def verdict(value: float, lo: float, hi: float, n_seeds: int) -> str:
    """A plain sentence: inside the band, above it or below it (higher is better here)."""
    if lo <= value <= hi:
        return f"inside the reference band [{lo:.3f}, {hi:.3f}] ({n_seeds} seeds)"
    side = "above" if value > hi else "BELOW"
    return f"{side} the reference band [{lo:.3f}, {hi:.3f}] ({n_seeds} seeds)"


def band_lines(metrics: dict, bands: dict | None = None) -> list[str]:
    """One line per banded metric of a finished run, or one line saying why no band applies."""
    bands = load_bands() if bands is None else bands
    task = metrics["task"]
    band = bands.get(task)
    if band is None:
        return [f"no reference band for {task} (measure one: python experiments/multimodal.py "
                "--write-bands)"]  # fmt: skip
    diff = [f"{k}={metrics.get(k)!r} (band: {band['config'][k]!r})"
            for k in BAND_KEYS[task] if metrics.get(k) != band["config"][k]]  # fmt: skip
    if diff:
        return [f"no reference band for this {task} configuration (the band covers the "
                f"default run): {', '.join(diff)}"]  # fmt: skip
    n = len(band["seeds"])
    lines = []
    for m in BAND_METRICS[task]:
        b = band["metrics"][m]
        lines.append(f"{m} {metrics[m]:.3f}: {verdict(metrics[m], b['min'], b['max'], n)}")
    return lines
