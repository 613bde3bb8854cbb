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
"""

from __future__ import annotations

import numpy as np

__all__ = ["int8_matmul", "quantize_rows_int8"]


def quantize_rows_int8(
    x: np.ndarray, per_tensor_absmax: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(codes int8 [R, K], scales float64 [R, 1]): per-row absmax, or one static absmax."""
    x = np.asarray(x, dtype=np.float64)
    if per_tensor_absmax is None:
        amax = np.abs(x).max(axis=-1, keepdims=True, initial=0.0)
    else:
        amax = np.full(x.shape[:-1] + (1,), float(per_tensor_absmax))
    s = np.where(amax > 0, amax / 127.0, 1.0)
    return np.clip(np.rint(x / s), -127, 127).astype(np.int8), s


def int8_matmul(cx: np.ndarray, sx: np.ndarray, cw: np.ndarray, sw: np.ndarray) -> np.ndarray:
    """(cx cw^T) * sx * sw^T: cx int8 [R, K], sx [R, 1], cw int8 [N, K], sw [N, 1] -> [R, N]."""
    acc = cx.astype(np.float64) @ cw.astype(np.float64).T
    return acc * sx * sw.reshape(1, -1)
