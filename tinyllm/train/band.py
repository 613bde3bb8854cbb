"""The reference band of the default run: "is my loss curve normal?"

``tinyllm/data/reference_band.json`` holds, for the default ``tinyllm train`` configuration,
the validation loss (bits per byte) at fixed steps as min and max over several seeds, measured
on CPU with ``experiments/reference_band.py``. A run with the same configuration (any seed)
is compared with it at each evaluation.
"""

from __future__ import annotations

import json
from importlib import resources

# The configuration keys that must match for the band to apply (seed and bookkeeping may differ).
BAND_KEYS = (
    "arch", "d_model", "n_layer", "n_head", "n_kv_head", "seq_len", "ffn_hidden", "dropout",
    "tie_embeddings", "steps", "batch_size", "grad_accum", "lr", "min_lr_ratio", "warmup",
    "weight_decay", "beta1", "beta2", "grad_clip", "data", "tokenizer", "eval_batches",
)  # fmt: skip


def load_band() -> dict | None:
    """The stored band, or None when the package has none."""
    try:
        text = resources.files("tinyllm.data").joinpath("reference_band.json").read_text()
    except FileNotFoundError:
        return None
    return json.loads(text)


def band_applies(band: dict | None, config: dict) -> bool:
    return band is not None and all(band["config"].get(k) == config.get(k) for k in BAND_KEYS)


def check(band: dict, step: int, val_bpb: float) -> str:
    """A plain sentence: inside the band, above it, below it, or no band at this step."""
    points = {int(s): (lo, hi) for s, lo, hi in zip(band["steps"], band["min"], band["max"])}
    if step not in points:
        return f"no reference point at step {step}"
    lo, hi = points[step]
    seeds = len(band["seeds"])
    if lo <= val_bpb <= hi:
        return f"inside the reference band [{lo:.3f}, {hi:.3f}] bits/byte ({seeds} seeds)"
    side = "ABOVE" if val_bpb > hi else "below"
    return (
        f"{side} the reference band [{lo:.3f}, {hi:.3f}] bits/byte ({seeds} seeds): "
        + ("this run is learning more slowly than the reference runs did" if side == "ABOVE"
           else "this run is doing better than the reference runs did")
    )  # fmt: skip
