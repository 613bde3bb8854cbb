"""``tinyllm train --precision fp32|fp16|bf16``: the autocast context and loss scaler of a run.

    fp32  full precision; no autocast, no scaler (the loop is the float32 loop, bit for bit)
    bf16  autocast(bfloat16); no scaler: bfloat16 has float32's exponent range, so
          gradients neither overflow nor underflow more than in float32
    fp16  autocast(float16) + GradScaler: the loss is multiplied by S (2^16 at start) before
          backward; a step whose gradients hold inf/NaN is skipped and S halves; S doubles
          after ``loss_scale_growth_interval`` clean steps (torch.amp's rule)

Parameters and optimizer moments stay float32 (master weights) in every mode; evaluation
runs under the same autocast as training.
"""

from __future__ import annotations

import contextlib

from tinyllm.amp.autocast import autocast
from tinyllm.amp.grad_scaler import GradScaler

PRECISIONS = ("fp32", "fp16", "bf16")
AUTOCAST_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def precision_context(precision: str, device: str = "cpu"):
    """The autocast region forward passes (and losses) of this precision run in."""
    check_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return autocast(device, dtype=AUTOCAST_DTYPES[precision])


def make_grad_scaler(precision: str, growth_interval: int = 2000, device: str = "cpu"):
    """A GradScaler enabled for fp16 only (torch.amp's defaults: S_0 2^16, x2, x0.5)."""
    check_precision(precision)
    return GradScaler(device, growth_interval=growth_interval, enabled=precision == "fp16")
