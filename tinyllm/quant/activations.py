"""Activation quantization and the integer matmuls of W8A8 schemes (LLM.int8(), SmoothQuant,
ZeroQuant).

Vector-wise absmax INT8 (bitsandbytes' ``int8_vectorwise_quant``): each row r of X [R, K]
(a token) gets s_r = max_k |x_rk| / 127 and codes c_rk = rint(x_rk / s_r) in [-127, 127];
each output row n of W [N, K] likewise. The product is computed on the codes, exactly, and
rescaled by the outer product of the scales:

    Y_rn = (sum_k cx_rk cw_nk) s_r s_n                      (int32 accumulation on a GPU)

- **token-wise dynamic** (ZeroQuant): s_r from each row at run time;
- **per-tensor static**: one s for all rows, from calibration (``x_absmax``).

Here the codes' matmul runs in float64 (exact: |sum| <= K 127^2 < 2^53).
``quantize_rows_int8`` runs on the array module of its input (NumPy or CuPy).
"""

from __future__ import annotations

import numpy as np

from tinyllm import backend

__all__ = ["int8_matmul", "quantize_rows_int8"]


def quantize_rows_int8(x, per_tensor_absmax: float | None = None) -> tuple:
    """(codes int8 [R, K], scales float64 [R, 1]): per-row absmax, or one static absmax.

    Computed in float64 on ``x``'s array module (a CuPy array stays on its device)."""
    xp = backend.get_array_module(x)
    x = xp.asarray(x, dtype=np.float64)
    if per_tensor_absmax is not None:
        amax = xp.full(x.shape[:-1] + (1,), float(per_tensor_absmax))
    elif x.shape[-1] == 0:  # no columns: scale 1 (a max over nothing is undefined)
        amax = xp.zeros(x.shape[:-1] + (1,))
    else:
        amax = xp.abs(x).max(axis=-1, keepdims=True)
    s = xp.where(amax > 0, amax / 127.0, 1.0)
    return xp.clip(xp.rint(x / s), -127, 127).astype(np.int8), s


def int8_matmul(cx: np.ndarray, sx: np.ndarray, cw: np.ndarray, sw: np.ndarray) -> np.ndarray:
    """(cx cw^T) * sx * sw^T: cx int8 [R, K], sx [R, 1], cw int8 [N, K], sw [N, 1] -> [R, N]."""
    acc = cx.astype(np.float64) @ cw.astype(np.float64).T
    return acc * sx * sw.reshape(1, -1)
