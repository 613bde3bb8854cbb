"""Adam and AdamW, with PyTorch's exact update (bias correction, eps outside the sqrt).

At step t, with gradient g and decay wd:

    p <- p (1 - lr wd)                    AdamW only: decoupled decay, before the update
    g <- g + wd p                         Adam only: L2 decay folded into the gradient
    m <- b1 m + (1 - b1) g
    v <- b2 v + (1 - b2) g^2
    v_max <- max(v_max, v)                with amsgrad (and v_max replaces v below)
    p <- p - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)

AdamW without amsgrad runs ``tinyllm.kernels.adamw_step_multi`` once per parameter group
(per step count t and dtype within it): on the GPU one launch updates every parameter, on the
CPU it makes the same fused pass per parameter as ``adamw_step`` (bit-identical results).
Adam and amsgrad run the array code below.
"""

from __future__ import annotations

import math

from tinyllm import kernels
from tinyllm.backend import get_array_module
from tinyllm.grad_mode import no_grad
from tinyllm.optim.optimizer import Optimizer


class Adam(Optimizer):
    decoupled = False

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        maximize: bool = False,
    ) -> None:
        name = type(self).__name__
        if lr < 0:
            raise ValueError(f"{name}: invalid learning rate {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"{name}: invalid betas {betas}")
        if eps < 0:
            raise ValueError(f"{name}: invalid eps {eps}")
        if weight_decay < 0:
            raise ValueError(f"{name}: invalid weight_decay {weight_decay}")
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
            maximize=maximize,
        )  # fmt: skip
        super().__init__(params, defaults)

    @no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            fused = self.decoupled and not group["amsgrad"]
            # (t, array module, dtypes of p, g, m, v) -> parallel lists for adamw_step_multi
            batches: dict[tuple, tuple[list, list, list, list]] = {}
            for p, state in self._params_with_grad(group):
                xp = get_array_module(p.data)
                g = p.grad.data
                if group["maximize"]:
                    g = -g
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = xp.zeros_like(p.data)
                    state["exp_avg_sq"] = xp.zeros_like(p.data)
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = xp.zeros_like(p.data)
                state["step"] += 1
                t = state["step"]
                if fused:
                    m, v = state["exp_avg"], state["exp_avg_sq"]
                    key = (t, xp, p.data.dtype, g.dtype, m.dtype, v.dtype)
                    for seq, a in zip(batches.setdefault(key, ([], [], [], [])), (p.data, g, m, v)):
                        seq.append(a)
                    p._version.value += 1  # updated in place: graphs that saved p are stale
                    continue
                if wd:
                    if self.decoupled:
                        p.data *= p.dtype.type(1 - lr * wd)
                    else:
                        g = g + wd * p.data
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m *= b1
                m += (1 - b1) * g
                v *= b2
                v += (1 - b2) * (g * g)
                if group["amsgrad"]:
                    xp.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
                    v = state["max_exp_avg_sq"]
                step_size = lr / (1 - b1**t)
                denom = xp.sqrt(v) / p.dtype.type(math.sqrt(1 - b2**t)) + p.dtype.type(eps)
                p.data -= p.dtype.type(step_size) * (m / denom)
            for (t, *_), (params, grads, exp_avgs, exp_avg_sqs) in batches.items():
                # one fused update of the batch (tinyllm.kernels: reference/Numba/CUDA)
                kernels.adamw_step_multi(
                    params, grads, exp_avgs, exp_avg_sqs, step=t, lr=lr, betas=(b1, b2),
                    eps=eps, weight_decay=wd,
                )  # fmt: skip


class AdamW(Adam):
    """Adam with decoupled weight decay (default 0.01, as in PyTorch)."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, maximize=False) -> None:  # fmt: skip
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize)
