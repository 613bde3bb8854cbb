"""Learning-rate multipliers for ``LambdaLR``: linear warmup followed by linear, cosine,
inverse-square-root or warmup-stable-decay (WSD). PyTorch has no such functions; the formulas
and step convention follow Hugging Face ``transformers.optimization`` (``get_*_schedule``),
which most training code uses. Step s counts optimizer steps from 0; W = warmup steps.

    warmup(s)            = s / max(1, W)                                 for s < W  (0 at s = 0)
    linear_with_warmup   = max(0, (T - s) / max(1, T - W))               for s >= W
    cosine_with_warmup   = max(0, m + (1 - m) (1 + cos(2 pi c p)) / 2),  p = (s - W)/max(1, T - W)
                           (c = num_cycles, 0.5: one half period down to m = min_lr_ratio)
    inverse_sqrt         = 1 / sqrt((s + tau - W) / tau)                 tau = timescale (W)
    warmup_stable_decay  = 1 during [W, W + S), then decays over D steps to m with shape
                           linear 1 - q, cosine (1 + cos(pi q)) / 2 or 1-sqrt 1 - sqrt(q),
                           q = (s - W - S) / max(1, D), rescaled to m + (1 - m) f; m afterwards.

(``lr_scheduler.warmup_cosine`` is tinyllm's older schedule, with (s + 1) / W warmup.)
"""

from __future__ import annotations

import math
from collections.abc import Callable


def _check(name: str, **counts: int) -> None:
    for arg, v in counts.items():
        if v is None:
            continue
        if not isinstance(v, int) or v < 0:
            raise ValueError(f"{name}: {arg} must be a non-negative int, got {v!r}")


def linear_with_warmup(num_warmup_steps: int, num_training_steps: int) -> Callable[[int], float]:
    """0 -> 1 linearly over the warmup, then 1 -> 0 linearly at ``num_training_steps``."""
    _check("linear_with_warmup", num_warmup_steps=num_warmup_steps,
           num_training_steps=num_training_steps)  # fmt: skip
    W, T = num_warmup_steps, num_training_steps

    def factor(step: int) -> float:
        if step < W:
            return step / max(1, W)
        return max(0.0, (T - step) / max(1, T - W))

    return factor


def cosine_with_warmup(
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
    min_lr_ratio: float = 0.0,
) -> Callable[[int], float]:
    """Linear warmup, then a cosine from 1 to ``min_lr_ratio`` (HF's
    ``get_cosine_schedule_with_warmup``, and its ``..._with_min_lr`` variant for m > 0)."""
    _check("cosine_with_warmup", num_warmup_steps=num_warmup_steps,
           num_training_steps=num_training_steps)  # fmt: skip
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"cosine_with_warmup: min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    W, T = num_warmup_steps, num_training_steps

    def factor(step: int) -> float:
        if step < W:
            return step / max(1, W)
        p = (step - W) / max(1, T - W)
        f = 0.5 * (1.0 + math.cos(math.pi * 2.0 * num_cycles * p))
        return max(0.0, min_lr_ratio + (1.0 - min_lr_ratio) * f)

    return factor


def inverse_sqrt(num_warmup_steps: int, timescale: int | None = None) -> Callable[[int], float]:
    """Linear warmup, then 1 / sqrt((s + tau - W) / tau): equal to 1 at s = W, halving at
    s = W + 3 tau (HF's ``get_inverse_sqrt_schedule``; tau defaults to W, or 10^4 if W = 0)."""
    _check("inverse_sqrt", num_warmup_steps=num_warmup_steps, timescale=timescale)
    W = num_warmup_steps
    tau = timescale if timescale is not None else (W or 10_000)
    if tau <= 0:
        raise ValueError(f"inverse_sqrt: timescale must be positive, got {tau}")

    def factor(step: int) -> float:
        if step < W:
            return step / max(1, W)
        return 1.0 / math.sqrt((step + tau - W) / tau)

    return factor


_DECAYS = {
    "linear": lambda q: 1.0 - q,
    "cosine": lambda q: 0.5 * (1.0 + math.cos(math.pi * q)),
    "1-sqrt": lambda q: 1.0 - math.sqrt(q),
}


def warmup_stable_decay(
    num_warmup_steps: int,
    num_stable_steps: int,
    num_decay_steps: int,
    min_lr_ratio: float = 0.0,
    decay_type: str = "cosine",
) -> Callable[[int], float]:
    """WSD (MiniCPM, Hu et al. 2024): linear warmup, a constant plateau, a short decay
    (``decay_type`` linear, cosine or 1-sqrt) to ``min_lr_ratio``, then flat at that ratio.
    The warmup also starts at ``min_lr_ratio`` (HF's ``get_wsd_schedule`` convention)."""
    _check("warmup_stable_decay", num_warmup_steps=num_warmup_steps,
           num_stable_steps=num_stable_steps, num_decay_steps=num_decay_steps)  # fmt: skip
    if decay_type not in _DECAYS:
        raise ValueError(
            f"warmup_stable_decay: decay_type must be one of {sorted(_DECAYS)}, got {decay_type!r}"
        )
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"warmup_stable_decay: min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    W, S, D, m = num_warmup_steps, num_stable_steps, num_decay_steps, min_lr_ratio
    decay = _DECAYS[decay_type]

    def factor(step: int) -> float:
        if step < W:
            return m + (1.0 - m) * step / max(1, W)
        if step < W + S:
            return 1.0
        if step < W + S + D:
            q = (step - W - S) / max(1, D)
            return max(0.0, m + (1.0 - m) * decay(q))
        return m

    return factor
