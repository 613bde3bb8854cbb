"""Stochastic gradient descent with momentum, Nesterov and weight decay (PyTorch's update).

g <- g + wd p                                  (weight decay, coupled as L2)
b <- g                    on the first step,
b <- mu b + (1 - dampening) g                  afterwards (momentum buffer)
g <- g + mu b  if nesterov  else  b
p <- p - lr g
"""

from __future__ import annotations

from tinyllm.grad_mode import no_grad
from tinyllm.optim.optimizer import Optimizer


class SGD(Optimizer):
    def __init__(
        self,
        params,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        maximize: bool = False,
    ) -> None:
        if lr < 0:
            raise ValueError(f"SGD: invalid learning rate {lr}")
        if momentum < 0:
            raise ValueError(f"SGD: invalid momentum {momentum}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov momentum requires momentum > 0 and dampening = 0")
        defaults = dict(
            lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
            nesterov=nesterov, maximize=maximize,
        )  # fmt: skip
        super().__init__(params, defaults)

    @no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p, state in self._params_with_grad(group):
                g = p.grad.data
                if group["maximize"]:
                    g = -g
                if wd:
                    g = g + wd * p.data
                if mu:
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = g.copy()
                    else:
                        buf *= mu
                        buf += (1 - group["dampening"]) * g
                    state["momentum_buffer"] = buf
                    g = g + mu * buf if group["nesterov"] else buf
                p.data -= lr * g
