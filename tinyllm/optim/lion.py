"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), with the update
order of lucidrains' ``lion-pytorch``.

At each step, with gradient g, momentum m (zero at the start) and decoupled decay wd:

    p <- p (1 - lr wd)                        decoupled weight decay, before the update
    c <- b1 m + (1 - b1) g                    interpolation used only for the direction
    p <- p - lr sign(c)                       every coordinate moves by exactly lr (0 if c = 0)
    m <- b2 m + (1 - b2) g                    the momentum itself uses b2

Defaults: lr 1e-4, betas (0.9, 0.99), weight_decay 0 (lion-pytorch's; the paper suggests an lr
3-10x smaller than AdamW's and a weight decay 3-10x larger, keeping lr * wd).
"""

from __future__ import annotations

from tinyllm.backend import get_array_module
from tinyllm.grad_mode import no_grad
from tinyllm.optim.optimizer import Optimizer


class Lion(Optimizer):
    def __init__(
        self,
        params,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        maximize: bool = False,
    ) -> None:
        if lr < 0:
            raise ValueError(f"Lion: invalid learning rate {lr}")
        if len(betas) != 2 or not all(0.0 <= b <= 1.0 for b in betas):
            raise ValueError(f"Lion: invalid betas {betas} (need two values in [0, 1])")
        if weight_decay < 0:
            raise ValueError(f"Lion: invalid weight_decay {weight_decay}")
        defaults = dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    @no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            lr, (b1, b2), wd = group["lr"], group["betas"], group["weight_decay"]
            for p, state in self._params_with_grad(group):
                xp = get_array_module(p.data)
                g = p.grad.data
                if group["maximize"]:
                    g = -g
                if not state:
                    state["exp_avg"] = xp.zeros_like(p.data)
                m = state["exp_avg"]
                dt = p.data.dtype.type
                if wd:
                    p.data *= dt(1 - lr * wd)
                direction = xp.sign(dt(b1) * m + dt(1 - b1) * g)
                p.data -= dt(lr) * direction  # assigning p.data bumps p's version
                m *= dt(b2)
                m += dt(1 - b2) * g
