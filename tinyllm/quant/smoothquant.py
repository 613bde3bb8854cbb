"""SmoothQuant (Xiao et al., ICML 2023): move activation outliers into the weights.

Per input channel j, with a_j = max_t |x_tj| (calibration) and m_j = max_n |W_nj|:

    s_j = a_j^alpha / m_j^(1 - alpha)          (clamped >= 1e-5; alpha: migration strength)
    X_hat = X diag(s)^-1,   W_hat = W diag(s)  =>  X_hat W_hat^T = X W^T exactly

after which max|X_hat_j| = a_j^(1-alpha) m_j^(1-alpha) and max|W_hat_j| = a_j^alpha m_j^alpha
(at alpha = 0.5 both are sqrt(a_j m_j)): the activations' outlier channels shrink, the
weights' grow, and both quantize to INT8 (W8A8: per-channel weights, per-token dynamic or
per-tensor static activations). The 1/s multiply is kept in the quantized layer
(``input_scale``); the reference folds it into the preceding LayerNorm.
"""

from __future__ import annotations

import numpy as np

__all__ = ["smooth_scales", "smooth_weight"]


def smooth_scales(act_absmax: np.ndarray, W: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """s [K] = a^alpha / m^(1 - alpha) for activations' per-channel absmax a [K], W [N, K]."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"smooth_scales: alpha must be in [0, 1], got {alpha}")
    a = np.maximum(np.asarray(act_absmax, dtype=np.float64), 1e-5)
    m = np.maximum(np.abs(np.asarray(W, dtype=np.float64)).max(axis=0), 1e-5)
    return np.maximum(a**alpha / m ** (1.0 - alpha), 1e-5)


def smooth_weight(W: np.ndarray, s: np.ndarray) -> np.ndarray:
    """W diag(s): column j times s_j."""
    return np.asarray(W, dtype=np.float64) * np.asarray(s, dtype=np.float64)
