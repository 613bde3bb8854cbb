"""Dynamic loss scaling with ``torch.amp.GradScaler``'s API and update rule.

Small float16 gradients underflow to zero; scaling the loss by S before ``backward`` scales
every gradient by S, and ``unscale_`` multiplies them back by 1/S before the optimizer step.
S adapts (Micikevicius et al. 2018, "Mixed Precision Training"):

    any gradient inf/NaN after unscaling  ->  skip optimizer.step(), S <- S * backoff_factor,
                                              tracker <- 0
    otherwise                             ->  tracker <- tracker + 1; when it reaches
                                              growth_interval: S <- S * growth_factor (if that
                                              stays finite), tracker <- 0

Defaults as PyTorch: S_0 = 2^16, growth_factor 2, backoff_factor 0.5, growth_interval 2000.
Like PyTorch, S is kept in float32 (products rounded to float32) and 1/S is computed in
float64 then rounded to float32; with the default powers of two, scaling and unscaling are
exact. Per iteration::

    scaler.scale(loss).backward()
    scaler.unscale_(opt)                 # optional, e.g. before clip_grad_norm_
    scaler.step(opt)                     # unscales if needed; skips the step on inf/NaN
    scaler.update()

Keep the scaled loss in float32 (as autocast does for reductions): 2^16 is above float16's
maximum 65504, so a float16 loss times S is inf (PyTorch behaves the same; the scaler would
back off to 2^15 after one skipped step).

``device`` is accepted for PyTorch compatibility; gradients are checked on whatever device
they live (NumPy or CuPy arrays), with one host sync per optimizer in ``step``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from enum import Enum
from typing import Any

import numpy as np

from tinyllm.backend import get_array_module
from tinyllm.grad_mode import no_grad
from tinyllm.tensor import Tensor


class OptState(Enum):
    READY = 0
    UNSCALED = 1
    STEPPED = 2


def _f32(x: float) -> float:
    """Round to float32, as PyTorch's float32 scale tensor does (inf past float32's max)."""
    with np.errstate(over="ignore"):
        return float(np.float32(x))


class GradScaler:
    def __init__(
        self,
        device: str = "cuda",
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        enabled: bool = True,
    ) -> None:
        if growth_factor <= 1.0:
            raise ValueError(f"GradScaler: growth_factor must be > 1.0, got {growth_factor}")
        if not 0.0 < backoff_factor < 1.0:
            raise ValueError(f"GradScaler: backoff_factor must be in (0, 1), got {backoff_factor}")
        if not isinstance(growth_interval, int) or growth_interval <= 0:
            raise ValueError(
                f"GradScaler: growth_interval must be a positive int, got {growth_interval!r}"
            )
        if not init_scale > 0:
            raise ValueError(f"GradScaler: init_scale must be positive, got {init_scale}")
        self._device = device
        self._enabled = enabled
        self._init_scale = init_scale
        self._growth_factor = growth_factor
        self._backoff_factor = backoff_factor
        self._growth_interval = growth_interval
        self._scale: float | None = None  # created by the first scale(), as in PyTorch
        self._growth_tracker = 0
        self._per_optimizer_states: dict[int, dict[str, Any]] = {}

    # ------------------------------------------------------------------ the iteration
    def scale(self, outputs):
        """``outputs * S`` for a Tensor, or for each Tensor of a list/tuple/iterable."""
        if not self._enabled:
            return outputs
        if self._scale is None:
            self._scale = _f32(self._init_scale)
        s = self._scale

        def apply(val):
            if isinstance(val, Tensor):
                return val * s
            if isinstance(val, (list, tuple)):
                return type(val)(apply(v) for v in val)
            if isinstance(val, Iterable):
                return map(apply, val)
            raise ValueError(
                f"GradScaler.scale: outputs must be a Tensor or an iterable of Tensors, "
                f"got {type(val).__name__}"
            )

        return apply(outputs)

    def _state(self, optimizer) -> dict[str, Any]:
        return self._per_optimizer_states.setdefault(
            id(optimizer), {"stage": OptState.READY, "found_inf": None}
        )

    def _check_scaled(self, funcname: str) -> None:
        if self._scale is None:
            raise RuntimeError(
                f"GradScaler.{funcname}: no scale yet; this may indicate your script did not "
                "use scaler.scale(loss or outputs) earlier in the iteration"
            )

    @no_grad()
    def unscale_(self, optimizer) -> None:
        """Multiply every gradient of ``optimizer`` by 1/S in place and record whether any is
        inf/NaN. At most once per optimizer between ``update()`` calls."""
        if not self._enabled:
            return
        self._check_scaled("unscale_")
        state = self._state(optimizer)
        if state["stage"] is OptState.UNSCALED:
            raise RuntimeError(
                "GradScaler.unscale_() has already been called on this optimizer since the "
                "last update()"
            )
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("GradScaler.unscale_() is being called after step()")
        inv_scale = _f32(1.0 / float(self._scale))
        found = []
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.data
                if g.dtype == np.float16:
                    raise ValueError(
                        "GradScaler.unscale_: attempting to unscale FP16 gradients (keep float32 "
                        f"master weights; parameter of shape {tuple(g.shape)} has a float16 grad)"
                    )
                xp = get_array_module(g)
                found.append(~xp.isfinite(g).all())
                g *= g.dtype.type(inv_scale)
                p.grad._version.value += 1
        state["found_inf"] = found
        state["stage"] = OptState.UNSCALED

    def step(self, optimizer, *args, **kwargs):
        """Unscale (unless ``unscale_`` ran) and call ``optimizer.step()`` only if every gradient
        is finite; returns its result, or None when the step is skipped."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("GradScaler.step: closure use is not supported when enabled")
        self._check_scaled("step")
        state = self._state(optimizer)
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("GradScaler.step() has already been called since the last update()")
        if state["stage"] is OptState.READY:
            self.unscale_(optimizer)
        if not state["found_inf"]:
            raise RuntimeError(
                "GradScaler.step: no inf checks were recorded for this optimizer (no parameter "
                "has a gradient)"
            )
        state["found_inf"] = [any(bool(f) for f in state["found_inf"])]  # one host sync
        retval = None
        if not state["found_inf"][0]:
            retval = optimizer.step(*args, **kwargs)
        state["stage"] = OptState.STEPPED
        return retval

    def update(self, new_scale: float | None = None) -> None:
        """Adapt S from this iteration's inf checks (or set it to ``new_scale``) and reset the
        per-optimizer states for the next iteration."""
        if not self._enabled:
            return
        self._check_scaled("update")
        if new_scale is not None:
            if isinstance(new_scale, Tensor):
                if new_scale.numel() != 1:
                    raise ValueError("GradScaler.update: new_scale must have one element")
                new_scale = new_scale.item()
            self._scale = _f32(float(new_scale))
        else:
            checks = [
                bool(f)
                for s in self._per_optimizer_states.values()
                if s["found_inf"] is not None
                for f in s["found_inf"]
            ]
            if not checks:
                raise RuntimeError("GradScaler.update: no inf checks were recorded prior to update")
            if any(checks):
                self._scale = _f32(self._scale * self._backoff_factor)
                self._growth_tracker = 0
            else:
                successful = self._growth_tracker + 1
                if successful == self._growth_interval:
                    grown = _f32(self._scale * self._growth_factor)
                    if math.isfinite(grown):
                        self._scale = grown
                    self._growth_tracker = 0
                else:
                    self._growth_tracker = successful
        self._per_optimizer_states = {}

    # ------------------------------------------------------------------ accessors
    def get_scale(self) -> float:
        """S as a Python float (init_scale before the first ``scale()``; 1.0 if disabled)."""
        if not self._enabled:
            return 1.0
        return float(self._init_scale if self._scale is None else self._scale)

    def get_growth_factor(self) -> float:
        return self._growth_factor

    def set_growth_factor(self, new_factor: float) -> None:
        self._growth_factor = new_factor

    def get_backoff_factor(self) -> float:
        return self._backoff_factor

    def set_backoff_factor(self, new_factor: float) -> None:
        self._backoff_factor = new_factor

    def get_growth_interval(self) -> int:
        return self._growth_interval

    def set_growth_interval(self, new_interval: int) -> None:
        self._growth_interval = new_interval

    def is_enabled(self) -> bool:
        return self._enabled

    def state_dict(self) -> dict[str, Any]:
        """PyTorch's keys: scale, growth_factor, backoff_factor, growth_interval,
        _growth_tracker ({} when disabled)."""
        if not self._enabled:
            return {}
        return {
            "scale": self.get_scale(),
            "growth_factor": self._growth_factor,
            "backoff_factor": self._backoff_factor,
            "growth_interval": self._growth_interval,
            "_growth_tracker": self._growth_tracker,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError(
                "GradScaler.load_state_dict: the source state dict is empty, possibly because "
                "it was saved from a disabled instance of GradScaler"
            )
        missing = {"scale", "growth_factor", "backoff_factor", "growth_interval",
                   "_growth_tracker"} - set(state_dict)  # fmt: skip
        if missing:
            raise ValueError(f"GradScaler.load_state_dict: missing keys {sorted(missing)}")
        self._init_scale = float(state_dict["scale"])
        self._scale = _f32(self._init_scale)
        self._growth_factor = float(state_dict["growth_factor"])
        self._backoff_factor = float(state_dict["backoff_factor"])
        self._growth_interval = int(state_dict["growth_interval"])
        self._growth_tracker = int(state_dict["_growth_tracker"])
