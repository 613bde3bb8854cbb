"""AWQ (Lin et al., MLSys 2024): activation-aware per-input-channel scales, then clipping.

Scaling input channel j of W by s_j and the input by 1/s_j leaves the layer unchanged,

    y = x W^T = (x diag(s)^-1) (W diag(s))^T,

but quantizing W diag(s) instead of W shrinks the relative rounding error of the channels
with s_j > 1 (their group's step barely moves unless they hold the group's max). AWQ picks

    s = mean_t |x_tj| ^ alpha,   s <- s / sqrt(max(s) min(s)),
    alpha* = argmin_{alpha in {0, 0.05, ..., 0.95}} || x W^T - (x / s) Q(W diag(s))^T ||^2

on calibration inputs (alpha = 0 is s = 1: round-to-nearest, so the chosen alpha never does
worse than RTN on the calibration set). Then, per output row and group, the clipping search
shrinks the range to max_val = (1 - i/20) max|w| (i = 0..9, i = 0 is no clipping) and keeps
the one with the smallest error of that group's partial output ||X_g (w_g - q(clip(w_g)))||^2.

Here the scale is searched per linear layer on that layer's own inputs, and the 1/s multiply
is kept in the quantized layer (``input_scale``) instead of being folded into the preceding
norm: the same arithmetic, applicable to every linear (the reference folds it, and so searches
jointly over the linears that share one norm).
"""

from __future__ import annotations

import numpy as np

from tinyllm.quant.schemes import QuantizedWeight, fake_quantize, group_bounds, quantize_weight

__all__ = ["awq_clip", "awq_quantize", "awq_scale_search"]

ALPHA_GRID = tuple(i / 20 for i in range(20))


def _output_mse(X: np.ndarray, W: np.ndarray, W_hat_scaled: np.ndarray, s: np.ndarray) -> float:
    """mean (x W^T - (x / s) W_hat_scaled^T)^2."""
    Y = X @ W.T
    Yq = (X / s) @ W_hat_scaled.T
    return float(np.mean((Y - Yq) ** 2))


def awq_scale_search(
    W: np.ndarray,
    X: np.ndarray,
    bits: int = 4,
    group_size: int | None = 128,
    symmetric: bool = False,
    alphas: tuple[float, ...] = ALPHA_GRID,
) -> tuple[np.ndarray, float, dict[float, float]]:
    """(s [K], the chosen alpha, {alpha: calibration output MSE}) for W [N, K], X [n, K]."""
    W = np.asarray(W, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64).reshape(-1, W.shape[1])
    gran = "group" if group_size is not None and group_size < W.shape[1] else "channel"
    x_mean = np.abs(X).mean(axis=0)
    errors: dict[float, float] = {}
    best = (np.inf, None, None)
    for alpha in alphas:
        s = np.maximum(x_mean, 1e-4) ** alpha
        s = s / np.sqrt(s.max() * s.min())
        if alpha == 0:
            s = np.ones_like(s)
        W_hat = fake_quantize(W * s, bits, gran, group_size, symmetric).astype(np.float64)
        errors[alpha] = _output_mse(X, W, W_hat, s)
        if errors[alpha] < best[0]:
            best = (errors[alpha], alpha, s)
    return best[2], best[1], errors


def awq_clip(
    W: np.ndarray,
    X: np.ndarray,
    bits: int = 4,
    group_size: int | None = 128,
    symmetric: bool = False,
    n_grid: int = 20,
    max_shrink: float = 0.5,
) -> np.ndarray:
    """W [N, K] clipped per (row, group) to the ratio that minimizes that group's output error."""
    W = np.asarray(W, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64).reshape(-1, W.shape[1])
    N, K = W.shape
    g = K if group_size is None or group_size >= K else group_size
    out = W.copy()
    for a, b in group_bounds(K, g):
        Wg, Xg = W[:, a:b], X[:, a:b]
        amax = np.abs(Wg).max(axis=1, keepdims=True)  # [N, 1]
        best_err = np.full(N, np.inf)
        for i in range(int(round(n_grid * max_shrink))):
            limit = amax * (1 - i / n_grid)
            clipped = np.clip(Wg, -limit, limit)
            Q = fake_quantize(clipped, bits, "channel", None, symmetric).astype(np.float64)
            err = ((Xg @ (Wg - Q).T) ** 2).sum(axis=0)  # [N]
            better = err < best_err
            best_err[better] = err[better]
            out[better, a:b] = clipped[better]
    return out


def awq_quantize(
    W: np.ndarray,
    X: np.ndarray,
    bits: int = 4,
    group_size: int | None = 128,
    symmetric: bool = False,
    clip: bool = True,
    alphas: tuple[float, ...] = ALPHA_GRID,
) -> tuple[QuantizedWeight, np.ndarray, dict]:
    """(quantized W diag(s), s [K], info): the layer computes (x / s) W_hat^T."""
    s, alpha, errors = awq_scale_search(W, X, bits, group_size, symmetric, alphas)
    Ws = np.asarray(W, dtype=np.float64) * s
    if clip:
        Ws = awq_clip(Ws, np.asarray(X, dtype=np.float64).reshape(-1, Ws.shape[1]) / s, bits,
                      group_size, symmetric)  # fmt: skip
    gran = "group" if group_size is not None and group_size < Ws.shape[1] else "channel"
    weight = quantize_weight(Ws, bits, gran, group_size, symmetric)
    return weight, s.astype(np.float32), {"alpha": alpha, "errors": errors}
