"""The reference band of the default run: "is my loss curve normal?"

``tinyllm/data/reference_band.json`` holds, per architecture, the validation loss (bits per
byte) of the default ``tinyllm train --arch <arch>`` configuration at fixed steps, as min and
max over several seeds, measured on CPU with ``experiments/reference_band.py --arch <arch>``.
A run with the same configuration (any seed) is compared with it at each evaluation.

The file is ``{"bands": {key: band}}``, keyed by ``band_key``: the architecture, with
``-moe`` for a mixture-of-experts run (``llama-moe``: ``tinyllm train --moe-experts 8
--moe-top-k 2``), so that an MoE run is never compared with the dense band; a file holding a
single band (the first format, a Llama band only) is read as ``{band_key(band["config"]):
band}``. A key a band's configuration lacks (a field added to TrainConfig after the band was
measured) means that field's default.
"""

from __future__ import annotations

import json
from importlib import resources

from tinyllm.train.config import MAMBA_FIELDS, MOE_FIELDS, saved_value

# The configuration keys that must match for the band to apply (seed and bookkeeping may differ).
BAND_KEYS = (
    "arch", "d_model", "n_layer", "n_head", "n_kv_head", "seq_len", "ffn_hidden", "dropout",
    "tie_embeddings", "steps", "batch_size", "grad_accum", "lr", "min_lr_ratio", "warmup",
    "weight_decay", "beta1", "beta2", "grad_clip", "data", "tokenizer", "eval_batches",
) + MAMBA_FIELDS + MOE_FIELDS  # fmt: skip


def band_key(config: dict) -> str:
    """The key of ``config``'s band: its architecture, ``-moe`` appended for an MoE run."""
    return saved_value(config, "arch") + ("-moe" if saved_value(config, "moe_experts") else "")


def bands_of(data: dict) -> dict[str, dict]:
    """{band key: band} from the contents of a band file, in either format."""
    if "bands" in data:
        return dict(data["bands"])
    return {band_key(data["config"]): data}


def load_bands() -> dict[str, dict]:
    """Every stored band by architecture ({} when the package has no band file)."""
    try:
        text = resources.files("tinyllm.data").joinpath("reference_band.json").read_text()
    except FileNotFoundError:
        return {}
    return bands_of(json.loads(text))


def load_band(key: str = "llama") -> dict | None:
    """The stored band of ``key`` (``band_key``: "llama", "llama-moe", "mamba", ...), or None
    when none was measured."""
    return load_bands().get(key)


def band_mismatches(band: dict | None, config: dict) -> list[str]:
    """The BAND_KEYS where ``config`` differs from the band's, as ``"key=value (band: value)"``
    (a key missing on either side means the field's default)."""
    if band is None:
        return []
    mismatches = []
    for k in BAND_KEYS:
        ours, theirs = saved_value(config, k), saved_value(band["config"], k)
        if ours != theirs:
            mismatches.append(f"{k}={ours!r} (band: {theirs!r})")
    return mismatches


def band_applies(band: dict | None, config: dict) -> bool:
    """True when ``band`` exists and ``config`` matches it on every key of BAND_KEYS."""
    return band is not None and not band_mismatches(band, config)


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
