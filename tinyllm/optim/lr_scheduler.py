"""Learning-rate schedules (PyTorch's ``LambdaLR``, ``CosineAnnealingLR``, ``LinearLR``,
``ConstantLR``, ``SequentialLR``, in closed form) and warmup + cosine decay. Multipliers for
warmup + linear / cosine / inverse-sqrt / WSD live in ``tinyllm.optim.schedules``.

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


class LinearLR(LambdaLR):
    """PyTorch's ``LinearLR``, closed form, per group:

    lr_g(epoch) = base_lr_g * (start + (end - start) * min(epoch, total_iters) / total_iters)

    Typical use: linear warmup from ``start_factor`` to 1 over ``total_iters`` steps, then
    another schedule through ``SequentialLR``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = -1,
    ):
        if not 0 < start_factor <= 1:
            raise ValueError(
                f"LinearLR: start_factor must be in (0, 1] (as in PyTorch), got {start_factor}"
            )
        if not 0 <= end_factor <= 1:
            raise ValueError(f"LinearLR: end_factor must be in [0, 1], got {end_factor}")
        if total_iters <= 0:
            raise ValueError(f"LinearLR: total_iters must be positive, got {total_iters}")
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters

        def factor(epoch: int) -> float:
            s = min(epoch, total_iters) / total_iters
            return start_factor + (end_factor - start_factor) * s

        super().__init__(optimizer, factor, last_epoch)


class ConstantLR(LambdaLR):
    """PyTorch's ``ConstantLR``: lr_g = base_lr_g * factor for epoch < total_iters, then
    base_lr_g."""

    def __init__(
        self,
        optimizer: Optimizer,
        factor: float = 1.0 / 3,
        total_iters: int = 5,
        last_epoch: int = -1,
    ):
        if not 0 <= factor <= 1:
            raise ValueError(f"ConstantLR: factor must be in [0, 1], got {factor}")
        self.factor, self.total_iters = factor, total_iters
        super().__init__(optimizer, lambda e: factor if e < total_iters else 1.0, last_epoch)


class SequentialLR:
    """PyTorch's ``SequentialLR``: scheduler i runs from milestone i-1 (0 for the first) and
    sees its own epoch counter restarted at 0 there, against its own base lrs:

        lr(epoch) = schedulers[i].lr(epoch - milestones[i-1]),  i = #{m in milestones: m <= epoch}

    e.g. ``SequentialLR(opt, [LinearLR(opt, 0.01, total_iters=W), CosineAnnealingLR(opt, T - W)],
    milestones=[W])`` is linear warmup then cosine decay. Every child must be a scheduler of the
    same optimizer whose ``step()`` increments ``last_epoch`` and applies its closed form (all
    schedulers in this module do).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedulers: list,
        milestones: list[int],
        last_epoch: int = -1,
    ):
        if not schedulers:
            raise ValueError("SequentialLR: expects at least one scheduler")
        for i, s in enumerate(schedulers):
            if getattr(s, "optimizer", None) is not optimizer:
                raise ValueError(
                    f"SequentialLR: scheduler {i} ({type(s).__name__}) belongs to another optimizer"
                )
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                f"SequentialLR: expects one milestone fewer than schedulers, got "
                f"{len(schedulers)} schedulers and {len(milestones)} milestones"
            )
        if list(milestones) != sorted(milestones):
            raise ValueError(f"SequentialLR: milestones must be increasing, got {milestones}")
        self.optimizer = optimizer
        self._schedulers = list(schedulers)
        self._milestones = list(milestones)
        self.last_epoch = last_epoch
        self.step()

    def _apply(self) -> None:
        i = sum(m <= self.last_epoch for m in self._milestones)
        local = self.last_epoch - (self._milestones[i - 1] if i else 0)
        child = self._schedulers[i]
        child.last_epoch = local - 1
        child.step()

    def step(self) -> None:
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {
            "last_epoch": self.last_epoch,
            "_milestones": list(self._milestones),
            "_schedulers": [s.state_dict() for s in self._schedulers],
        }

    def load_state_dict(self, state: dict) -> None:
        if len(state["_schedulers"]) != len(self._schedulers):
            raise ValueError(
                f"SequentialLR.load_state_dict: {len(state['_schedulers'])} schedulers in the "
                f"state dict, {len(self._schedulers)} here"
            )
        for s, sd in zip(self._schedulers, state["_schedulers"]):
            s.load_state_dict(sd)
        self._milestones = list(state["_milestones"])
        self.last_epoch = int(state["last_epoch"])
        self._apply()
