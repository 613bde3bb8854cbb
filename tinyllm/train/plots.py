"""The loss-curve PNG of a run: training loss and validation bits per byte, band behind (or,
for a non-causal objective, training and validation bits per labelled token)."""

from __future__ import annotations

import json
import math
from pathlib import Path


def plot_run(log_path: Path, out_png: Path, band: dict | None = None, per: str | None = None
             ) -> Path:  # fmt: skip
    """Training loss (bits = nats / ln 2) and validation: bits per byte of the records'
    ``val_bits_per_byte``, or with ``per`` (an objective's labelled token, e.g. "masked
    token") bits per ``per`` of the records' ``val_loss`` (nats per labelled token)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line]
    train = [(r["step"], r["loss"] / math.log(2)) for r in records if "loss" in r]
    if per is None:
        val = [(r["step"], r["val_bits_per_byte"]) for r in records if "val_bits_per_byte" in r]
        train_label, val_label = "train (bits/token)", "validation (bits/byte)"
    else:
        val = [(r["step"], r["val_loss"] / math.log(2)) for r in records if "val_loss" in r]
        train_label, val_label = f"train (bits per {per})", f"validation (bits per {per})"
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    if band is not None:
        ax.fill_between(band["steps"], band["min"], band["max"], color="tab:orange", alpha=0.25,
                        label=f"reference band ({len(band['seeds'])} seeds)")  # fmt: skip
    if train:
        ax.plot(*zip(*train), color="tab:blue", lw=1, label=train_label)
    if val:
        ax.plot(*zip(*val), "o-", color="tab:orange", ms=3, label=val_label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (bits)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(Path(log_path).parent.name)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return out_png
