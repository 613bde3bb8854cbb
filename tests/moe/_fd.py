"""Central finite differences over a module's parameters (and inputs), for float64 checks."""

import numpy as np

import tinyllm


def check_grads(loss_fn, tensors, eps=1e-6, atol=1e-7, rtol=1e-5, max_per_tensor=40, seed=0):
    """loss_fn() -> 0-d Tensor; compares each tensor's .grad (from one backward) with central
    differences of loss_fn at up to ``max_per_tensor`` random entries of each tensor.

    Tolerance: float64 central differences with eps 1e-6 have truncation error O(eps^2 f''')
    ~ 1e-12 and rounding ~ 1e-16 / 1e-6 = 1e-10 relative; atol 1e-7 leaves margin."""
    for t in tensors:
        t.grad = None
    loss_fn().backward()
    rng = np.random.default_rng(seed)
    for t in tensors:
        g = np.zeros(t.shape) if t.grad is None else t.grad.data.copy()
        picks = rng.choice(t.data.size, size=min(max_per_tensor, t.data.size), replace=False)
        for flat in picks:
            view = t.data.reshape(-1)
            x0 = view[flat]
            with tinyllm.no_grad():
                view[flat] = x0 + eps
                up = float(loss_fn().data)
                view[flat] = x0 - eps
                down = float(loss_fn().data)
                view[flat] = x0
            numeric = (up - down) / (2 * eps)
            assert abs(g.reshape(-1)[flat] - numeric) <= atol + rtol * abs(numeric), (
                f"entry {flat} of a tensor {t.shape}: analytic {g.reshape(-1)[flat]}, "
                f"numeric {numeric}"
            )
