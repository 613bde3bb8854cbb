"""Learning-rate schedules (PyTorch's ``LambdaLR`` interface) and warmup + cosine decay.

warmup_cosine(step) = step / warmup                                  for step < warmup
                    = min_ratio + (1 - min_ratio) (1 + cos(pi s)) / 2 afterwards,
                      s = (step - warmup) / (total - warmup), clipped to [0, 1]
"""

from __future__ import annotations

import math
from collections.abc import Callable

from tinyllm.optim.optimizer import Optimizer


class LambdaLR:
    """lr = base_lr * lr_lambda(epoch); call ``step()`` after each ``optimizer.step()``."""

    def __init__(
        self, optimizer: Optimizer, lr_lambda: Callable[[int], float], last_epoch: int = -1
    ):
        self.optimizer = optimizer
        self.lr_lambda = lr_lambda
        self.base_lrs = [g.setdefault("initial_lr", g["lr"]) for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def step(self) -> None:
        self.last_epoch += 1
        factor = self.lr_lambda(self.last_epoch)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict) -> None:
        self.last_epoch = int(state["last_epoch"])
        self.base_lrs = list(state["base_lrs"])
        factor = self.lr_lambda(self.last_epoch)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor


def warmup_cosine(
    warmup_steps: int, total_steps: int, min_ratio: float = 0.1
) -> Callable[[int], float]:
    """The multiplier of linear warmup then cosine decay to ``min_ratio`` at ``total_steps``."""
    if warmup_steps < 0 or total_steps <= 0:
        raise ValueError(
            f"warmup_cosine: need warmup >= 0 and total > 0, got {warmup_steps}, {total_steps}"
        )

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(total_steps - warmup_steps, 1)
        s = min(max((step - warmup_steps) / span, 0.0), 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * s))

    return factor


class CosineAnnealingLR(LambdaLR):
    """Cosine from base_lr at epoch 0 to eta_min at ``T_max`` (the closed form)."""

    def __init__(
        self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1
    ):
        base = optimizer.param_groups[0]["lr"]

        def factor(epoch: int) -> float:
            cos = (1 + math.cos(math.pi * min(epoch, T_max) / T_max)) / 2
            return (eta_min + (base - eta_min) * cos) / base if base else 0.0

        super().__init__(optimizer, factor, last_epoch)
