"""``Optimizer``: parameter groups, per-parameter state, and PyTorch-format state dicts.

Updates run under ``no_grad`` directly on the arrays (``p.data``), which bumps each
parameter's version counter: a graph recorded before ``step()`` that saved a parameter
refuses to backward afterwards instead of using the updated values.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from tinyllm import backend
from tinyllm.tensor import Tensor


class Optimizer:
    def __init__(self, params, defaults: dict) -> None:
        self.defaults = defaults
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups: list[dict] = []
        self.state: dict[int, dict[str, Any]] = {}
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict) -> None:
        group = dict(group)
        params = group["params"]
        group["params"] = [params] if isinstance(params, Tensor) else list(params)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for p in group["params"]:
            if not isinstance(p, Tensor):
                raise TypeError(
                    f"{type(self).__name__}: params must be Tensors, got {type(p).__name__}"
                )
            if not p.requires_grad:
                raise ValueError(f"{type(self).__name__}: a parameter does not require grad")
            if id(p) in seen:
                raise ValueError(f"{type(self).__name__}: a parameter appears in two groups")
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.data[...] = 0

    def step(self) -> None:
        raise NotImplementedError

    @staticmethod
    def _state_shape(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of per-parameter state ``name`` for a parameter of ``shape`` (checked by
        ``load_state_dict``); optimizers with factored state (Adafactor) override it."""
        return shape

    def _params_with_grad(self, group):
        for p in group["params"]:
            if p.grad is not None:
                yield p, self.state.setdefault(id(p), {})

    # ------------------------------------------------------------------ state dicts
    def state_dict(self) -> dict:
        """{"state": {index: {name: array or number}}, "param_groups": [... "params": [index]]}."""
        index = {}
        groups = []
        for group in self.param_groups:
            g = {k: v for k, v in group.items() if k != "params"}
            g["params"] = []
            for p in group["params"]:
                index.setdefault(id(p), len(index))
                g["params"].append(index[id(p)])
            groups.append(g)
        state = {}
        for pid, s in self.state.items():
            if pid in index:
                state[index[pid]] = {
                    k: (backend.to_numpy(v).copy() if hasattr(v, "shape") else v)
                    for k, v in s.items()
                }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore from ``state_dict()``; every group and shape is checked before any change."""
        groups = state_dict.get("param_groups")
        if not isinstance(groups, list) or len(groups) != len(self.param_groups):
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: expected {len(self.param_groups)} "
                f"param groups, got {None if groups is None else len(groups)}"
            )
        params = [p for g in self.param_groups for p in g["params"]]
        for mine, theirs in zip(self.param_groups, groups):
            if len(mine["params"]) != len(theirs["params"]):
                raise ValueError(
                    f"{type(self).__name__}.load_state_dict: a group has {len(theirs['params'])} "
                    f"params in the state dict, {len(mine['params'])} in the optimizer"
                )
        new_state = {}
        for key, s in state_dict.get("state", {}).items():
            i = int(key)
            if not 0 <= i < len(params):
                raise ValueError(f"{type(self).__name__}.load_state_dict: no parameter {i}")
            p = params[i]
            entry = {}
            for name, v in s.items():
                if hasattr(v, "shape") and np.ndim(v) > 0:
                    want = self._state_shape(name, tuple(p.shape))
                    if tuple(v.shape) != want:
                        raise ValueError(
                            f"{type(self).__name__}.load_state_dict: state {name!r} of parameter "
                            f"{i} has shape {tuple(v.shape)}, expected {want} (parameter has "
                            f"{p.shape})"
                        )
                    v = backend.to_device(np.asarray(v), p.device).astype(p.dtype, copy=True)
                elif hasattr(v, "shape"):
                    v = v.item()
                entry[name] = v
            new_state[id(p)] = entry
        for mine, theirs in zip(self.param_groups, groups):
            for k, v in theirs.items():
                if k != "params":
                    mine[k] = copy.deepcopy(v)
        self.state = new_state
