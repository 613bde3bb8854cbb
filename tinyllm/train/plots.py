"""The loss-curve PNG of a run: training loss and validation bits per byte, band behind."""

from __future__ import annotations

import json
import math
from pathlib import Path


def plot_run(log_path: Path, out_png: Path, band: dict | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line]
    train = [(r["step"], r["loss"] / math.log(2)) for r in records if "loss" in r]
    val = [(r["step"], r["val_bits_per_byte"]) for r in records if "val_bits_per_byte" in r]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    if band is not None:
        ax.fill_between(band["steps"], band["min"], band["max"], color="tab:orange", alpha=0.25,
                        label=f"reference band ({len(band['seeds'])} seeds)")  # fmt: skip
    if train:
        ax.plot(*zip(*train), color="tab:blue", lw=1, label="train (bits/token)")
    if val:
        ax.plot(*zip(*val), "o-", color="tab:orange", ms=3, label="validation (bits/byte)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (bits)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(Path(log_path).parent.name)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return out_png
