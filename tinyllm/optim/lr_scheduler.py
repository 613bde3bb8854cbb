"""Learning-rate schedules (PyTorch's ``LambdaLR`` interface) and warmup + cosine decay.

warmup_cosine(step) = (step + 1) / warmup                            for step < warmup
                    = min_ratio + (1 - min_ratio) (1 + cos(pi s)) / 2 afterwards,
                      s = (step - warmup) / (total - warmup), clipped to [0, 1]
"""

from __future__ import annotations

import math
from collections.abc import Callable

from tinyllm.optim.optimizer import Optimizer


class LambdaLR:
    """lr_g = base_lr_g * lr_lambda_g(epoch) for each group g; call ``step()`` after each
    ``optimizer.step()``. ``lr_lambda``: one function for every group, or a list (one per group),
    as in PyTorch."""

    def __init__(
        self,
        optimizer: Optimizer,
        lr_lambda: Callable[[int], float] | list[Callable[[int], float]],
        last_epoch: int = -1,
    ):
        self.optimizer = optimizer
        n = len(optimizer.param_groups)
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != n:
                raise ValueError(
                    f"{type(self).__name__}: expected {n} lr_lambdas (one per group), "
                    f"got {len(lr_lambda)}"
                )
            self.lr_lambdas = list(lr_lambda)
        else:
            self.lr_lambdas = [lr_lambda] * n
        self.lr_lambda = self.lr_lambdas[0]
        self.base_lrs = [g.setdefault("initial_lr", g["lr"]) for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def step(self) -> None:
        self.last_epoch += 1
        for group, base, fn in zip(self.optimizer.param_groups, self.base_lrs, self.lr_lambdas):
            group["lr"] = base * fn(self.last_epoch)

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict) -> None:
        self.last_epoch = int(state["last_epoch"])
        self.base_lrs = list(state["base_lrs"])
        for group, base, fn in zip(self.optimizer.param_groups, self.base_lrs, self.lr_lambdas):
            group["lr"] = base * fn(self.last_epoch)


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
    """PyTorch's cosine annealing, closed form, per parameter group:

    lr_g(epoch) = eta_min + (base_lr_g - eta_min) (1 + cos(pi epoch / T_max)) / 2

    Each group anneals from its own base_lr to the absolute ``eta_min`` at ``T_max``; past
    ``T_max`` the cosine continues (rising back towards base_lr at 2 T_max), as PyTorch's
    closed form does. No clamping.
    """

    def __init__(
        self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1
    ):
        if T_max <= 0:
            raise ValueError(f"CosineAnnealingLR: T_max must be positive, got {T_max}")
        self.T_max, self.eta_min = T_max, float(eta_min)
        super().__init__(optimizer, lambda epoch: 1.0, last_epoch)

    def _lr(self, base: float, epoch: int) -> float:
        cos = (1 + math.cos(math.pi * epoch / self.T_max)) / 2
        return self.eta_min + (base - self.eta_min) * cos

    def step(self) -> None:
        self.last_epoch += 1
        self._apply()

    def load_state_dict(self, state: dict) -> None:
        self.last_epoch = int(state["last_epoch"])
        self.base_lrs = list(state["base_lrs"])
        self._apply()

    def _apply(self) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = self._lr(base, self.last_epoch)
