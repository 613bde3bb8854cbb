"""Adafactor (Shazeer & Stern 2018) with PyTorch's names, defaults and update
(``torch.optim.Adafactor``, torch 2.13).

At step t (from 1), with gradient g, for a parameter p with at least two dimensions the second
moment is factored over its last two axes (rows R, columns C; leading axes are batch axes):

    beta2_t = 1 - t^beta2_decay                      (beta2_decay = -0.8: 1 - beta2_t = t^-0.8)
    rho_t   = min(lr, 1 / sqrt(t))
    alpha   = max(eps2, RMS(p)) * rho_t              RMS(p) = ||p||_2 / sqrt(numel), before decay
    p      <- p (1 - lr wd)                          decoupled weight decay
    r      <- r + (1 - beta2_t) (mean_C(g^2) - r)    row second moments, shape (..., R, 1)
    c      <- c + (1 - beta2_t) (mean_R(g^2) - c)    column second moments, shape (..., 1, C)
    V       = (r c) / max(mean_R(r), eps1)           rank-1 estimate of E[g^2]
    (vectors and scalars keep the full v <- v + (1 - beta2_t)(g^2 - v), V = v)
    U       = g / sqrt(max(V, eps1^2))
    p      <- p - alpha U / max(1, RMS(U) / d)       update clipping at threshold d

eps1 = None means the machine epsilon of p's dtype. There is no "relative step" switch: as in
PyTorch, the step is always scaled by RMS(p), and rho_t = min(lr, 1/sqrt(t)) equals ``lr`` for
the first 1/lr^2 steps (10^4 at the default lr), so the 1/sqrt(t) decay only acts late.
(Hugging Face's ``relative_step=True, scale_parameter=True`` is the same with lr fixed at 1e-2.)
Because 1 - beta2_1 = 1, the first step sees V = g^2 exactly (vectors) or its rank-1 fit.
"""

from __future__ import annotations

import math

import numpy as np

from tinyllm.backend import get_array_module
from tinyllm.grad_mode import no_grad
from tinyllm.optim.optimizer import Optimizer


class Adafactor(Optimizer):
    def __init__(
        self,
        params,
        lr: float = 1e-2,
        beta2_decay: float = -0.8,
        eps: tuple[float | None, float] = (None, 1e-3),
        d: float = 1.0,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
    ) -> None:
        if not lr >= 0:
            raise ValueError(f"Adafactor: learning rate should be >= 0 but is {lr}")
        if not beta2_decay <= 0:
            raise ValueError(f"Adafactor: beta2_decay should be <= 0 but is {beta2_decay}")
        if len(eps) != 2:
            raise ValueError(f"Adafactor: eps should be a pair (eps1, eps2), got {eps}")
        if eps[0] is not None and not eps[0] >= 0:
            raise ValueError(f"Adafactor: epsilon1 should be >= 0 but is {eps[0]}")
        if not eps[1] >= 0:
            raise ValueError(f"Adafactor: epsilon2 should be >= 0 but is {eps[1]}")
        if not d >= 1:
            raise ValueError(f"Adafactor: clipping threshold d should be >= 1 but is {d}")
        if not weight_decay >= 0:
            raise ValueError(f"Adafactor: weight_decay should be >= 0 but is {weight_decay}")
        defaults = dict(
            lr=lr, beta2_decay=beta2_decay, eps=tuple(eps), d=d, weight_decay=weight_decay,
            maximize=maximize,
        )  # fmt: skip
        super().__init__(params, defaults)

    @staticmethod
    def _state_shape(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the state array ``name`` of a parameter of ``shape`` (for load_state_dict)."""
        if name == "row_var":
            return shape[:-1] + (1,)
        if name == "col_var":
            return shape[:-2] + (1,) + shape[-1:]
        return shape

    @no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            lr, wd, d, decay = group["lr"], group["weight_decay"], group["d"], group["beta2_decay"]
            eps1, eps2 = group["eps"]
            for p, state in self._params_with_grad(group):
                xp = get_array_module(p.data)
                g = p.grad.data
                if group["maximize"]:
                    g = -g
                factored = g.ndim > 1
                if not state:
                    state["step"] = 0
                    if factored:
                        state["row_var"] = xp.zeros(self._state_shape("row_var", g.shape), g.dtype)
                        state["col_var"] = xp.zeros(self._state_shape("col_var", g.shape), g.dtype)
                    else:
                        state["variance"] = xp.zeros_like(g)
                e1 = float(np.finfo(p.data.dtype).eps) if eps1 is None else eps1
                state["step"] += 1
                t = float(state["step"])
                dt = p.data.dtype.type
                one_minus_beta2 = dt(t**decay)
                rho = min(lr, 1 / math.sqrt(t))
                rms_p = float(xp.sqrt((p.data.astype(np.float64) ** 2).sum() / max(p.data.size, 1)))
                alpha = max(eps2, rms_p) * rho
                if wd:
                    p.data *= dt(1 - lr * wd)
                g2 = g * g
                if factored:
                    r, c = state["row_var"], state["col_var"]
                    r += one_minus_beta2 * (g2.mean(axis=-1, keepdims=True) - r)
                    c += one_minus_beta2 * (g2.mean(axis=-2, keepdims=True) - c)
                    v = (r * c) / xp.maximum(r.mean(axis=-2, keepdims=True), dt(e1))
                else:
                    v = state["variance"]
                    v += one_minus_beta2 * (g2 - v)
                update = g / xp.sqrt(xp.maximum(v, dt(e1 * e1)))
                rms_u = float(xp.sqrt((update.astype(np.float64) ** 2).sum() / max(update.size, 1)))
                denom = max(1.0, rms_u / d)
                p.data -= dt(alpha / denom) * update  # assigning p.data bumps p's version
